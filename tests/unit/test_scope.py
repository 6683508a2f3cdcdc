"""The permit scope schema: what it accepts, what it refuses and how it says so."""

import json

import pytest

from permits.scope import ScopeError, load_scope, scope_json_schema
from tests.factories import make_scope


def test_example_scope_loads():
    s = load_scope("examples/scope-diabetes.yaml")
    assert s.permit_id == "TOISIO-2026-1" and s.cohort.controls_per_case == 2
    assert len(s.sha256) == 64


def test_hash_is_canonical():
    a = make_scope()
    b = make_scope(registries=dict(reversed(list(make_scope().model_dump(mode="json")["registries"].items()))))
    assert a.sha256 == b.sha256
    assert make_scope(key_version=2).sha256 != a.sha256


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"registries": {"hilmo": {"variables": ["ssn"]}}}, "has no variable 'ssn'"),
        ({"registries": {"hilmo": {"variables": ["hetu"]}}}, "'hetu' is never delivered"),
        ({"registries": {"prisons": {"variables": ["x"]}}}, "unknown registry"),
        ({"registries": {"population": {"variables": ["sex"], "period": {"start": "2020-01-01",
                                                                         "end": "2021-01-01"}}}},
         "no event date"),
        ({"registries": {"hilmo": {"variables": ["main_dg"], "period": {"start": "2021-01-01",
                                                                        "end": "2020-01-01"}}}},
         "ends"),
        ({"permit_id": "my permit"}, "must look like"),
        ({"delivery": "everything"}, "delivery"),
    ],
)
def test_invalid_scopes_refused_with_a_clear_message(override, message):
    with pytest.raises(ValueError, match=message):
        make_scope(**override)


def test_variable_outside_scope_is_an_error():
    s = make_scope()
    s.check_variables_in_scope("hilmo", ["main_dg"])
    with pytest.raises(ScopeError, match="procedure .* not in permit TOISIO-2026-1's scope"):
        s.check_variables_in_scope("hilmo", ["main_dg", "procedure"])
    with pytest.raises(ScopeError, match="registry 'cancer' is not in permit"):
        s.check_variables_in_scope("cancer", ["topography"])


def test_scope_file_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("permit_id: TOISIO-2026-1\ndelivery: pseudonymised\nregistries: {hilmo: {variables: [x]}}\n")
    with pytest.raises(ScopeError, match="bad.yaml: invalid permit scope"):
        load_scope(p)


def test_json_schema_published():
    schema = scope_json_schema()
    assert schema["title"] == "PermitScope"
    assert "registries" in schema["properties"]
    json.dumps(schema)


@pytest.mark.parametrize("bands", [[], [5, 10], [0, 30, 18]])
def test_bad_age_bands_are_a_validation_error_not_a_crash(bands):
    """`age_bands: []` was an IndexError (a 500 through the API): issue 12, finding 11."""
    from pydantic import ValidationError

    from permits.scope import Generalisation

    with pytest.raises(ValidationError, match="age_bands must start at 0"):
        Generalisation(age_bands=bands)
