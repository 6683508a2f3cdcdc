"""Synthetic Kanta FHIR R4 bulk export, of the same synthetic persons as the registry extracts.

``toisio synth --fhir`` writes ``kanta/`` beside the CSV extracts: ``Patient.ndjson`` (one per person of the
population extract), ``Encounter.ndjson`` and ``Condition.ndjson`` (one each per Hilmo episode: the episode
and its main diagnosis, linked by the encounter's id), ``MedicationDispense.ndjson`` (one per Kela purchase)
and the export's ``manifest.json``.  Resources refer to their Patient as ``Patient/<id>`` or, for about one in
five, by the identity code as a logical reference, so both ways are exercised.  Injected defects are listed in
``ground_truth.csv`` with the quarantine reason the FHIR adapter must give, as for the CSV registries.

Lines are built by vectorised string concatenation (no ``json.dumps`` per resource) so a population-sized
export stays quick to write; a defect line is rebuilt through ``json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from pseudonymise.hetu import CHECK_ALPHABET
from pseudonymise.hetu import FHIR_SYSTEM as HETU_SYSTEM

EXPORT_DIR = "kanta"
ICD10_SYSTEM = "urn:oid:1.2.246.537.6.1"
ATC_SYSTEM = "http://www.whocc.no/atc"
PROVIDER_SYSTEM = "urn:oid:1.2.246.537.6.202"
#: resource type -> (registry, file)
FILES = {"Patient": ("kanta_patient", "Patient.ndjson"), "Encounter": ("kanta_encounter", "Encounter.ndjson"),
         "Condition": ("kanta_condition", "Condition.ndjson"),
         "MedicationDispense": ("kanta_dispense", "MedicationDispense.ndjson")}
# Defect kinds and the reason each must be quarantined with.  A Patient gets only defects that leave its id and
# identity code readable, so the resources referring to it are not affected.
FHIR_DEFECT_REASONS = {
    "truncated_json": "invalid_json",
    "wrong_resource_type": "wrong_resource_type",
    "unresolved_reference": "unresolved_reference",
    "bad_control_char": "hetu_checksum",
    "impossible_date": "invalid_date",
    "unknown_code": "unknown_code",
    "missing_required": "missing_required",
    "duplicate_row": "duplicate",
}
PATIENT_DEFECTS = ("impossible_date", "unknown_code", "missing_required", "duplicate_row")
# Per resource: the element an impossible date, an unknown code and a missing value go into.
_TARGETS = {
    "Patient": ("birthDate", ("gender",), "f", ("gender",)),
    "Encounter": ("period.start", ("status",), "done", ("class",)),
    "Condition": ("onsetDateTime", ("code", "coding", 0, "code"), "U999", ("code",)),
    "MedicationDispense": ("whenHandedOver", ("medicationCodeableConcept", "coding", 0, "code"), "Z99ZZ99",
                           ("status",)),
}


def _s(values) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=object), dtype=object).astype(str)


def _subject(rng: np.random.Generator, hetu: pd.Series, pid: pd.Series) -> pd.Series:
    logical = rng.random(len(hetu)) < 0.2
    by_ref = '"subject":{"reference":"Patient/' + pid + '"}'
    by_code = '"subject":{"identifier":{"system":"' + HETU_SYSTEM + '","value":"' + hetu + '"}}'
    return by_ref.where(~logical, by_code)


def _iso_from_finnish(dates: pd.Series) -> pd.Series:
    return pd.to_datetime(dates, format="%d.%m.%Y").dt.strftime("%Y-%m-%d")


def patients(population: pd.DataFrame, first: int) -> tuple[pd.Series, pd.Series, pd.Series]:
    """Patient lines of a chunk, with each person's id and identity code (ids are ``p<n>`` over all chunks)."""
    n = len(population)
    pid = _s([f"p{i}" for i in range(first, first + n)])
    hetu = _s(population["hetu"])
    gender = _s(np.where(population["sex"].astype(str) == "1", "male", "female"))
    death = _s(population["death_date"])
    deceased = ('","deceasedDateTime":"' + death).where(death != "", "")
    lines = ('{"resourceType":"Patient","id":"' + pid + '","identifier":[{"system":"' + HETU_SYSTEM
             + '","value":"' + hetu + '"}],"gender":"' + gender + '","birthDate":"'
             + _s(population["birth_date"]) + deceased + '"}')
    return lines, pid, hetu


def encounters_and_conditions(hilmo: pd.DataFrame, ids: dict[str, str], chunk: int,
                              rng: np.random.Generator) -> tuple[pd.Series, pd.Series]:
    """An Encounter and a Condition (its main diagnosis) per Hilmo episode."""
    n = len(hilmo)
    hetu = _s(hilmo["hetu"])
    pid = hetu.map(ids)
    eid = _s([f"e{chunk}-{j}" for j in range(n)])
    start, end = _s(hilmo["admission_date"]), _s(hilmo["discharge_date"])
    cls = _s(np.where(start == end, "AMB", "IMP"))
    encounter = ('{"resourceType":"Encounter","id":"' + eid + '","status":"finished","class":{"system":'
                 '"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"' + cls + '"},'
                 + _subject(rng, hetu, pid) + ',"period":{"start":"' + start + 'T08:00:00+02:00","end":"' + end
                 + 'T16:00:00+02:00"},"serviceProvider":{"identifier":{"system":"' + PROVIDER_SYSTEM
                 + '","value":"' + _s(hilmo["provider"]) + '"}}}')
    condition = ('{"resourceType":"Condition","id":"c' + eid.str.slice(1) + '",' + _subject(rng, hetu, pid)
                 + ',"code":{"coding":[{"system":"' + ICD10_SYSTEM + '","code":"' + _s(hilmo["main_dg"])
                 + '"}]},"onsetDateTime":"' + start + '","encounter":{"reference":"Encounter/' + eid + '"}}')
    return encounter, condition


