"""The DP query service's socket: a notebook's ``toisio_dp`` asks the service, never computes; the answer carries
a receipt the airlock verifies; refusals come back as errors with a code, never a traceback."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from secure_env.airlock import outputs as A
from secure_env.airlock.dp import ledger, set_budget
from secure_env.airlock.dp_gateway import MAX_REQUEST, Gateway, handle
from secure_env.workspace import dp_client as toisio_dp
from tests.factories import make_case, make_staff
from toisio.identity import Actor


@pytest.fixture
def gateway(svc, tmp_path, monkeypatch):
    staff = make_staff(svc)
    permit = make_case(svc, staff).case_id
    data = svc.settings.home / "workspaces" / permit / "data"
    (data / "persons").mkdir(parents=True)
    rng = np.random.default_rng(3)
    pd.DataFrame({"pseudonym": [f"p{i}" for i in range(800)], "age": rng.integers(18, 95, 800),
                  "county": rng.choice(["Helsinki", "Lappi"], 800)}).to_parquet(data / "persons" / "p.parquet")
    set_budget(svc, staff["dora"], permit, 2.0, 0.0)
    sock = tmp_path / "dp.sock"
    gw = Gateway(svc, permit, sock).start()
    monkeypatch.setenv("TOISIO_DP_SOCKET", str(sock))
    yield {"svc": svc, "permit": permit, "staff": staff, "sock": sock, "root": tmp_path}
    gw.close()


def test_a_notebook_query_is_answered_charged_and_releasable_as_dp(gateway):
    g = gateway
    assert oct(os.stat(g["sock"]).st_mode & 0o777) == "0o600"
    a = toisio_dp.mean("persons", "age", epsilon=0.5, bounds=(0, 110))
    assert 40 < a.result < 75 and a.epsilon == 0.5
    assert toisio_dp.budget()["remaining_epsilon"] == pytest.approx(1.5)
    (entry,) = ledger(g["svc"], Actor("bob"), g["permit"])
    assert entry.actor == f"workspace:{g['permit']}"
    path = a.save(g["root"] / "dp_mean_age.json")
    rid = A.create_request(g["svc"], Actor("bob"), g["permit"])
    A.add_file(g["svc"], Actor("bob"), rid, path, {"description": "mean age", "method": "toisio_dp.mean"})
    f = A.view(g["svc"], g["staff"]["oscar"], rid)["files"][0]
    assert f["check_report"]["dp_verified"] is True


def test_refusals_come_back_with_their_code(gateway):
    with pytest.raises(toisio_dp.DpQueryError) as e:
        toisio_dp.mean("persons", "age", epsilon=0.5, bounds=None)
    assert e.value.code == "bad_dp_query" and "bounds" in str(e.value)
    with pytest.raises(toisio_dp.DpQueryError) as e:
        toisio_dp.count("persons", epsilon=5.0)
    assert e.value.code == "budget_exceeded"
    with pytest.raises(toisio_dp.DpQueryError) as e:
        toisio_dp.crosstab("hilmo", "county", epsilon=0.1)
    assert e.value.code == "bad_dp_query" and "datasets: persons" in str(e.value)
    assert ledger(gateway["svc"], Actor("bob"), gateway["permit"]) == []


def test_malformed_and_oversized_requests(gateway):
    svc, permit = gateway["svc"], gateway["permit"]
    assert handle(svc, permit, b"not json")["code"] == "bad_request"
    assert handle(svc, permit, b'{"op": "rows"}')["code"] == "bad_request"
    assert handle(svc, permit, b"x" * (MAX_REQUEST + 1))["code"] == "too_large"
    data = json.dumps({"op": "query", "query": {"statistic": "count", "dataset": "persons", "epsilon": 0.1,
                                                "data": [1, 2, 3]}}).encode()
    assert handle(svc, permit, data)["code"] == "bad_dp_query"


def test_without_the_service_the_client_says_so(monkeypatch):
    monkeypatch.delenv("TOISIO_DP_SOCKET", raising=False)
    with pytest.raises(toisio_dp.DpQueryError) as e:
        toisio_dp.count("persons", epsilon=0.1)
    assert e.value.code == "no_dp_service"
    monkeypatch.setenv("TOISIO_DP_SOCKET", "/nonexistent/dp.sock")
    with pytest.raises(toisio_dp.DpQueryError, match="does not answer"):
        toisio_dp.count("persons", epsilon=0.1)
