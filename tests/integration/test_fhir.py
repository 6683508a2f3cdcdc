"""Kanta FHIR R4 bulk data through Spark: each resource kind valid and invalid, the defect ground truth, and a
delivery where FHIR and registry rows of a person carry the same pseudonym."""

import collections
import csv
import hashlib
import json
import shutil

import pandas as pd
import pytest
from pyspark.sql import functions as F

from catalogue.registries import FHIR_REGISTRIES, load_schema
from pseudonymise import synthetic_fhir as SF
from pseudonymise.pipeline import ExtractionError, read_and_validate, run_extraction
from pseudonymise.validate import mark_duplicates, with_repeated_flag
from tests.factories import make_scope, make_service

pytestmark = [pytest.mark.slow, pytest.mark.integration]

HETU = "urn:oid:1.2.246.21"
P1, P2 = "131052-308T", "010101A123N"  # valid codes (born 1952 and 2001)
P3 = "211298-900J"  # a temporary code (individual number 900)


def _validated(spark, root, registry):
    lines, checked = read_and_validate(spark, load_schema(registry), root, allow_temporary=False)
    keyed = with_repeated_flag(checked, lines)
    repeated = F.coalesce(F.col("_repeated"), F.lit(False))
    return keyed.where(~repeated).unionByName(mark_duplicates(keyed.where(repeated))).drop("_h", "_repeated")


def _truth(extracts):
    with open(extracts / "ground_truth.csv", encoding="utf-8") as fh:
        return [t for t in csv.DictReader(fh) if t["registry"] in FHIR_REGISTRIES]


def _patient(pid, code=P1, **extra):
    doc = {"resourceType": "Patient", "id": pid, "identifier": [{"system": HETU, "value": code}],
           "gender": "female", "birthDate": "1952-10-13"}
    doc.update(extra)
    return {k: v for k, v in doc.items() if v is not None}


def _condition(**extra):
    doc = {"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"},
           "code": {"coding": [{"system": "urn:oid:1.2.246.537.6.1", "code": "E119"}]},
           "onsetDateTime": "2019-03-04", "encounter": {"reference": "Encounter/e1"}}
    doc.update(extra)
    return {k: v for k, v in doc.items() if v is not None}


def _encounter(**extra):
    doc = {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"code": "AMB"},
           "subject": {"reference": "Patient/p1"},
           "period": {"start": "2019-03-04T08:00:00+02:00", "end": "2019-03-04T09:00:00+02:00"},
           "serviceProvider": {"identifier": {"value": "10102"}}}
    doc.update(extra)
    return {k: v for k, v in doc.items() if v is not None}


def _dispense(**extra):
    doc = {"resourceType": "MedicationDispense", "id": "d1", "status": "completed",
           "subject": {"reference": "Patient/p1"},
           "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc", "code": "A10BA02"}]},
           "quantity": {"value": 2}, "whenHandedOver": "2019-03-05T12:00:00Z"}
    doc.update(extra)
    return {k: v for k, v in doc.items() if v is not None}


