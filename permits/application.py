"""Application forms: data permit, data request and amendment, as JSON/YAML documents.

An applicant can prepare a form offline against the published JSON Schema
(``toisio permits schema``) and submit it with ``toisio permits submit FILE``.
Each field is validated with a message that names it; the rules that relate
fields to each other are in :mod:`permits.rules`.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError
from stdnum import exceptions as stdnum_exc
from stdnum.fi import ytunnus

from permits.scope import Cohort, Generalisation, Period, RegistryScope
from toisio.documents import load_model
from toisio.text import MAX_TEXT, check_unicode

NonEmpty = Annotated[str, Field(min_length=1)]


class Purpose(StrEnum):
    """Permitted purposes of the Secondary Use Act 552/2019, §2."""

    STATISTICS = "statistics"
    SCIENTIFIC_RESEARCH = "scientific_research"
    DEVELOPMENT_AND_INNOVATION = "development_and_innovation"
    EDUCATION = "education"
    KNOWLEDGE_MANAGEMENT = "knowledge_management"
    AUTHORITY_STEERING_AND_SUPERVISION = "authority_steering_and_supervision"
    AUTHORITY_PLANNING_AND_REPORTING = "authority_planning_and_reporting"


class Kind(StrEnum):
    DATA_PERMIT = "data_permit"
    DATA_REQUEST = "data_request"
    AMENDMENT = "amendment"


class FeeCategory(StrEnum):
    STANDARD = "standard"
    LIMITED = "limited"
    THESIS = "thesis"
    EXTENSIVE = "extensive"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=MAX_TEXT)

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data):
        return check_unicode(data)


class Person(_Model):
    name: NonEmpty
    email: NonEmpty
    affiliation: str = ""
    user_id: NonEmpty

    @field_validator("email")
    @classmethod
    def _email(cls, v: str) -> str:
        if "@" not in v or v.startswith("@") or v.endswith("@"):
            raise ValueError(f"{v!r} is not an e-mail address")
        return v


class Organisation(_Model):
    name: NonEmpty
    business_id: NonEmpty
    country: str = "FI"

    @field_validator("business_id")
    @classmethod
    def _ytunnus(cls, v: str) -> str:
        try:
            return ytunnus.validate(v)
        except stdnum_exc.ValidationError as exc:
            raise ValueError(f"business ID (Y-tunnus) {v!r} is not valid: {exc}") from None


class Billing(_Model):
    address: NonEmpty
    reference: str = ""
    e_invoice_address: str = ""


class Attachment(_Model):
    """A document stored with its checksum (the content lives in the attachment store)."""

    filename: NonEmpty
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Processor(_Model):
    """A person who will process the data, with their signed confidentiality undertaking."""

    name: NonEmpty
    user_id: NonEmpty
    organisation: NonEmpty
    confidentiality_undertaking_signed: date | None = None


#: what a data request's table may show (min, max and mode are one person's value: not offered)
TABULATION_STATISTICS = ("count", "rate", "sum", "mean", "median", "q10", "q25", "q75", "q90", "std", "var")


class Tabulation(_Model):
    """One table of a data request's tabulation plan: counts of persons, a rate per population, or a statistic of
    a value, by row and column variables, optionally by time period and for a subset (``where``)."""

    registry: NonEmpty
    rows: tuple[str, ...] = Field(min_length=1, max_length=4)
    columns: tuple[str, ...] = Field((), max_length=4)
    statistic: Literal["count", "rate", "sum", "mean", "median", "q10", "q25", "q75", "q90", "std", "var"] = "count"
    value: str | None = Field(None, description="the variable a sum, mean, quantile, std or var summarises")
    where: dict[str, str | int | float | bool] = Field({}, max_length=10,
                                                       description="only the rows whose variables equal these values")
    period: Literal["year", "quarter", "month"] | None = Field(None, description="a column per time period of date")
    date: str | None = Field(None, description="the date variable the period is taken from")
    per: int | None = Field(None, ge=1, le=1_000_000, description="a rate per this many persons (default 1,000)")
    privacy: Literal["disclosure_control", "differential_privacy"] = Field(
        "disclosure_control", description="disclosure_control: the checks and suppression, then two reviewers; "
                                          "differential_privacy: persons counted with noise by the service's DP query "
                                          "service, charged to the permit's privacy budget, then two reviewers")
    epsilon: float | None = Field(None, gt=0, le=10, description="differential_privacy: this table's share of the "
                                                                 "permit's privacy budget")

    @model_validator(mode="after")
    def _consistent(self) -> Tabulation:
        if self.privacy == "differential_privacy":
            if self.statistic != "count" or len(self.rows) != 1 or len(self.columns) > 1 or self.period:
                raise ValueError("differential privacy is offered for counts of persons by one row variable and at "
                                 "most one column variable (no period): use disclosure_control for other tables")
            if self.epsilon is None:
                raise ValueError("a differentially private table needs epsilon (its share of the privacy budget)")
        elif self.epsilon is not None:
            raise ValueError("epsilon applies to privacy: differential_privacy only")
        if self.statistic in ("count", "rate") and self.value is not None:
            raise ValueError(f"a {self.statistic} table takes no value")
        if self.statistic not in ("count", "rate") and not self.value:
            raise ValueError(f"a {self.statistic} table needs value (the variable it summarises)")
        if (self.period is None) != (self.date is None):
            raise ValueError("period and date go together: the date variable and the period to group it by")
        if self.per is not None and self.statistic != "rate":
            raise ValueError("per applies to a rate only")
        if self.statistic == "rate" and self.registry == "population":
            raise ValueError("a rate counts a registry's persons per population: choose a registry other than "
                             "population")
        if len({*self.rows, *self.columns}) < len(self.rows) + len(self.columns):
            raise ValueError("each variable is on the rows or the columns once")
        return self


class Extraction(_Model):
    """The applicant's extraction description: per registry variables and periods, target group, cohort."""

    registries: dict[str, RegistryScope] = Field(min_length=1)
    target_group: NonEmpty
    controls_description: str = ""
    cohort: Cohort | None = None
    generalise: Generalisation = Generalisation()


