"""DP computed by the service: queries checked before they cost, charged before they run, answered with a receipt
the airlock verifies; a forged, edited or replayed receipt gets no DP policy."""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from secure_env.airlock import dp_service as D
from secure_env.airlock import outputs as A
from secure_env.airlock.dp import BudgetExceeded, budget, ledger, set_budget
from tests.factories import make_case, make_staff, make_user
from toisio.identity import SYSTEM, Actor


@pytest.fixture
def world(svc, tmp_path):
    staff = make_staff(svc)
    permit = make_case(svc, staff).case_id  # bob is the named analyst
    other = make_case(svc, staff).case_id
    data = tmp_path / "data"
    rng = np.random.default_rng(7)
    n = 1500
    persons = pd.DataFrame({"pseudonym": [f"p{i}" for i in range(n)], "age": rng.integers(18, 95, n),
                            "sex": rng.choice(["1", "2"], n), "county": rng.choice(["Helsinki", "Lappi"], n)})
    (data / "persons").mkdir(parents=True)
    persons.to_parquet(data / "persons" / "part-0.parquet")
    for p in (permit, other):
        set_budget(svc, staff["dora"], p, 3.0, 0.0)
    return {"svc": svc, "permit": permit, "other": other, "data": data, "staff": staff, "bob": Actor("bob"),
            "persons": persons, "olga": make_user(svc, "olga", ("output_checker",))}


def _ask(w, permit=None, **q):
    query = D.DpQuery(**{"dataset": "persons", "epsilon": 0.5, **q})
    return D.answer(w["svc"], w["bob"], permit or w["permit"], query, data_dir=w["data"], random_state=1)


def test_an_answer_is_charged_signed_and_recorded_on_the_ledger(world):
    w = world
    ans = _ask(w, statistic="mean", column="age", bounds=(0, 110))
    assert abs(ans.result - w["persons"].age.mean()) < 3
    entries = ledger(w["svc"], w["bob"], w["permit"])
    assert len(entries) == 1 and json.loads(entries[0].query)["statistic"] == "mean"
    v = D.verify(w["svc"], w["permit"], ans.model_dump_json().encode())
    assert v.verified and v.ledger_id == ans.ledger_id and v.epsilon == 0.5


@pytest.mark.parametrize("q", [
    {"statistic": "count"}, {"statistic": "sum", "column": "age", "bounds": (0, 110)},
    {"statistic": "var", "column": "age", "bounds": (0, 110)},
    {"statistic": "quantile", "column": "age", "bounds": (0, 110), "q": 0.5},
    {"statistic": "histogram", "column": "age", "bounds": (0, 110), "bins": 11},
    {"statistic": "crosstab", "rows": "county", "columns": "sex"},
    {"statistic": "count", "where": {"county": "Lappi"}},
    {"statistic": "linear_regression", "column": "age", "bounds": (0, 110), "features": ("sex",),
     "bounds_features": ((1, 2),)},
    {"statistic": "logistic_regression", "column": "sex", "features": ("age",), "data_norm": 110.0},
])
def test_every_statistic_is_answered_by_the_service(world, q):
    w = world
    ans = _ask(w, **q)
    assert ans.result is not None and D.verify(w["svc"], w["permit"], ans.model_dump_json().encode()).verified
    if q["statistic"] == "crosstab":
        assert ans.result["rows"] == ["Helsinki", "Lappi"] and len(ans.result["counts"]) == 2
    if q.get("where"):
        assert abs(ans.result - int((w["persons"].county == "Lappi").sum())) < 40


