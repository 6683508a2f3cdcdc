"""Kanta FHIR source, the parts without Spark: contracts against FHIR R4(B), element paths, the export's
manifest, and the synthetic export (valid resources are valid FHIR; defects are what the ground truth says)."""

import csv
import hashlib
import json

import pytest
from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.encounter import Encounter
from fhir.resources.R4B.medicationdispense import MedicationDispense
from fhir.resources.R4B.patient import Patient
from pydantic import ValidationError

from catalogue.registries import CSV_REGISTRIES, FHIR_REGISTRIES, RegistrySchema, load_schema
from pseudonymise import fhir
from pseudonymise import synthetic_fhir as SF
from pseudonymise.files import ExtractFileError
from pseudonymise.synthetic import generate

pytestmark = pytest.mark.unit

MODELS = {"Patient": Patient, "Condition": Condition, "Encounter": Encounter,
          "MedicationDispense": MedicationDispense}
# FHIR element names as fhir.resources spells them where they clash with Python words
_PY_NAMES = {"class_fhir": "class"}


def _required_by_fhir(model) -> set[str]:
    """The elements FHIR R4B requires of a resource (min 1), choice elements by their stem (``medication``)."""
    out = set()
    for name, f in model.model_fields.items():
        extra = f.json_schema_extra or {}
        if f.is_required() or extra.get("element_required"):
            out.add(_PY_NAMES.get(name, name))
        if extra.get("one_of_many_required"):
            out.add(extra["one_of_many"])
    return out


def _read_by_contract(schema: RegistrySchema) -> set[str]:
    """The top elements the contract reads and requires (its subject for a resource other than Patient)."""
    out = {"subject"} if schema.resource != "Patient" else set()
    for c in schema.columns:
        if c.fhir and not c.nullable:
            for alt in fhir.parse_path(c.fhir):
                name = alt[0].name
                out.add(next((stem for stem in ("medication", "onset", "deceased") if name.startswith(stem)), name))
    return out


@pytest.mark.parametrize("registry", FHIR_REGISTRIES)
def test_every_element_fhir_requires_is_required_by_the_contract(registry):
    """The completeness test of the contracts: what R4B requires, the contract requires too (it may ask more)."""
    schema = load_schema(registry)
    missing = _required_by_fhir(MODELS[schema.resource]) - _read_by_contract(schema)
    assert not missing, f"{registry}: FHIR requires {missing}, the contract does not read them"


def test_every_fhir_registry_names_its_resource_and_the_csv_ones_none():
    assert {load_schema(r).resource for r in FHIR_REGISTRIES} == set(MODELS)
    assert all(load_schema(r).resource is None for r in CSV_REGISTRIES)


@pytest.mark.parametrize("registry", FHIR_REGISTRIES)
def test_every_path_is_an_element_of_the_r4b_model(registry):
    """Each path's steps exist in fhir.resources' R4B model of the resource (catches a misspelt element)."""
    schema = load_schema(registry)
    model = MODELS[schema.resource]
    for c in schema.columns:
        for alt in fhir.parse_path(c.fhir or "subject"):
            fields = {_PY_NAMES.get(n, n) for n in model.model_fields}
            assert alt[0].name in fields, (registry, c.name, alt[0].name)


@pytest.mark.parametrize(("text", "expected"), [
    ("birthDate", ((("birthDate", None),),)),
    ("period.start", ((("period", None), ("start", None)),)),
    ("identifier[system=urn:oid:1.2.246.21].value", ((("identifier", "urn:oid:1.2.246.21"), ("value", None)),)),
    ("code.coding[system=http://hl7.org/fhir/sid/icd-10].code|recordedDate",
     ((("code", None), ("coding", "http://hl7.org/fhir/sid/icd-10"), ("code", None)), (("recordedDate", None),))),
])
def test_paths_parse(text, expected):
    got = tuple(tuple((s.name, s.system) for s in alt) for alt in fhir.parse_path(text))
    assert got == expected


@pytest.mark.parametrize("text", ["", "a..b", "1abc", "code[system=x", "code[kind=x].code", "a.b c"])
def test_bad_paths_are_refused_naming_the_part(text):
    with pytest.raises(ValueError, match="FHIR path"):
        fhir.parse_path(text)