# (resource, the line, the reason or None, the detail)
CASES = [
    ("Patient", _patient("p1"), None, None),
    ("Patient", _patient("p2", P2, gender="male", deceasedDateTime="2020-01-01T10:00:00+02:00"), None, None),
    ("Patient", _patient("p3", P3), "hetu_temporary", "hetu"),
    ("Patient", _patient("p4", "131052-308U"), "hetu_checksum", "hetu"),
    ("Patient", _patient("p5", identifier=[{"system": "urn:oid:1.2.246.10.1234567.22.2019", "value": "1"}]),
     "hetu_missing", "hetu"),
    ("Patient", _patient("p6", gender="F"), "unknown_code", "gender"),  # FHIR codes are case-sensitive
    ("Patient", _patient("p7", birthDate="1952-10"), "invalid_date", "birth_date"),  # partial: not a date here
    ("Patient", _patient("p8", gender=None), "missing_required", "gender"),
    ("Patient", _patient("p9", identifier={"system": HETU, "value": P1}), "invalid_json", "line"),  # not a list
    ("Patient", {"resourceType": "Person", "id": "x"}, "wrong_resource_type", "resourceType"),
    ("Condition", _condition(), None, None),
    ("Condition", _condition(subject={"identifier": {"system": HETU, "value": P2}}), None, None),  # logical
    ("Condition", _condition(subject={"reference": "https://kanta.example/fhir/Patient/p1/_history/3"}), None, None),
    ("Condition", _condition(onsetDateTime=None, recordedDate="2019-03-05"), None, None),
    ("Condition", _condition(onsetDateTime=None, onsetPeriod={"start": "2019-03-01"}), None, None),
    ("Condition", _condition(code={"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "E11.9"}]}),
     "unknown_code", "code"),  # the WHO system, but written with a dot
    ("Condition", _condition(code={"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}),
     "missing_required", "code"),  # no ICD-10 coding
    ("Condition", _condition(subject={"reference": "Patient/nobody"}), "unresolved_reference", "subject"),
    ("Condition", _condition(subject={"reference": "Group/g1"}), "unresolved_reference", "subject"),
    ("Condition", _condition(subject=None), "unresolved_reference", "subject"),
    ("Condition", _condition(subject={"reference": "Patient/p4"}), "hetu_checksum", "hetu"),  # its Patient's
    ("Condition", _condition(subject={"reference": "Patient/p5"}), "hetu_missing", "hetu"),
    ("Condition", _condition(encounter={"reference": "Observation/o1"}), "invalid_reference", "encounter"),
    ("Condition", _condition(onsetDateTime="2019-03-04T10:00:00"), "invalid_date", "onset_date"),  # no zone
    ("Encounter", _encounter(), None, None),
    ("Encounter", _encounter(id="e2", period={"start": "2019-03-04"}), None, None),  # end optional
    ("Encounter", _encounter(id="e3", status="done"), "unknown_code", "status"),
    ("Encounter", _encounter(id="e4", **{"class": None}), "missing_required", "class"),
    ("Encounter", _encounter(id="e5", period={"start": "2019-03-04", "end": "2019-03-01"}), "inconsistent_dates",
     "end_date"),
    ("Encounter", _encounter(id="e 6"), "invalid_reference", "encounter_id"),  # not a FHIR id
    ("Encounter", _encounter(id="e7", serviceProvider={"identifier": {"value": "1"}}), "unknown_code", "provider"),
    ("MedicationDispense", _dispense(), None, None),
    ("MedicationDispense", _dispense(id="d2", quantity={"value": "two"}), "invalid_number", "quantity"),
    ("MedicationDispense", _dispense(id="d3", status=None), "missing_required", "status"),
    ("MedicationDispense", _dispense(id="d4", whenHandedOver=None), "missing_required", "dispense_date"),
    ("MedicationDispense", _dispense(id="d5", medicationCodeableConcept={"coding": [
        {"system": "urn:oid:1.2.246.537.6.32", "code": "Z99ZZ99"}]}), "unknown_code", "atc"),
]
RAW = [("Condition", '{"resourceType":"Condition",', "invalid_json", "line"),
       ("Condition", '["not", "an", "object"]', "invalid_json", "line"),
       ("Encounter", '{"resourceType":"Encounter","id":"e9"} trailing', "invalid_json", "line"),
       ("MedicationDispense", "", "invalid_json", "line")]


@pytest.fixture(scope="module")
def case_verdicts(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("cases")
    d = root / SF.EXPORT_DIR
    d.mkdir()
    lines = collections.defaultdict(list)
    for resource, doc, _r, _d in CASES:
        lines[resource].append(json.dumps(doc))
    for resource, text, _r, _d in RAW:
        lines[resource].append(text)
    output = []
    for resource, values in lines.items():
        # a type may come in several files: the Conditions in two
        parts = [values[::2], values[1::2]] if resource == "Condition" else [values]
        for i, part in enumerate(parts):
            name = f"{resource}-{i}.ndjson"
            (d / name).write_text("\n".join(part) + "\n", encoding="utf-8")
            output.append({"type": resource, "url": f"https://kanta.example/bulk/{name}", "count": len(part)})
    (d / "manifest.json").write_text(json.dumps({"transactionTime": "2025-01-01T00:00:00Z", "output": output}))
    out = {}
    for registry in FHIR_REGISTRIES:
        for row in _validated(spark, root, registry).collect():
            out[row["_line"]] = row
    return out


@pytest.mark.parametrize(("resource", "doc", "reason", "detail"), CASES,
                         ids=[f"{c[0]}-{i}-{c[2]}" for i, c in enumerate(CASES)])
def test_each_resource_kind_valid_and_invalid(case_verdicts, resource, doc, reason, detail):
    row = case_verdicts[json.dumps(doc)]
    assert (row["_reason"], row["_detail"]) == (reason, detail)


@pytest.mark.parametrize(("resource", "text", "reason", "detail"), RAW)
def test_lines_that_are_not_resources(case_verdicts, resource, text, reason, detail):
    row = case_verdicts[text]
    assert (row["_reason"], row["_detail"]) == (reason, detail)


def test_values_are_read_as_the_contract_types(case_verdicts):
    import datetime

    row = case_verdicts[json.dumps(_dispense())]
    assert row["hetu"] == P1 and row["atc"] == "A10BA02" and float(row["quantity"]) == 2.0
    assert row["dispense_date"] == datetime.date(2019, 3, 5)
    enc = case_verdicts[json.dumps(_encounter())]
    assert (enc["encounter_id"], enc["class"], enc["status"]) == ("Encounter/e1", "AMB", "finished")
    cond = case_verdicts[json.dumps(_condition(subject={"reference":
                                                        "https://kanta.example/fhir/Patient/p1/_history/3"}))]
    assert (cond["hetu"], cond["encounter"]) == (P1, "Encounter/e1")
    recorded = case_verdicts[json.dumps(_condition(onsetDateTime=None, recordedDate="2019-03-05"))]
    assert recorded["onset_date"] == datetime.date(2019, 3, 5)


def _fhir_scope():
    return make_scope(cohort=None, generalise={}, registries={
        "hilmo": {"variables": ["admission_date", "main_dg"]},
        "kanta_patient": {"variables": ["gender", "birth_date"]},
        "kanta_condition": {"variables": ["onset_date", "code", "encounter"],
                            "period": {"start": "2000-01-01", "end": "2024-12-31"}},
        "kanta_encounter": {"variables": ["encounter_id", "class", "start_date"]},
        "kanta_dispense": {"variables": ["dispense_date", "atc"]},
    })


@pytest.fixture(scope="module")
def service_home(tmp_path_factory):
    return tmp_path_factory.mktemp("svc")


@pytest.fixture(scope="module")
def delivered(spark, extracts, service_home, tmp_path_factory):
    svc = make_service(service_home)
    out = tmp_path_factory.mktemp("fhir-delivery") / "TOISIO-2026-1"
    return run_extraction(_fhir_scope(), extracts, out, svc, spark=spark)


@pytest.fixture(scope="module")
def verdicts(delivered):
    """The rows the delivery quarantined, per FHIR registry (with duplicates resolved as the pipeline does)."""
    return {r: pd.read_parquet(delivered.quarantine_dir / r).to_dict("records") for r in FHIR_REGISTRIES}


def test_fhir_and_registry_rows_of_a_person_share_the_pseudonym(delivered):
    """Each synthetic Condition is a Hilmo episode's main diagnosis: delivered, the two carry the same pseudonym."""
    out = delivered.output_dir
    hilmo = pd.read_parquet(out / "hilmo")
    cond = pd.read_parquet(out / "kanta_condition")
    h = set(zip(hilmo["pseudonym"], hilmo["admission_date"], hilmo["main_dg"], strict=True))
    c = set(zip(cond["pseudonym"], cond["onset_date"], cond["code"], strict=True))
    assert len(c & h) > 0.9 * len(c), "conditions do not link to the registry's episodes"
    patients = pd.read_parquet(out / "kanta_patient")
    assert set(cond["pseudonym"]) <= set(patients["pseudonym"]) | set(hilmo["pseudonym"])
    assert set(pd.read_parquet(out / "persons")["pseudonym"]) >= set(patients["pseudonym"])


def test_references_are_keyed_hashes_that_still_join(delivered):
    out = delivered.output_dir
    cond = pd.read_parquet(out / "kanta_condition")
    enc = pd.read_parquet(out / "kanta_encounter")
    for series in (cond["encounter"].dropna(), enc["encounter_id"]):
        assert series.str.fullmatch("[0-9a-f]{32}").all()
    joined = cond.merge(enc, left_on=["encounter", "pseudonym"], right_on=["encounter_id", "pseudonym"])
    assert len(joined) > 0.9 * len(cond)
    assert (joined["onset_date"] == joined["start_date"]).all()
    assert not (out / "kanta_encounter").joinpath("Encounter").exists()
    data = b"".join(p.read_bytes() for p in out.rglob("*.parquet"))
    assert b"Encounter/e0-" not in data and b"Patient/p" not in data


def test_counts_per_reason_match_the_ground_truth(verdicts, extracts):
    truth = _truth(extracts)
    for registry, rows in verdicts.items():
        got = collections.Counter(r["_reason"] for r in rows)
        got.pop("hetu_temporary", None)  # persons born with a temporary code: not injected
        assert got == collections.Counter(t["expected_reason"] for t in truth if t["registry"] == registry), registry


def test_every_defect_line_is_quarantined_with_its_reason(verdicts, extracts):
    truth = _truth(extracts)
    assert {t["defect"] for t in truth} == set(SF.FHIR_DEFECT_REASONS)
    for t in truth:
        found = {hashlib.sha256(r["_line"].encode()).hexdigest(): r["_reason"] for r in verdicts[t["registry"]]}
        assert found.get(t["line_sha256"]) == t["expected_reason"], t


def test_every_fhir_row_is_accounted_for(delivered, extracts):
    truth = collections.Counter((t["registry"], t["expected_reason"]) for t in _truth(extracts))
    for registry in FHIR_REGISTRIES:
        c = delivered.manifest.counts[registry]
        assert c.rows_in == c.quarantined_total + c.excluded + c.delivered
        assert c.rows_in == json.loads((extracts / "kanta" / "manifest.json").read_text())["output"][
            list(SF.FILES).index(load_schema(registry).resource)]["count"]
        for reason, n in c.quarantined.items():
            if reason != "hetu_temporary":
                assert truth[(registry, reason)] == n, (registry, reason)


def test_a_broken_export_stops_the_run_naming_it(extracts, spark, service_home, tmp_path):
    shutil.copytree(extracts / "kanta", tmp_path / "in" / "kanta")
    shutil.copy(extracts / "hilmo.csv", tmp_path / "in" / "hilmo.csv")
    (tmp_path / "in" / "kanta" / "Condition.ndjson").unlink()
    with pytest.raises(ExtractionError, match=r"registry 'kanta_condition': .*Condition.ndjson is listed but missing"):
        run_extraction(_fhir_scope(), tmp_path / "in", tmp_path / "out", make_service(service_home), spark=spark)