def dispenses(kela: pd.DataFrame, ids: dict[str, str], chunk: int, rng: np.random.Generator) -> pd.Series:
    """A MedicationDispense per Kela purchase (a cancelled purchase as a cancelled dispense)."""
    n = len(kela)
    hetu = _s(kela["hetu"])
    packages = kela["packages"].astype(int).to_numpy()
    status = _s(np.where(packages > 0, "completed", "cancelled"))
    return ('{"resourceType":"MedicationDispense","id":"d' + _s([f"{chunk}-{j}" for j in range(n)])
            + '","status":"' + status + '",' + _subject(rng, hetu, hetu.map(ids))
            + ',"medicationCodeableConcept":{"coding":[{"system":"' + ATC_SYSTEM + '","code":"' + _s(kela["atc"])
            + '"}]},"quantity":{"value":' + _s(np.abs(packages)) + '},"whenHandedOver":"'
            + _iso_from_finnish(kela["purchase_date"]) + 'T12:00:00+02:00"}')


def _set(doc: dict, path: tuple, value) -> None:
    for k in path[:-1]:
        doc = doc[k]
    doc[path[-1]] = value


def _bad_check(hetu: str) -> str:
    return hetu[:-1] + next(ch for ch in CHECK_ALPHABET[::-1] if ch != hetu[-1])


def _defect(line: str, resource: str, kind: str, rng: np.random.Generator) -> str:
    """``line`` with one defect of ``kind``."""
    if kind == "truncated_json":
        return line[: int(rng.integers(10, len(line) - 5))]
    doc = json.loads(line)
    date_path, code_path, unknown, required = _TARGETS[resource]
    if kind == "wrong_resource_type":
        doc["resourceType"] = "Observation"
    elif kind == "unresolved_reference":
        doc["subject"] = {"reference": "Patient/unknown-" + doc["id"]}
    elif kind == "bad_control_char":
        subject = doc["subject"]
        hetu = subject["identifier"]["value"] if "identifier" in subject else None
        if hetu is None:
            return ""  # only a logical reference carries the code itself
        subject["identifier"]["value"] = _bad_check(hetu)
    elif kind == "impossible_date":
        _set(doc, tuple(date_path.split(".")), "2019-02-30")
    elif kind == "unknown_code":
        _set(doc, code_path, unknown)
    elif kind == "missing_required":
        _set(doc, required, None)
        doc = {k: v for k, v in doc.items() if v is not None}
    return json.dumps(doc, separators=(",", ":"))


def write_chunk(handles: dict[str, BinaryIO], resource: str, lines: pd.Series, temporary: pd.Series, rate: float,
                rng: np.random.Generator) -> tuple[int, list[tuple[str, str, bytes]]]:
    """Write a chunk's lines of ``resource`` with defects; return the lines written and ``(registry, kind, line)``
    for each defect.  Lines of persons with a temporary identity code are left as they are (quarantined as such)."""
    values = lines.tolist()
    registry = FILES[resource][0]
    kinds = list(PATIENT_DEFECTS) if resource == "Patient" else list(FHIR_DEFECT_REASONS)
    truth: list[tuple[str, str, bytes]] = []
    extra: list[str] = []
    if rate > 0 and values:
        chosen = np.flatnonzero(rng.random(len(values)) < rate)
        picked = rng.choice(kinds, len(chosen)) if len(chosen) else []
        temp = temporary.to_numpy()
        for i, kind in zip(chosen.tolist(), list(picked), strict=True):
            if temp[i]:
                continue
            if kind == "duplicate_row":
                extra.append(values[i])
                truth.append((registry, kind, values[i].encode("utf-8")))
                continue
            bad = _defect(values[i], resource, kind, rng)
            if bad:
                values[i] = bad
                truth.append((registry, kind, bad.encode("utf-8")))
    out = values + extra
    if out:
        handles[resource].write(("\n".join(out) + "\n").encode("utf-8"))
    return len(out), truth


def temporary_codes(hetu: pd.Series) -> pd.Series:
    """True for a temporary identity code (individual number 900-999)."""
    return hetu.str.slice(7, 10) >= "900"


def open_export(out: Path) -> dict[str, BinaryIO]:
    d = out / EXPORT_DIR
    d.mkdir(parents=True, exist_ok=True)
    return {resource: open(d / name, "wb") for resource, (_r, name) in FILES.items()}  # noqa: SIM115


def write_manifest(out: Path, counts: dict[str, int], transaction_time: str) -> None:
    """The bulk export's manifest, listing each file with its resource count."""
    manifest = {
        "transactionTime": transaction_time,
        "request": "https://kanta.example/fhir/$export?_type=Patient,Encounter,Condition,MedicationDispense",
        "requiresAccessToken": True,
        "output": [{"type": r, "url": f"https://kanta.example/bulk/{name}", "count": counts.get(r, 0)}
                   for r, (_reg, name) in FILES.items()],
        "error": [],
    }
    (out / EXPORT_DIR / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