@pytest.mark.parametrize("q, match", [
    ({"statistic": "mean", "column": "age"}, "needs bounds"),
    ({"statistic": "sum", "column": "age", "bounds": (5, 5)}, "lower < upper"),
    ({"statistic": "quantile", "column": "age", "bounds": (0, 1)}, "needs q"),
    ({"statistic": "linear_regression", "column": "age", "bounds": (0, 1), "features": ("sex",)},
     "bounds_features"),
    ({"statistic": "count", "where": {"a;drop": 1}}, "letters, digits"),
    ({"statistic": "count", "epsilon": 0}, "greater than 0"),
    ({"statistic": "count", "epsilon": 50}, "less than or equal to 10"),
    ({"statistic": "count", "rows_of_data": [1, 2]}, "Extra inputs"),
])
def test_a_malformed_query_is_refused_by_its_model(q, match):
    with pytest.raises(ValidationError, match=match):
        D.DpQuery(**{"dataset": "persons", "epsilon": 0.5, **q})


def test_an_unknown_dataset_or_column_costs_nothing(world):
    w = world
    with pytest.raises(D.BadQuery, match="datasets: persons"):
        _ask(w, statistic="count", dataset="hilmo")
    with pytest.raises(D.BadQuery, match="no column 'income'.*columns: pseudonym, age"):
        _ask(w, statistic="mean", column="income", bounds=(0, 1))
    assert budget(w["svc"], w["bob"], w["permit"]).spent_epsilon == 0


def test_only_the_named_analysts_or_the_service_ask(world):
    from toisio.authz import PermissionDenied

    with pytest.raises(PermissionDenied):
        D.answer(world["svc"], Actor("mallory"), world["permit"], D.DpQuery(statistic="count", dataset="persons",
                                                                            epsilon=0.1), data_dir=world["data"])
    assert D.answer(world["svc"], SYSTEM, world["permit"], D.DpQuery(statistic="count", dataset="persons",
                                                                     epsilon=0.1), data_dir=world["data"])


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(min_value=0.05, max_value=1.5), min_size=1, max_size=8))
def test_a_query_that_would_exceed_the_budget_is_refused_before_it_runs(world, epsilons):
    w = world
    set_budget(w["svc"], w["staff"]["dora"], w["permit"], 3.0, 0.0)
    before = budget(w["svc"], w["bob"], w["permit"]).spent_epsilon
    spent = before
    for eps in epsilons:
        fits = spent + eps <= 3.0
        if fits:
            _ask(w, statistic="count", epsilon=eps)
            spent += eps
        else:
            n = len(ledger(w["svc"], w["bob"], w["permit"]))
            with pytest.raises(BudgetExceeded):
                _ask(w, statistic="count", epsilon=eps)
            assert len(ledger(w["svc"], w["bob"], w["permit"])) == n  # nothing charged, nothing computed
        assert budget(w["svc"], w["bob"], w["permit"]).spent_epsilon == pytest.approx(spent)
        assert spent <= 3.0


def _tamper(ans: D.DpAnswer, **changes) -> bytes:
    doc = json.loads(ans.model_dump_json())
    doc.update(changes)
    return json.dumps(doc).encode()


def test_forged_edited_and_replayed_receipts_are_refused(world):
    w = world
    ans = _ask(w, statistic="count")
    svc = w["svc"]
    assert not D.verify(svc, w["permit"], _tamper(ans, result=ans.result + 1)).verified  # edited result
    assert "forged" in D.verify(svc, w["permit"], _tamper(ans, receipt="ab" * 32)).reason
    replay = D.verify(svc, w["other"], ans.model_dump_json().encode())  # another permit's file
    assert not replay.verified and "is for permit" in replay.reason
    moved = D.verify(svc, w["other"], _tamper(ans, permit_id=w["other"]))  # re-labelled for the other permit
    assert not moved.verified
    assert not D.verify(svc, w["permit"], b"mean age 54.2").verified
    assert not D.verify(svc, w["permit"], b'{"format": "toisio-dp-answer/1"}').verified
    # an answer signed with another service's key
    from dataclasses import replace

    from toisio.keystore import Secret

    other_key = replace(svc, settings=svc.settings)
    object.__setattr__(other_key, "receipt_key", Secret("receipt", b"k" * 32))
    forged = D.DpAnswer.model_validate(json.loads(ans.model_dump_json()))
    forged = forged.model_copy(update={"result": 1, "receipt": D._sign(other_key, forged.model_copy(
        update={"result": 1}).signed_part())})
    assert not D.verify(svc, w["permit"], forged.model_dump_json().encode()).verified


