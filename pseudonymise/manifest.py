"""The delivery's manifest as typed models: the interface between the pipeline and what comes after it
(the workspace copies a delivery after checking its manifest; the permit records its SHA-256).

``manifest.json`` is written from :class:`Manifest` (canonical JSON, sorted keys) and read back with
:func:`load`, which refuses a manifest that does not have exactly these fields.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from toisio.errors import Invalid

_STRICT = ConfigDict(frozen=True, extra="forbid")


class RegistryCounts(BaseModel):
    """Every row read from one registry's extract, accounted for: quarantined (by reason), excluded (by
    reason) or delivered."""

    model_config = _STRICT

    rows_in: int = Field(ge=0)
    valid: int = Field(ge=0)
    quarantined: dict[str, int]
    quarantined_total: int = Field(ge=0)
    excluded_outside_period: int = Field(0, ge=0)
    excluded_not_in_cohort: int = Field(0, ge=0)
    excluded_duplicate_person: int = Field(0, ge=0)
    excluded_not_in_scope: int = Field(0, ge=0)
    delivered: int = Field(ge=0)

    @property
    def excluded(self) -> int:
        return (self.excluded_outside_period + self.excluded_not_in_cohort + self.excluded_duplicate_person
                + self.excluded_not_in_scope)

    @model_validator(mode="after")
    def _accounted(self) -> RegistryCounts:
        if sum(self.quarantined.values()) != self.quarantined_total:
            raise ValueError("quarantined_total is not the sum of the quarantine reasons")
        if self.quarantined_total + self.excluded + self.delivered != self.rows_in:
            raise ValueError(f"{self.rows_in} rows read but {self.quarantined_total + self.excluded + self.delivered}"
                             f" accounted for")
        return self


class DeliveredFile(BaseModel):
    model_config = _STRICT

    path: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    rows: int = Field(ge=0)


class Column(BaseModel):
    model_config = _STRICT

    name: str
    type: str


class Dataset(BaseModel):
    """One delivered dataset (a registry, or the person table) and its files."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    rows: int = Field(ge=0)
    schema_: list[Column] = Field(alias="schema")
    files: list[DeliveredFile]


class KeyInfo(BaseModel):
    model_config = _STRICT

    key_id: str
    version: int
    pseudonym: str


class CohortSummary(BaseModel):
    model_config = _STRICT

    cases: int = Field(ge=0)
    controls: int = Field(ge=0)
    cases_short_of_controls: int = Field(ge=0)


class Manifest(BaseModel):
    """What a delivery holds and how it was made."""

    model_config = _STRICT

    manifest_version: int = 1
    permit_id: str
    delivery: str
    scope_sha256: str
    scope_file_sha256: str
    key: KeyInfo
    software: dict[str, str]
    generalisation: dict
    cohort: CohortSummary | None
    counts: dict[str, RegistryCounts]
    datasets: dict[str, Dataset]

    def to_json(self) -> dict:
        """The JSON form written to ``manifest.json``."""
        return self.model_dump(mode="json", by_alias=True)


class ManifestError(Invalid):
    """A delivery whose manifest is missing or malformed."""

    code = "bad_manifest"


def load(path: Path) -> Manifest:
    """Read ``manifest.json`` (or the manifest of a delivery directory), refusing anything malformed."""
    path = path / "manifest.json" if path.is_dir() else path
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path}: not a valid delivery manifest ({exc})") from None
