"""The dataset catalogue: what a researcher can browse before applying.

Each entry joins a registry's extract contract (:mod:`catalogue.registries`: controller, variables,
their types and code systems) with what the contract does not say (``datasets.yaml``: titles and
descriptions in Finnish, Swedish and English, coverage period, typical size, the purposes it may serve).
The variables are read from the contract itself, so the catalogue shows exactly what the pipeline
checks.  :mod:`catalogue.dcat` exports the same entries as HealthDCAT-AP.
"""

from __future__ import annotations

from datetime import date
from functools import cache
from importlib import resources
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from catalogue.codes import CODE_SYSTEMS
from catalogue.registries import REGISTRIES, load_schema
from toisio.errors import NotFoundError

Lang = Literal["fi", "sv", "en"]
LANGS: tuple[Lang, ...] = ("fi", "sv", "en")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Texts(_Frozen):
    """One text in each of the service's languages."""

    fi: str
    sv: str
    en: str

    def get(self, lang: str) -> str:
        return getattr(self, lang) if lang in LANGS else self.en


class Keywords(_Frozen):
    fi: tuple[str, ...]
    sv: tuple[str, ...]
    en: tuple[str, ...]


class Coverage(_Frozen):
    start: date
    end: date


class Variable(_Frozen):
    """One variable a dataset offers, from its extract contract."""

    name: str
    type: str
    nullable: bool
    code_system: str | None = None
    code_system_description: str | None = None
    description: str = ""
    direct_identifier: bool = Field(False, description="replaced by a per-permit pseudonym before delivery")


class Dataset(_Frozen):
    """One registry as the catalogue describes it."""

    id: str
    title: Texts
    description: Texts
    keywords: Keywords
    controller: str
    controller_email: str
    coverage: Coverage
    records: int
    individuals: int
    ages: tuple[int, int]
    health_categories: tuple[str, ...]
    purposes: tuple[str, ...]
    variables: tuple[Variable, ...]
    event_date: str | None = Field(None, description="the variable a permit's period applies to (none: no period)")

    @property
    def variable_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variables)


class Hdab(_Frozen):
    """The health data access body that publishes the catalogue (this service)."""

    name: str
    email: str
    page: str
    legislation: str
    retention_years: int


class _Entry(_Frozen):
    title: Texts
    description: Texts
    keywords: Keywords
    coverage: Coverage
    records: int
    individuals: int
    ages: tuple[int, int]
    health_categories: tuple[str, ...]
    purposes: tuple[str, ...]
    email: str


class _File(_Frozen):
    hdab: Hdab
    datasets: dict[str, _Entry]


class UnknownDataset(NotFoundError):
    code = "unknown_dataset"


@cache
def _file() -> _File:
    text = resources.files("catalogue").joinpath("datasets.yaml").read_text("utf-8")
    return _File.model_validate(yaml.safe_load(text))


def hdab() -> Hdab:
    return _file().hdab


def _variables(registry: str) -> tuple[Variable, ...]:
    out = []
    for c in load_schema(registry).columns:
        systems = c.code_system.split("|") if c.code_system else []
        out.append(Variable(
            name=c.name, type=c.type, nullable=c.nullable, code_system=c.code_system,
            code_system_description="; ".join(CODE_SYSTEMS[s].description or s for s in systems) or None,
            description=c.description, direct_identifier=c.type == "hetu"))
    return tuple(out)


@cache
def datasets() -> tuple[Dataset, ...]:
    """Every dataset in the catalogue, in the registries' order."""
    f = _file()
    out = []
    for registry in REGISTRIES:
        e = f.datasets[registry]
        out.append(Dataset(id=registry, title=e.title, description=e.description, keywords=e.keywords,
                           controller=load_schema(registry).controller, controller_email=e.email,
                           coverage=e.coverage, records=e.records, individuals=e.individuals, ages=e.ages,
                           health_categories=e.health_categories, purposes=e.purposes,
                           variables=_variables(registry), event_date=load_schema(registry).event_date))
    return tuple(out)


def dataset(dataset_id: str) -> Dataset:
    """One dataset by its id (the registry's name)."""
    for d in datasets():
        if d.id == dataset_id:
            return d
    raise UnknownDataset(f"no dataset {dataset_id!r} in the catalogue; known: {', '.join(REGISTRIES)}")


def search(text: str = "", *, purpose: str | None = None, lang: str = "en") -> tuple[Dataset, ...]:
    """Datasets whose title, description, keywords or variables mention ``text`` (any language), and
    that may serve ``purpose`` when given."""
    needle = text.strip().casefold()
    out = []
    for d in datasets():
        if purpose and purpose not in d.purposes:
            continue
        hay = " ".join([d.id, d.controller, *(d.title.get(x) for x in LANGS), *(d.description.get(x) for x in LANGS),
                        *d.keywords.fi, *d.keywords.sv, *d.keywords.en, *d.variable_names]).casefold()
        if needle in hay:
            out.append(d)
    return tuple(out)