def _write(w, name: str, data: bytes):
    path = w["data"].parent / name
    path.write_bytes(data)
    return path


def _dp_request(w, data: bytes, name="dp_count.json", **ctx):
    rid = A.create_request(w["svc"], w["bob"], w["permit"])
    A.add_file(w["svc"], w["bob"], rid, _write(w, name, data),
               {"description": "DP count", "method": "toisio_dp.count", **ctx})
    return rid


def test_only_a_verified_answer_gets_the_dp_policy(world):
    w = world
    svc = w["svc"]
    ans = _ask(w, statistic="count")
    rid = _dp_request(w, ans.model_dump_json().encode())
    f = A.view(svc, w["staff"]["oscar"], rid)["files"][0]
    assert f["check_status"] == "pass" and f["check_report"]["dp_verified"]
    A.submit(svc, w["bob"], rid)
    A.vote(svc, w["staff"]["oscar"], rid, "dp_count.json", "approve")
    A.submit_review(svc, w["staff"]["oscar"], rid)
    assert A.decide(svc, w["staff"]["oscar"], rid, "approve", policy=A.Policy(dp_approvals_needed=1)).value == \
        "approved"
    assert A.release(svc, w["olga"], rid).exists()


def test_a_kernel_written_dp_file_without_a_receipt_gets_no_dp_policy(world):
    w = world
    rid = _dp_request(w, b"mean age (epsilon 1.0, bounds 0-100): 54.2\n", name="dp_mean.txt",
                      differentially_private=True)
    f = A.view(w["svc"], w["staff"]["oscar"], rid)["files"][0]
    assert f["check_status"] == "review" and "not an answer of the service" in f["check_report"]["dp_claim"]
    A.submit(w["svc"], w["bob"], rid)
    A.vote(w["svc"], w["staff"]["oscar"], rid, "dp_mean.txt", "approve")
    A.submit_review(w["svc"], w["staff"]["oscar"], rid)
    with pytest.raises(A.AirlockError) as e:
        A.decide(w["svc"], w["staff"]["oscar"], rid, "approve", policy=A.Policy(dp_approvals_needed=1))
    assert e.value.code == "not_approved"


def test_an_edited_answer_fails_and_cannot_be_approved(world):
    w = world
    ans = _ask(w, statistic="count")
    rid = _dp_request(w, _tamper(ans, result=ans.result - 3))
    f = A.view(w["svc"], w["staff"]["oscar"], rid)["files"][0]
    assert f["check_status"] == "fail" and "DP receipt refused" in f["check_report"]["table_findings"][0]
    A.submit(w["svc"], w["bob"], rid)
    with pytest.raises(A.AirlockError) as e:
        A.vote(w["svc"], w["staff"]["oscar"], rid, "dp_count.json", "approve", "fine")
    assert e.value.code == "exception_missing"


def test_a_receipt_whose_ledger_entry_changed_is_refused_at_release(world):
    from sqlalchemy import update

    from secure_env.airlock.models import DpSpendRow

    w = world
    svc = w["svc"]
    ans = _ask(w, statistic="count")
    rid = _dp_request(w, ans.model_dump_json().encode())
    A.submit(svc, w["bob"], rid)
    for c in (w["staff"]["oscar"], w["olga"]):
        A.vote(svc, c, rid, "dp_count.json", "approve")
        A.submit_review(svc, c, rid)
    A.decide(svc, w["staff"]["oscar"], rid, "approve")
    with svc.engine.begin() as conn:
        conn.execute(update(DpSpendRow).where(DpSpendRow.id == ans.ledger_id).values(receipt="0" * 64))
    with pytest.raises(A.AirlockError) as e:
        A.release(svc, w["olga"], rid)
    assert e.value.code == "dp_unverified"
