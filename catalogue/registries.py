"""Registry schemas: the contract with each data controller, one YAML file per registry.

Each file names the CSV layout (delimiter, decimal mark, date format), the
event-date column the permit's period applies to, and every column with its
type, code system and whether it may be empty.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from catalogue.codes import CODE_SYSTEMS

ColumnType = Literal["hetu", "date", "int", "decimal", "code", "string"]


class Column(BaseModel):
    """One column of a registry extract."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    type: ColumnType
    nullable: bool = False
    code_system: str | None = None
    system_column: str | None = None  # for columns whose code system is named in another column
    description: str = ""

    @model_validator(mode="after")
    def _code_system_known(self) -> Column:
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


REGISTRIES = ("population", "hilmo", "avohilmo", "kela_purchases", "causes_of_death", "cancer")


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
