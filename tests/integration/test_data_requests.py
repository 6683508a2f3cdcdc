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


def _active_data_request(svc, s, plan, estimates, extraction=None) -> str:
    """A data request with this tabulation plan, taken through estimates and the decision to active (its
    extraction recorded as delivered; the test writes the delivery itself)."""
    from permits.service import submit_form

    form = {**DATA_REQUEST, "tabulation_plan": plan, **({"extraction": extraction} if extraction else {})}
    case = submit_form(svc, s["alice"], make_form(**form)).case_id
    act(svc, s["hanna"], case, "confirm_complete")
    act(svc, s["hanna"], case, "request_estimates")
    for who_, reg in estimates:
        act(svc, s[who_], case, "record_estimate", registry=reg, cost_eur=10, working_days=5)
    for who_, action in (("hanna", "send_estimate"), ("alice", "accept"), ("hanna", "present")):
        act(svc, s[who_], case, action)
    act(svc, s["dora"], case, "approve", valid_until=date(2029, 1, 1))
    for action in ("start_extraction", "mark_delivered", "activate"):
        act(svc, s["hanna"], case, action, **({"manifest_sha256": "f" * 64} if action == "mark_delivered" else {}))
    return case


def test_a_tabulation_plan_of_rates_periods_quantiles_and_filters_is_produced_checked_and_verified(tmp_path):
    """The statisticians' tables: a rate per 1,000 of the population, counts by year, a median of a value, all
    for a subset; each checked with the same rules, the tables with a specification verified by the airlock."""
    import numpy as np
    import pandas as pd

    from tests.factories import make_service

    svc = make_service(tmp_path / "home")
    s = make_staff(svc)
    plan = [{"registry": "hilmo", "rows": ["sex"], "statistic": "rate", "per": 1000},
            {"registry": "hilmo", "rows": ["sex"], "period": "year", "date": "admission_date"},
            {"registry": "kela_purchases", "rows": ["sex"], "statistic": "median", "value": "ddd",
             "where": {"atc": "A10BA02"}}]
    extraction = {"target_group": "persons in Hilmo and Kela purchases", "registries": {
        "population": {"variables": ["sex", "birth_date"]},
        "hilmo": {"variables": ["admission_date", "main_dg"], "period": {"start": "2015-01-01", "end": "2022-12-31"}},
        "kela_purchases": {"variables": ["purchase_date", "atc", "ddd"],
                           "period": {"start": "2015-01-01", "end": "2022-12-31"}}}}
    case = _active_data_request(svc, s, plan, (("thl1", "hilmo"), ("thl1", "population"),
                                               ("kela1", "kela_purchases")), extraction=extraction)
    delivery = aggregate_dir(svc, case)
    rng = np.random.default_rng(6)
    n = 2000
    (delivery / "persons").mkdir(parents=True)
    pd.DataFrame({"pseudonym": [f"p{i}" for i in range(n)], "sex": rng.choice([1, 2], n)}).to_parquet(
        delivery / "persons" / "part-0.parquet")
    m = 900
    (delivery / "hilmo").mkdir()
    pd.DataFrame({"pseudonym": [f"p{i}" for i in rng.integers(0, n, m)],
                  "admission_date": pd.to_datetime("2019-01-01") + pd.to_timedelta(rng.integers(0, 3 * 365, m), "D"),
                  "main_dg": rng.choice(["E11", "I21"], m)}).to_parquet(delivery / "hilmo" / "part-0.parquet")
    (delivery / "kela_purchases").mkdir()
    pd.DataFrame({"pseudonym": [f"p{i}" for i in rng.integers(0, n, m)], "atc": rng.choice(["A10BA02", "C10AA"], m),
                  "ddd": rng.gamma(3, 30, m).round(1)}).to_parquet(delivery / "kela_purchases" / "part-0.parquet")
    (delivery / "manifest.json").write_text("{}")
    rid = produce_statistics(svc, s["hanna"], case)
    files = {f["name"]: f for f in A.view(svc, s["oscar"], rid)["files"]}
    rate = pd.read_csv(files["table-1.csv"] and svc.settings.home / "statistics" / case / "table-1.csv",
                       index_col=0)
    assert 250 < rate.iloc[0, 0] < 450  # about 900 admissions' persons of 2,000, per 1,000 and by sex
    assert files["table-1.csv"]["check_report"]["verified"] is False  # a rate: checked, then reviewed by hand
    by_year = pd.read_csv(svc.settings.home / "statistics" / case / "table-2.csv", index_col=0)
    assert list(by_year.columns) == ["2019", "2020", "2021"]
    for name in ("table-2.csv", "table-3.csv"):
        assert files[name]["check_report"]["verified"] is True, files[name]["check_report"]
    assert files["table-3.csv"]["context"]["spec"]["where"] == {"atc": "A10BA02"}


