"""Application rules, Finnish working-day deadlines and the fee schedule."""

from datetime import date
from decimal import Decimal

import pytest

from permits import deadlines
from permits.fees import compute_fee, version_on
from permits.rules import RULES, RuleViolation, check_form, violations
from tests.factories import make_form


def test_valid_form_passes():
    check_form(make_form())


def test_every_rule_has_a_test_below():
    tested = {"development_aggregate_only", "pseudonymised_needs_justification", "ethics_statement_required",
              "processors_need_undertakings", "permit_names_processors", "data_request_needs_tabulation",
              "data_request_no_processors", "amendment_validity_or_users_only"}
    assert {r.code for r in RULES} == tested


def _codes(form):
    return {v.code for v in violations(form)}


def test_development_and_innovation_gets_aggregates_only():
    with pytest.raises(RuleViolation, match="development and innovation gets aggregate statistics only"):
        check_form(make_form(purpose="development_and_innovation"))
    request = make_form(kind="data_request", purpose="development_and_innovation", processors=[],
                        tabulation_plan=[{"registry": "hilmo", "rows": ["main_dg"]}])
    assert not violations(request)


def test_pseudonymised_needs_justification():
    assert "pseudonymised_needs_justification" in _codes(make_form(pseudonymised_data_justification=""))


def test_ethics_statement_where_required():
    assert "ethics_statement_required" in _codes(make_form(ethics_statement_required=True))
    ok = make_form(ethics_statement_required=True, ethics_statement={"filename": "e.pdf", "sha256": "b" * 64})
    assert "ethics_statement_required" not in _codes(ok)


def test_processors_need_undertakings():
    f = make_form(processors=[{"name": "Eve", "user_id": "eve", "organisation": "X"}])
    assert "processors_need_undertakings" in _codes(f)
    assert "permit_names_processors" in _codes(make_form(processors=[]))


def test_data_request_rules():
    f = make_form(kind="data_request", processors=[], tabulation_plan=[])
    assert "data_request_needs_tabulation" in _codes(f)
    assert "data_request_no_processors" in _codes(make_form(kind="data_request",
                                                            tabulation_plan=[{"registry": "hilmo",
                                                                              "rows": ["main_dg"]}]))


def test_amendment_cannot_change_data_or_purpose():
    base = {"kind": "amendment", "purpose": None, "research_plan": None, "extraction": None,
            "requested_validity": None, "permit_id": "TOISIO-2026-1"}
    ok = make_form(**base, change={"new_valid_until": "2029-12-31"})
    assert not violations(ok)
    bad = make_form(**{**base, "purpose": "statistics"}, change={"new_valid_until": "2029-12-31"})
    with pytest.raises(RuleViolation, match="needs a new permit application"):
        check_form(bad)
    assert "amendment_validity_or_users_only" in _codes(make_form(**base, change={}))


def test_business_id_checksum():
    with pytest.raises(ValueError, match="business ID .* is not valid"):
        make_form(organisation={"name": "X", "business_id": "0245896-4"})


@pytest.mark.parametrize(
    ("start", "days", "expected"),
    [
        (date(2026, 12, 4), 1, date(2026, 12, 7)),     # Friday -> Monday (6.12 Independence Day is a Sunday)
        (date(2027, 12, 3), 1, date(2027, 12, 7)),     # Friday -> Tuesday: 6.12.2027 is a Monday holiday
        (date(2026, 12, 23), 3, date(2026, 12, 30)),   # over Christmas Eve, Christmas and Boxing Day
        (date(2026, 12, 30), 2, date(2027, 1, 4)),     # over New Year's Day into the next year
        (date(2027, 3, 24), 2, date(2027, 3, 30)),     # Good Friday 26.3 and Easter Monday 29.3.2027
        (date(2026, 11, 2), 15, date(2026, 11, 23)),   # a plain 15 working days
    ],
)
def test_working_days_follow_finnish_holidays(start, days, expected):
    assert deadlines.add_working_days(start, days) == expected


def test_decision_deadline_and_extension():
    assert deadlines.decision_due(date(2026, 11, 30)) == date(2027, 2, 28)
    assert deadlines.decision_due(date(2026, 11, 30), 3) == date(2027, 5, 30)
    with pytest.raises(ValueError):
        deadlines.decision_due(date(2026, 11, 30), 4)
    assert deadlines.status(date(2026, 1, 10), date(2026, 1, 11)) == "overdue"
    assert deadlines.status(date(2026, 1, 10), date(2026, 1, 1)) == "near"
    assert deadlines.status(date(2026, 3, 10), date(2026, 1, 1)) == "ok"


def test_fees_by_schedule_version():
    old = compute_fee("data_permit", "standard", date(2022, 6, 1))
    new = compute_fee("data_permit", "thesis", date(2026, 6, 1), work_hours=2, controller_costs=Decimal("400"))
    assert old.total == Decimal(1000) and "1500/2019" in old.schedule_version
    assert new.application_fee == Decimal(250) and new.hourly_work == Decimal("230.00")
    assert new.total == Decimal("880.00")
    assert compute_fee("amendment", "standard", date(2026, 6, 1)).total == Decimal(350)
    with pytest.raises(ValueError, match="no fee schedule"):
        version_on(date(2019, 1, 1))
