"""Registry schemas: the contract with each data controller, one YAML file per registry.

Each file names the extract's layout, the event-date column the permit's period applies to, and every
column with its type, code system and whether it may be empty.  Two layouts exist:

- ``csv`` (the registries' extracts): delimiter, decimal mark and date format; the columns in file order;
- ``fhir_ndjson`` (Kanta's FHIR R4 bulk data): ``file`` names the export's directory (its ``manifest.json``
  lists the NDJSON files per resource type), ``resource`` the resource type read, and each column the
  element it is read from (``fhir``, see :mod:`pseudonymise.fhir`).  The identity code of a resource other
  than Patient comes from its ``subject``: a reference to a Patient of the same export, or a logical
  reference by the identity code itself.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from catalogue.codes import CODE_SYSTEMS

ColumnType = Literal["hetu", "date", "int", "decimal", "code", "string", "reference"]
#: ``reference``: a FHIR resource id (``Encounter/123``); delivered keyed-hashed with the permit's key, like the
#: identity code, so that references between the delivered datasets still join.
Layout = Literal["csv", "fhir_ndjson"]


class Column(BaseModel):
    """One column of a registry extract."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: ColumnType
    nullable: bool = False
    code_system: str | None = None
    system_column: str | None = None  # for columns whose code system is named in another column
    fhir: str | None = None  # fhir_ndjson layout: the element path read (see pseudonymise.fhir)
    target: str | None = None  # a reference column: the resource type it refers to
    description: str = ""

    @model_validator(mode="after")
    def _code_system_known(self) -> Column:
        if (self.type == "reference") != (self.target is not None):
            raise ValueError(f"column {self.name}: a reference column names its target resource type, and only it")
        if self.type == "code":
            if not self.code_system:
                raise ValueError(f"column {self.name}: a code column needs a code_system")
            for system in self.code_system.split("|"):
                if system not in CODE_SYSTEMS:
                    raise ValueError(f"column {self.name}: unknown code system {system!r}")
        return self


class RegistrySchema(BaseModel):
    """The layout and columns of one registry extract."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    registry: str
    controller: str
    format: Layout = "csv"
    resource: str | None = None  # fhir_ndjson: the FHIR resource type
    file: str
    delimiter: str = ","
    decimal: str = "."
    date_format: str = "yyyy-MM-dd"
    event_date: str | None = None
    end_date: str | None = None
    columns: tuple[Column, ...]

    @field_validator("delimiter")
    @classmethod
    def _one_char(cls, v: str) -> str:
        if len(v) != 1:
            raise ValueError("delimiter must be one character")
        return v

    @model_validator(mode="after")
    def _columns_consistent(self) -> RegistrySchema:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.registry}: duplicate column names")
        if names[0] != "hetu" or self.columns[0].type != "hetu":
            raise ValueError(f"{self.registry}: the first column must be the identity code 'hetu'")
        for ref in (self.event_date, self.end_date):
            if ref is not None and ref not in names:
                raise ValueError(f"{self.registry}: date column {ref!r} is not a column")
        fhir = self.format == "fhir_ndjson"
        if fhir != (self.resource is not None):
            raise ValueError(f"{self.registry}: a resource type goes with the fhir_ndjson layout, and only with it")
        for c in self.columns:
            if fhir and c.fhir is None and not (c.type == "hetu" and self.resource != "Patient"):
                raise ValueError(f"{self.registry}: column {c.name} needs the FHIR element it is read from")
            if not fhir and (c.fhir is not None or c.type == "reference"):
                raise ValueError(f"{self.registry}: column {c.name}: FHIR elements and references are for the "
                                 f"fhir_ndjson layout")
        return self

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def header(self) -> str:
        return self.delimiter.join(self.names)


CSV_REGISTRIES = ("population", "hilmo", "avohilmo", "kela_purchases", "causes_of_death", "cancer")
FHIR_REGISTRIES = ("kanta_patient", "kanta_condition", "kanta_encounter", "kanta_dispense")
REGISTRIES = CSV_REGISTRIES + FHIR_REGISTRIES


@cache
def load_schema(registry: str) -> RegistrySchema:
    """The schema of ``registry`` (one of :data:`REGISTRIES`)."""
    if registry not in REGISTRIES:
        raise KeyError(f"unknown registry {registry!r}; known: {', '.join(REGISTRIES)}")
    text = resources.files("catalogue.schemas").joinpath(f"{registry}.yaml").read_text("utf-8")
    return RegistrySchema.model_validate(yaml.safe_load(text))


def all_schemas() -> dict[str, RegistrySchema]:
    """Every registry schema, by registry name."""
    return {r: load_schema(r) for r in REGISTRIES}