#: the error type of a field that the application's kind needs (its ``ctx["fields"]`` names them)
MISSING_FOR_KIND = "missing_for_kind"


class AmendmentChange(_Model):
    """What an amendment changes.  Only validity and named users can change; anything else needs a new
    application."""

    new_valid_until: date | None = None
    add_users: tuple[Processor, ...] = ()
    remove_users: tuple[str, ...] = ()


class ApplicationForm(_Model):
    """One application: a data permit, a data request or an amendment of a permit."""

    schema_version: Literal[1] = 1
    kind: Kind
    title: NonEmpty
    applicant: Person
    organisation: Organisation
    billing: Billing
    purpose: Purpose | None = None
    fee_category: FeeCategory = FeeCategory.STANDARD
    research_plan: Attachment | None = None
    ethics_statement_required: bool = False
    ethics_statement: Attachment | None = None
    extraction: Extraction | None = None
    tabulation_plan: tuple[Tabulation, ...] = ()
    minimisation_justification: str = ""
    pseudonymised_data_justification: str = ""
    processors: tuple[Processor, ...] = ()
    processing_environment: str = "toisio-workspace"
    requested_validity: Period | None = None
    # Amendments only
    permit_id: str | None = None
    change: AmendmentChange | None = None
    # Anything an amendment must not carry (a changed purpose or data) is refused by the rules.

    @model_validator(mode="after")
    def _kind_fields(self) -> ApplicationForm:
        # each error names the fields it is about (``ctx["fields"]``), so that a form can show it at the field
        if self.kind is Kind.AMENDMENT:
            missing = [f for f in ("permit_id", "change") if not getattr(self, f)]
            if missing:
                raise PydanticCustomError(MISSING_FOR_KIND, "an amendment names the permit_id it amends and the "
                                          "change it asks for (missing: {fields})",
                                          {"kind": "an amendment", "fields": ", ".join(missing)})
        else:
            missing = [f for f in ("purpose", "research_plan", "extraction", "requested_validity")
                       if getattr(self, f) is None]
            if missing:
                raise PydanticCustomError(MISSING_FOR_KIND, "{kind} needs: {fields}",
                                          {"kind": "a " + self.kind.value.replace("_", " "),
                                           "fields": ", ".join(missing)})
            if not self.minimisation_justification.strip():
                raise PydanticCustomError(MISSING_FOR_KIND, "{fields}: say why each requested variable is needed",
                                          {"fields": "minimisation_justification"})
        return self


def load_form(path: str | Path) -> ApplicationForm:
    """Read and validate an application file (JSON or YAML); errors name the file."""
    return load_model(path, ApplicationForm, "application")


def form_json_schema() -> dict:
    """The published JSON Schema of application files."""
    return ApplicationForm.model_json_schema()