def test_an_element_read_both_as_a_list_and_as_one_is_refused():
    with pytest.raises(ValueError, match="both as a list"):
        fhir._tree([fhir.parse_path("code.coding.code")[0], fhir.parse_path("code.coding[system=x].code")[0]])
    with pytest.raises(ValueError, match="both as a value"):
        fhir._tree([fhir.parse_path("period.start")[0], fhir.parse_path("period")[0]])


def test_the_read_schema_holds_only_what_the_contract_reads():
    s = fhir.resource_schema(load_schema("kanta_encounter"))
    assert set(s.fieldNames()) == {"resourceType", "id", "status", "class", "period", "subject", "serviceProvider",
                                   "_corrupt"}
    assert s["subject"].dataType.fieldNames() == ["identifier", "reference"]


@pytest.mark.parametrize("bad", [
    {"format": "fhir_ndjson"},  # no resource type
    {"resource": "Patient"},  # a resource type on a CSV contract
])
def test_layout_and_resource_go_together(bad):
    base = load_schema("hilmo").model_dump()
    with pytest.raises(ValidationError, match="resource type"):
        RegistrySchema.model_validate({**base, **bad})


def test_a_fhir_column_needs_its_element_and_a_reference_its_target():
    base = load_schema("kanta_encounter").model_dump()
    cols = [dict(c) for c in base["columns"]]
    cols[2]["fhir"] = None
    with pytest.raises(ValidationError, match="needs the FHIR element"):
        RegistrySchema.model_validate({**base, "columns": cols})
    cols = [dict(c) for c in base["columns"]]
    cols[1]["target"] = None
    with pytest.raises(ValidationError, match="names its target"):
        RegistrySchema.model_validate({**base, "columns": cols})


# --- the manifest ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    out = tmp_path_factory.mktemp("fhir")
    summary = generate(out, persons=600, seed=5, defect_rate=0.05, fhir=True)
    return out, summary


def _copy(export, tmp_path):
    import shutil

    shutil.copytree(export[0] / SF.EXPORT_DIR, tmp_path / "kanta")
    return tmp_path / "kanta"


def test_the_manifest_lists_every_file_with_its_count(export):
    files = fhir.read_manifest(export[0] / SF.EXPORT_DIR)
    assert [f.resource for f in files] == list(SF.FILES)
    for f in files:
        assert f.count == export[1].rows[SF.FILES[f.resource][0]] == fhir._line_count(f.path)


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: (d / "manifest.json").unlink(), "has no manifest"),
    (lambda d: (d / "manifest.json").write_text("{"), "not a JSON manifest"),
    (lambda d: (d / "manifest.json").write_text('{"output": []}'), "needs 'transactionTime'"),
    (lambda d: _edit(d, lambda m: m.update(error=[{"type": "OperationOutcome", "url": "x/err.ndjson"}])),
     "reports 1 error file"),
    (lambda d: _edit(d, lambda m: m["output"][0].update(count=1)), "the manifest says 1 Patient resources"),
    (lambda d: _edit(d, lambda m: m["output"][0].update(count="many")), "'count' must be a whole number"),
    (lambda d: _edit(d, lambda m: m["output"][0].pop("url")), "needs a 'type' and a 'url'"),
    (lambda d: _edit(d, lambda m: m["output"][0].update(url="https://x/")), "does not name a file"),
    (lambda d: (d / "Condition.ndjson").unlink(), "Condition.ndjson is listed but missing"),
    (lambda d: (d / "Extra.ndjson").write_text("{}\n"), "Extra.ndjson not listed in the manifest"),
    (lambda d: (d / "Patient.ndjson").write_bytes(b"\x1f\x8b\x08rest"), "gzip-compressed"),
    (lambda d: (d / "Patient.ndjson").write_bytes(b'{"a":\x00}\n'), "binary"),
])
def test_a_broken_export_is_refused_naming_what(export, tmp_path, change, message):
    d = _copy(export, tmp_path)
    change(d)
    with pytest.raises(ExtractFileError, match=message):
        fhir.export_files(d, "Condition")


def test_an_export_without_the_resource_is_refused(export, tmp_path):
    d = _copy(export, tmp_path)
    _edit(d, lambda m: m.update(output=[o for o in m["output"] if o["type"] != "Encounter"]))
    (d / "Encounter.ndjson").unlink()
    with pytest.raises(ExtractFileError, match="has no Encounter resources"):
        fhir.export_files(d, "Encounter")
    assert fhir.export_files(d, "Condition")[0].name == "Condition.ndjson"


