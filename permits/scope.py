"""The permit scope: the one extraction description the whole service runs on.

The scope is written during application handling, frozen when the applicant
accepts the cost estimate and extraction description (its SHA-256 is recorded
then), and from that moment it is the very document the pipeline extracts by
and the workspace mounts.  It is a pure pydantic model with no database ties,
so every stage can import it.  ``toisio scope schema`` prints its JSON Schema.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from toisio.documents import load_model
from toisio.errors import Invalid

PERMIT_ID = re.compile(r"^[A-Z][A-Z0-9]{1,15}-[0-9]{4}-[0-9]{1,6}$")


class ScopeError(Invalid):
    """A scope document is invalid, or something asks for more than the scope allows."""

    code = "invalid_scope"


class Period(BaseModel):
    """An inclusive date range."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    start: date
    end: date

    @model_validator(mode="after")
    def _ordered(self) -> Period:
        if self.end < self.start:
            raise ValueError(f"period ends ({self.end}) before it starts ({self.start})")
        return self


class RegistryScope(BaseModel):
    """What one registry may deliver: its variables and the period of its event date."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    variables: tuple[str, ...] = Field(min_length=1)
    period: Period | None = None

    @field_validator("variables")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if "hetu" in v:
            raise ValueError("'hetu' is never delivered; persons are identified by their pseudonym")
        if len(set(v)) != len(v):
            raise ValueError("variables are listed more than once")
        return v


class Cohort(BaseModel):
    """Cases: persons with a code in a registry within a period; controls matched from the population."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    registry: str
    code_columns: tuple[str, ...] = Field(min_length=1)
    code_prefixes: tuple[str, ...] = Field(min_length=1)
    period: Period
    controls_per_case: int = Field(default=0, ge=0, le=10)
    match_on: tuple[Literal["birth_year", "sex"], ...] = ("birth_year", "sex")

    @field_validator("code_prefixes")
    @classmethod
    def _prefix_form(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            if not re.fullmatch(r"[A-Z0-9]{1,7}", p):
                raise ValueError(f"code prefix {p!r} must be letters and digits without dots, e.g. 'E11'")
        return v


class Generalisation(BaseModel):
    """Coarsening applied before delivery."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    dates: Literal["day", "month", "year"] = "day"
    age_bands: tuple[int, ...] | None = None  # lower edges, e.g. (0, 18, 30, 40, 50, 60, 70, 80)
    age_reference_date: date | None = None  # age at this date when there is no cohort index date
    municipality: Literal["code", "wellbeing_county"] = "code"

    @field_validator("age_bands")
    @classmethod
    def _bands(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (not v or list(v) != sorted(set(v)) or v[0] != 0):
            raise ValueError("age_bands must start at 0 and increase")
        return v


class PermitScope(BaseModel):
    """The frozen extraction description of one permit (or data request)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: Literal[1] = 1
    permit_id: str
    delivery: Literal["pseudonymised", "aggregate"]
    key_version: int = Field(default=1, ge=1)
    registries: dict[str, RegistryScope] = Field(min_length=1)
    cohort: Cohort | None = None
    generalise: Generalisation = Generalisation()
    allow_temporary_ids: bool = False

    @field_validator("permit_id")
    @classmethod
    def _permit_id(cls, v: str) -> str:
        if not PERMIT_ID.fullmatch(v):
            raise ValueError(f"permit id {v!r} must look like 'TOISIO-2026-17'")
        return v

    @model_validator(mode="after")
    def _against_registry_schemas(self) -> PermitScope:
        problems = extraction_problems(self.registries, self.cohort, self.generalise)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def canonical_json(self) -> str:
        """Canonical JSON text (sorted keys, no spaces): what the scope hash covers."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    @property
    def sha256(self) -> str:
        """SHA-256 of :meth:`canonical_json`; recorded when the scope is frozen."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def check_variables_in_scope(self, registry: str, variables: list[str] | tuple[str, ...]) -> None:
        """Raise :class:`ScopeError` naming any variable the permit does not cover."""
        if registry not in self.registries:
            raise ScopeError(
                f"registry {registry!r} is not in permit {self.permit_id}'s scope "
                f"(it covers {', '.join(sorted(self.registries))})"
            )
        allowed = set(self.registries[registry].variables)
        extra = [v for v in variables if v not in allowed]
        if extra:
            raise ScopeError(
                f"variable(s) {', '.join(extra)} of registry {registry!r} are not in permit "
                f"{self.permit_id}'s scope; a change to the data needs a new permit application"
            )


def _did_you_mean(word: str, choices) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def extraction_problems(registries: dict, cohort, generalise) -> list[str]:
    """Every problem of an extraction description against the registry schemas, at once, each naming the
    registry or variable (with a suggestion for a misspelt one)."""
    from catalogue.registries import REGISTRIES, load_schema

    out: list[str] = []
    for name, reg in registries.items():
        if name not in REGISTRIES:
            out.append(f"registries.{name}: unknown registry {name!r}{_did_you_mean(name, REGISTRIES)}; known: "
                       f"{', '.join(REGISTRIES)}")
            continue
        schema = load_schema(name)
        names = [n for n in schema.names if n != "hetu"]
        for var in reg.variables:
            if var not in schema.names:
                out.append(f"registries.{name}.variables: registry {name!r} has no variable {var!r}"
                           f"{_did_you_mean(var, names)}; its variables are {', '.join(names)}")
        if reg.period is not None and schema.event_date is None:
            out.append(f"registries.{name}.period: registry {name!r} has no event date, so it cannot have a period")
    if cohort is not None:
        if cohort.registry not in REGISTRIES:
            out.append(f"cohort.registry: cohort registry {cohort.registry!r} is unknown"
                       f"{_did_you_mean(cohort.registry, REGISTRIES)}")
        else:
            schema = load_schema(cohort.registry)
            for col in cohort.code_columns:
                if col not in schema.names or schema.column(col).type != "code":
                    out.append(f"cohort.code_columns: {col!r} is not a code column of {cohort.registry!r}")
            if schema.event_date is None:
                out.append(f"cohort.registry: cohort registry {cohort.registry!r} has no event date")
    if generalise.age_bands and "population" not in registries:
        out.append("generalise.age_bands: age bands need the population registry in the scope")
    if generalise.age_bands and cohort is None and generalise.age_reference_date is None:
        out.append("generalise.age_reference_date: age bands without a cohort need an age reference date")
    return out


def load_scope(path: str | Path) -> PermitScope:
    """Read and validate a scope file (JSON or YAML); errors name the file and the field."""
    return load_model(path, PermitScope, "permit scope", ScopeError)


def scope_json_schema() -> dict:
    """The published JSON Schema of the permit scope."""
    return PermitScope.model_json_schema()
