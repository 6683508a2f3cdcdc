"""Validation without submitting: every problem at once, with paths, expected formats and "did you mean"."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from permits.validation import validate_data, validate_document

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "application-diabetes.yaml"


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_the_example_application_is_valid_as_yaml_and_as_json():
    assert validate_document(EXAMPLE.read_text()).ok
    assert validate_document(json.dumps(_example(), default=str)).ok


def test_every_field_problem_is_reported_at_once_with_paths_and_suggestions():
    data = _example()
    data["applicant"]["email"] = "not-an-address"
    data["organisation"]["business_id"] = "1234567-8"
    data["purpse"] = "scientific_research"
    data["fee_category"] = "standrd"
    data["requested_validity"] = {"start": "2027-13-01", "end": "2029-12-31"}
    report = validate_data(data)
    assert not report.ok
    by_path = {p.path: p for p in report.problems}
    assert {"applicant.email", "organisation.business_id", "purpse", "fee_category",
            "requested_validity.start"} <= set(by_path)
    assert by_path["purpse"].suggestion == "purpose" and "did you mean 'purpose'" in by_path["purpse"].message
    assert by_path["fee_category"].suggestion == "standard"
    assert by_path["requested_validity.start"].expected == "a date YYYY-MM-DD"


def test_misspelt_registries_and_variables_get_did_you_mean_once_the_form_is_well_formed():
    data = _example()
    data["extraction"]["registries"]["hilmoo"] = data["extraction"]["registries"].pop("hilmo")
    data["extraction"]["registries"]["kela_purchases"]["variables"] = ["purchase_date", "atcc"]
    data["processors"] = []
    report = validate_data(data)
    paths = {p.path: p for p in report.problems}
    assert paths["extraction.registries.hilmoo"].suggestion == "hilmo"
    assert paths["extraction.registries.kela_purchases.variables"].suggestion == "atc"
    assert any(p.code == "permit_names_processors" for p in report.problems)


def test_duplicate_keys_are_refused_in_yaml_and_json():
    text = EXAMPLE.read_text() + "title: A second title\n"
    report = validate_document(text)
    assert not report.ok and report.problems[0].code == "duplicate_key"
    assert "'title' appears twice" in report.problems[0].message
    report = validate_document('{"kind": "data_permit", "kind": "data_request"}')
    assert report.problems[0].code == "duplicate_key"


def test_broken_documents_are_named_not_crashes():
    assert validate_document("{not json").problems[0].code == "not_json"
    assert validate_document("a: [1, 2").problems[0].code == "not_yaml"
    assert validate_document(b"\xff\xfe").problems[0].code == "not_utf8"
    assert validate_document("- a list").problems[0].code == "not_a_mapping"
    assert validate_document(b"x" * (1024 * 1024 + 1)).problems[0].code == "too_large"