def test_a_missing_export_directory_is_refused(tmp_path):
    with pytest.raises(ExtractFileError, match="directory is missing"):
        fhir.read_manifest(tmp_path / "kanta")


def _edit(d, fn):
    m = json.loads((d / "manifest.json").read_text())
    fn(m)
    (d / "manifest.json").write_text(json.dumps(m))


# --- the synthetic export ---------------------------------------------------------------------------------------


def _truth(out):
    with open(out / "ground_truth.csv", encoding="utf-8") as fh:
        return [t for t in csv.DictReader(fh) if t["registry"].startswith("kanta_")]


def test_synthetic_resources_without_a_defect_are_valid_r4b(export):
    """Every line the ground truth does not list parses as its R4B model (what the adapter accepts is FHIR)."""
    out, _ = export
    defects = {t["line_sha256"] for t in _truth(out)}
    checked = 0
    for resource, (_reg, name) in SF.FILES.items():
        for line in (out / SF.EXPORT_DIR / name).read_text("utf-8").splitlines():
            if hashlib.sha256(line.encode()).hexdigest() in defects:
                continue
            MODELS[resource].model_validate_json(line)
            checked += 1
    assert checked > 1000


def test_defects_break_fhir_where_fhir_has_the_rule(export):
    """Defects that break a rule of FHIR itself are refused by R4B too; the others are the contract's own rules
    (an ICD-10 or ATC code not in the list, a reference to a Patient not in the export, a duplicate, a Patient's
    gender or a Condition's code missing: FHIR makes both optional)."""
    out, _ = export
    lines = {}
    for _resource, (_reg, name) in SF.FILES.items():
        for line in (out / SF.EXPORT_DIR / name).read_text("utf-8").splitlines():
            lines[hashlib.sha256(line.encode()).hexdigest()] = line
    fhir_rules = {"truncated_json", "wrong_resource_type", "impossible_date"}
    seen = set()
    for t in _truth(out):
        resource = load_schema(t["registry"]).resource
        fhir_requires = resource in ("Encounter", "MedicationDispense")  # class, status: 1..1 in FHIR
        if t["defect"] in fhir_rules or (t["defect"] == "missing_required" and fhir_requires):
            with pytest.raises(ValidationError):
                MODELS[resource].model_validate_json(lines[t["line_sha256"]])
            seen.add(t["defect"])
    assert seen == fhir_rules | {"missing_required"}


def test_fhir_export_is_of_the_same_persons_and_deterministic(export, tmp_path):
    out, summary = export
    pop = {line.split(",")[0] for line in (out / "population.csv").read_text("utf-8").splitlines()[1:]}
    codes = set()
    for line in (out / SF.EXPORT_DIR / "Patient.ndjson").read_text("utf-8").splitlines():
        doc = json.loads(line)
        codes.add(doc["identifier"][0]["value"])
    # (a CSV line with an injected defect may carry a wrong check character: compare without it)
    assert {c[:10] for c in codes} <= {c[:10] for c in pop} and len(codes) == summary.persons
    generate(tmp_path / "again", persons=600, seed=5, defect_rate=0.05, fhir=True)
    generate(tmp_path / "csv_only", persons=600, seed=5, defect_rate=0.05)
    for name in ("Patient.ndjson", "Condition.ndjson", "manifest.json"):
        assert (out / "kanta" / name).read_bytes() == (tmp_path / "again" / "kanta" / name).read_bytes()
    assert (out / "hilmo.csv").read_bytes() == (tmp_path / "csv_only" / "hilmo.csv").read_bytes()
    assert {t["defect"] for t in _truth(out)} == set(SF.FHIR_DEFECT_REASONS)


def test_an_export_with_no_resources_of_a_kind_fails_the_run_in_its_words():
    from pseudonymise.pipeline import ExtractionError, check_quality

    with pytest.raises(ExtractionError, match=r"kanta/ has no Condition resources; if that is right"):
        check_quality("kanta_condition", {"rows_in": 0}, max_share=0.5, allow_empty=False)
    with pytest.raises(ExtractionError, match=r"6 of 10 rows of kanta/ \(Encounter resources\) \(60%\) were"):
        check_quality("kanta_encounter", {"rows_in": 10, "quarantined_total": 6, "quarantined": {"invalid_json": 6}},
                      max_share=0.5, allow_empty=False)
