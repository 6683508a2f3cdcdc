"""A data request end to end: decided, extracted to the service area, statistics computed, reviewed, released."""

import json
from datetime import date

import pytest

from flows.data_request import aggregate_dir, produce_statistics
from permits.permissions import PermissionDenied
from permits.service import act, frozen_scope
from pseudonymise.pipeline import run_extraction
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
    run_extraction(scope, extracts, aggregate_dir(svc, case), svc, spark=spark)
    with pytest.raises(PermissionDenied, match="only a handler"):
        produce_statistics(svc, s["alice"], case)
    rid = produce_statistics(svc, s["hanna"], case)
    seen = A.view(svc, s["oscar"], rid)
    assert seen["requester"] == "hanna" and len(seen["files"]) == 2
    for checker in (s["oscar"], olga):
        for f in seen["files"]:
            A.vote(svc, checker, rid, f["name"], "approve")
        A.submit_review(svc, checker, rid)
    A.decide(svc, olga, rid, "approve")
    target = A.release(svc, s["oscar"], rid)
    manifest = json.loads((target / "manifest.json").read_text())
    assert [f["name"] for f in manifest["files"]] == ["table-1.csv", "table-2.csv"]
    assert "pseudonym" not in (target / "table-1.csv").read_text()
