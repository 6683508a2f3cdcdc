"""A data request end to end: decided, extracted to the service area, statistics computed, reviewed, released."""

import json
from datetime import date

import pytest

from flows.data_request import aggregate_dir, produce_statistics
from permits.permissions import PermissionDenied
from permits.service import act, frozen_scope
from secure_env.airlock import outputs as A
from tests.factories import make_form, make_staff

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_data_request_statistics_released_after_two_reviews(spark, extracts, tmp_path):
    from permits.service import submit_form
    from tests.factories import make_service, make_user

    svc = make_service(tmp_path / "home")
    s = make_staff(svc)
    olga = make_user(svc, "olga", ("output_checker",))
    form = make_form(kind="data_request", processors=[], pseudonymised_data_justification="",
                     tabulation_plan=[{"registry": "hilmo", "rows": ["main_dg"], "statistic": "count"},
                                      {"registry": "population", "rows": ["sex"], "statistic": "count"}])
    case = submit_form(svc, s["alice"], form).case_id
    act(svc, s["hanna"], case, "confirm_complete")
    act(svc, s["hanna"], case, "request_estimates")
    for reg in ("hilmo", "population"):
        act(svc, s["thl1"], case, "record_estimate", registry=reg, cost_eur=10, working_days=5)
    act(svc, s["hanna"], case, "send_estimate")
    act(svc, s["alice"], case, "accept")
    act(svc, s["hanna"], case, "present")
    act(svc, s["dora"], case, "approve", valid_until=date(2029, 1, 1))
    scope = frozen_scope(svc, case)
    assert scope.delivery == "aggregate"
    with pytest.raises(PermissionDenied, match="only a handler"):
        produce_statistics(svc, s["alice"], case)
    # the service takes it from the decision: extraction to its own area, the statistics, activation
    from flows.delivery import deliver
    from secure_env.workspace import provision
    from toisio.identity import SYSTEM

    report = deliver(svc, case, in_dir=extracts, spark=spark)
    assert report.state == "active" and any("statistics produced" in step for step in report.steps)
    assert (aggregate_dir(svc, case) / "manifest.json").exists() and not provision.paths(svc, case).base.exists()
    [request] = A.requests_for_permit(svc, SYSTEM, case)
    rid = request["request_id"]
    seen = A.view(svc, s["oscar"], rid)
    assert seen["requester"] == "system" and len(seen["files"]) == 2
    for checker in (s["oscar"], olga):
        for f in seen["files"]:
            A.vote(svc, checker, rid, f["name"], "approve")
        A.submit_review(svc, checker, rid)
    A.decide(svc, olga, rid, "approve")
    target = A.release(svc, s["oscar"], rid)
    manifest = json.loads((target / "manifest.json").read_text())
    assert [f["name"] for f in manifest["files"]] == ["table-1.csv", "table-2.csv"]
    assert "pseudonym" not in (target / "table-1.csv").read_text()


DATA_REQUEST = dict(kind="data_request", processors=[], pseudonymised_data_justification="",
                    tabulation_plan=[{"registry": "population", "rows": ["sex"], "statistic": "count"}])


def _small_aggregate_delivery(directory):
    """A minimised persons table as a data request's extraction delivers it (without running Spark)."""
    import pandas as pd

    (directory / "persons").mkdir(parents=True)
    pd.DataFrame({"pseudonym": [f"p{i}" for i in range(60)], "sex": [1, 2] * 30}).to_parquet(
        directory / "persons" / "part-00000.parquet")
    (directory / "manifest.json").write_text("{}")


def test_statistics_through_the_api_and_the_portal(tmp_path):
    """A handler produces the statistics from the portal (refused before the delivery, with a clear error), the
    API lists them for the applicant, checkers review, and the applicant downloads the released table."""
    import contextlib
    import re

    import httpx

    from tests.factories import (
        PortalUser,
        make_case,
        make_service,
        make_token,
        make_user,
        portal_login,
        serve_in_thread,
        who,
    )
    from toisio.app.api import create_app

    svc = make_service(tmp_path / "home")
    s = make_staff(svc)
    make_user(svc, "olga", ("output_checker",))
    case = make_case(svc, s, state="active", **DATA_REQUEST).case_id
    hanna = PortalUser(svc, "hanna2", ("handler",))
    tokens = {"alice": make_token(svc, "alice")}
    with serve_in_thread(create_app(svc)) as root, contextlib.ExitStack() as stack:
        web = httpx.Client(base_url=root, timeout=60, headers={"Accept-Language": "en"})
        stack.enter_context(web)
        portal_login(web, hanna)  # a second handler, with a local account
        page = web.get(f"/cases/{case}").text
        assert "Produce the statistics" in page
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        r = web.post(f"/cases/{case}/statistics", data={"csrf_token": token})
        assert r.status_code == 409 and "not_delivered" in r.text and "run its extraction first" in r.text
        _small_aggregate_delivery(aggregate_dir(svc, case))  # what the extraction leaves in the service's area
        r = web.post(f"/cases/{case}/statistics", data={"csrf_token": token})
        assert r.status_code == 303
        rid = r.headers["location"].rsplit("/", 1)[1]
        alice = stack.enter_context(httpx.Client(base_url=root, timeout=60,
                                                 headers={"Authorization": f"Bearer {tokens['alice']}"}))
        listed = alice.get(f"/api/v1/permits/{case}/statistics").json()
        assert [(x["request_id"], x["state"], x["files"]) for x in listed] == [(rid, "submitted", ["table-1.csv"])]
        assert alice.post(f"/api/v1/permits/{case}/statistics").status_code == 403  # only a handler or the service
        for checker in ("oscar", "olga"):
            A.vote(svc, who(svc, checker), rid, "table-1.csv", "approve")
            A.submit_review(svc, who(svc, checker), rid)
        A.decide(svc, who(svc, "olga"), rid, "approve")
        A.release(svc, who(svc, "oscar"), rid)
        got = alice.get(f"/api/v1/outputs/{rid}/released/table-1.csv")
        assert got.status_code == 200 and got.text.startswith("sex,")
        assert "pseudonym" not in got.text