def test_a_count_with_differential_privacy_is_asked_of_the_dp_service_and_verified_by_the_airlock(tmp_path):
    """A data request's table with ``privacy: differential_privacy`` is computed by the same DP query service a
    workspace uses, by the service itself, charged to the permit's budget (set by the decider), and the airlock
    verifies its receipt; a plan that would exceed the budget is refused before anything is computed."""
    import pandas as pd

    from secure_env.airlock import dp
    from tests.factories import make_service

    svc = make_service(tmp_path / "home")
    s = make_staff(svc)
    plan = [{"registry": "population", "rows": ["sex"], "privacy": "differential_privacy", "epsilon": 0.5},
            {"registry": "population", "rows": ["sex"]}]
    case = _active_data_request(svc, s, plan, (("thl1", "hilmo"), ("thl1", "population")))
    delivery = aggregate_dir(svc, case)
    (delivery / "persons").mkdir(parents=True)
    pd.DataFrame({"pseudonym": [f"p{i}" for i in range(400)], "sex": [1] * 250 + [2] * 150}).to_parquet(
        delivery / "persons" / "part-0.parquet")
    (delivery / "manifest.json").write_text("{}")
    with pytest.raises(Exception, match="budget"):  # no budget granted yet: nothing is computed
        produce_statistics(svc, s["hanna"], case)
    dp.set_budget(svc, s["dora"], case, 0.8, 0.0)
    rid = produce_statistics(svc, s["hanna"], case)
    files = {f["name"]: f for f in A.view(svc, s["oscar"], rid)["files"]}
    assert set(files) == {"table-1.json", "table-2.csv"}
    assert files["table-1.json"]["check_report"]["dp_verified"] is True
    answer = json.loads((svc.settings.home / "statistics" / case / "table-1.json").read_text())
    assert answer["query"]["statistic"] == "crosstab" and answer["query"]["rows"] == "sex"
    counts = dict(zip(answer["result"]["rows"], (r[0] for r in answer["result"]["counts"]), strict=True))
    assert abs(counts["1"] - 250) < 40 and abs(counts["2"] - 150) < 40  # noisy, near the truth
    assert dp.budget(svc, s["dora"], case).spent_epsilon == pytest.approx(0.5)
    with pytest.raises(Exception, match=r"crosstab of sex in persons\) needs epsilon 0.5.* budget has epsilon 0.3"):
        produce_statistics(svc, s["hanna"], case)
    assert dp.budget(svc, s["dora"], case).spent_epsilon == pytest.approx(0.5)


@pytest.mark.parametrize("tab, message", [
    ({"registry": "hilmo", "rows": ["sex"], "statistic": "mean"}, "needs value"),
    ({"registry": "hilmo", "rows": ["sex"], "statistic": "count", "value": "x"}, "takes no value"),
    ({"registry": "hilmo", "rows": ["sex"], "period": "year"}, "period and date go together"),
    ({"registry": "population", "rows": ["sex"], "statistic": "rate"}, "choose a registry other than population"),
    ({"registry": "hilmo", "rows": ["sex"], "statistic": "max", "value": "x"}, "Input should be"),
    ({"registry": "hilmo", "rows": ["sex"], "columns": ["sex"]}, "rows or the columns once"),
    ({"registry": "hilmo", "rows": ["sex"], "per": 100}, "per applies to a rate only"),
    ({"registry": "hilmo", "rows": ["sex"], "privacy": "differential_privacy"}, "needs epsilon"),
    ({"registry": "hilmo", "rows": ["sex"], "epsilon": 1.0}, "epsilon applies to privacy: differential_privacy"),
    ({"registry": "hilmo", "rows": ["sex"], "statistic": "mean", "value": "x", "privacy": "differential_privacy",
      "epsilon": 1.0}, "counts of persons by one row variable"),
    ({"registry": "hilmo", "rows": ["sex", "main_dg"], "privacy": "differential_privacy", "epsilon": 1.0},
     "counts of persons by one row variable"),
    ({"registry": "hilmo", "rows": ["sex"], "privacy": "differential_privacy", "epsilon": 11}, "less than or equal"),
])
def test_a_tabulation_plan_is_validated_at_submission(tab, message):
    from pydantic import ValidationError

    from permits.application import Tabulation

    with pytest.raises(ValidationError, match=message):
        Tabulation.model_validate(tab)
