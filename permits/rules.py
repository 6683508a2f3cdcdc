"""The application rules, each a pure function in one table, each refusing with a clear message.

:data:`RULES` lists every rule with its code and what it enforces; :func:`check_form`
runs all that apply and raises :class:`RuleViolation` for the first one broken
(:func:`violations` returns them all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from permits.application import ApplicationForm, Kind, Purpose
from toisio.errors import Invalid


class RuleViolation(Invalid):
    """An application breaks a rule; ``code`` is stable for API clients."""

    def __init__(self, code: str, message: str):
        super().__init__(message, code=code)


@dataclass(frozen=True)
class Rule:
    code: str
    description: str
    check: Callable[[ApplicationForm], str | None]  # returns the refusal message, or None


def _development_aggregate_only(f: ApplicationForm) -> str | None:
    if f.kind is Kind.DATA_PERMIT and f.purpose is Purpose.DEVELOPMENT_AND_INNOVATION:
        return ("development and innovation gets aggregate statistics only: apply for a data request, "
                "not a data permit")
    return None


def _pseudonymised_needs_justification(f: ApplicationForm) -> str | None:
    if f.kind is Kind.DATA_PERMIT and len(f.pseudonymised_data_justification.strip()) < 20:
        return ("anonymised or aggregate data is the default: a data permit for pseudonymised data needs a "
                "written justification (pseudonymised_data_justification) of why aggregate data cannot serve")
    return None


def _ethics_statement(f: ApplicationForm) -> str | None:
    if f.ethics_statement_required and f.ethics_statement is None:
        return "the research plan needs an ethics statement: attach ethics_statement"
    return None


def _processors_undertakings(f: ApplicationForm) -> str | None:
    missing = [p.name for p in f.processors if p.confidentiality_undertaking_signed is None]
    if missing:
        return f"every processor needs a signed confidentiality undertaking; missing for: {', '.join(missing)}"
    return None


def _permit_has_processors(f: ApplicationForm) -> str | None:
    if f.kind is Kind.DATA_PERMIT and not f.processors:
        return "a data permit names the persons who will process the data (processors)"
    return None


def _data_request_has_tabulation(f: ApplicationForm) -> str | None:
    if f.kind is Kind.DATA_REQUEST and not f.tabulation_plan:
        return "a data request gives statistics only: describe the tables in tabulation_plan"
    return None


def _data_request_no_rows(f: ApplicationForm) -> str | None:
    if f.kind is Kind.DATA_REQUEST and f.extraction and f.extraction.cohort and f.processors:
        return "a data request delivers no rows, so it names no processors of individual-level data"
    return None


def _amendment_only_validity_or_users(f: ApplicationForm) -> str | None:
    if f.kind is not Kind.AMENDMENT:
        return None
    changed = [name for name in ("purpose", "extraction", "research_plan", "tabulation_plan")
               if getattr(f, name)]
    if changed:
        return (f"an amendment can only extend the validity or add or remove named users; a change to "
                f"{', '.join(changed)} needs a new permit application")
    c = f.change
    if c is None or (c.new_valid_until is None and not c.add_users and not c.remove_users):
        return "the amendment asks for no change (new_valid_until, add_users or remove_users)"
    return None


RULES: tuple[Rule, ...] = (
    Rule("development_aggregate_only", "development and innovation gets aggregate statistics only",
         _development_aggregate_only),
    Rule("pseudonymised_needs_justification", "pseudonymised data needs a justification why aggregate cannot serve",
         _pseudonymised_needs_justification),
    Rule("ethics_statement_required", "an ethics statement where the plan needs one", _ethics_statement),
    Rule("processors_need_undertakings", "each processor has a confidentiality undertaking",
         _processors_undertakings),
    Rule("permit_names_processors", "a data permit names its processors", _permit_has_processors),
    Rule("data_request_needs_tabulation", "a data request has a tabulation plan", _data_request_has_tabulation),
    Rule("data_request_no_processors", "a data request names no processors of rows", _data_request_no_rows),
    Rule("amendment_validity_or_users_only", "amendments extend validity or change named users only",
         _amendment_only_validity_or_users),
)


def violations(form: ApplicationForm) -> list[RuleViolation]:
    """Every rule the form breaks."""
    out = []
    for rule in RULES:
        message = rule.check(form)
        if message:
            out.append(RuleViolation(rule.code, message))
    return out


def check_form(form: ApplicationForm) -> None:
    """Raise the first :class:`RuleViolation`, if any."""
    found = violations(form)
    if found:
        raise found[0]
