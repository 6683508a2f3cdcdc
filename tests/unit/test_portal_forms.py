"""The portal's form reshaping and its wizard's steps (the application form, one step at a time)."""

import pytest
from starlette.datastructures import FormData

from permits.application import ApplicationForm
from toisio.app.portal.forms import AMENDMENT_FIELDS, STEPS, application_data, step_of


def test_every_field_of_the_application_is_on_exactly_one_step_or_the_amendment_page():
    placed = [f for _title, fields in STEPS.values() for f in fields]
    assert len(placed) == len(set(placed))
    assert set(placed) | set(AMENDMENT_FIELDS) == set(ApplicationForm.model_fields)
    assert list(STEPS) == list(range(1, len(STEPS) + 1))


@pytest.mark.parametrize(("path", "step"), [
    ("title", 1), ("(form)", 1), ("nonsense_field", 1), ("applicant.email", 2), ("billing.address", 2),
    ("extraction.registries.hilmo.variables", 3), ("tabulation_plan.0.registry", 3),
    ("processors.0.user_id", 4), ("requested_validity.end", 4), ("research_plan", 5),
    ("ethics_statement.sha256", 5),
])
def test_a_problem_is_shown_on_the_step_of_its_field(path, step):
    assert step_of(path) == step


def test_amendment_fields_are_reshaped():
    data = application_data(FormData([
        ("kind", "amendment"), ("permit_id", "TOISIO-2026-1"),
        ("change.add_users", "carol, Carol Analyst, Uni, 2026-02-01\n\n"),
        ("change.remove_users", "bob, dave"), ("change.new_valid_until", "2029-01-01"), ("csrf_token", "x")]))
    assert data == {"kind": "amendment", "permit_id": "TOISIO-2026-1", "change": {
        "add_users": [{"user_id": "carol", "name": "Carol Analyst", "organisation": "Uni",
                       "confidentiality_undertaking_signed": "2026-02-01"}],
        "remove_users": ["bob", "dave"], "new_valid_until": "2029-01-01"}}


def test_tabulation_lines_are_reshaped_with_value_and_differential_privacy():
    from permits.application import Tabulation

    data = application_data(FormData([("tabulation_plan",
                                       "hilmo; sex; ; count; ; dp 0.5\npopulation; sex, age_band; ; mean; income\n")]))
    assert data["tabulation_plan"] == [
        {"registry": "hilmo", "rows": ["sex"], "statistic": "count", "privacy": "differential_privacy",
         "epsilon": "0.5"},
        {"registry": "population", "rows": ["sex", "age_band"], "statistic": "mean", "value": "income"}]
    assert Tabulation.model_validate(data["tabulation_plan"][0]).epsilon == 0.5
