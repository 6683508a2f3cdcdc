"""The decision document: what was decided, on what data, under which conditions, at what fee, and how to
appeal, as HTML and PDF in Finnish, Swedish or English.

:func:`decision` gathers the facts from the case (its form, its frozen scope, its history) for a reader
who may see the case; :func:`render_html` fills ``permits/templates/decision.html``; :func:`render_pdf`
prints that HTML with WeasyPrint.  A case without a decision has no decision document.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from functools import cache

from jinja2 import Environment, PackageLoader, select_autoescape

from permits.application import ApplicationForm
from permits.lifecycle import DECIDED
from permits.scope import PermitScope
from permits.service import InvalidRequest, show
from toisio import i18n
from toisio.errors import Unavailable
from toisio.identity import Actor
from toisio.service import Service


@dataclass(frozen=True)
class Decision:
    """The facts a decision document states."""

    case_id: str
    kind: str
    title: str
    approved: bool
    decided_on: date | None
    decider: str | None
    presenter: str | None
    applicant_name: str
    organisation: str
    business_id: str
    purpose: str | None
    valid_from: date | None
    valid_until: date | None
    users: tuple[str, ...]
    scope: PermitScope | None
    fee: dict | None
    reasons: str | None


def decision(svc: Service, actor: Actor, case_id: str) -> Decision:
    """The decision on ``case_id``, for those who may see the case (the read is audited)."""
    view = show(svc, actor, case_id)
    decided = [e for e in view.history if e.event in ("approved", "rejected")]
    if view.state not in DECIDED or not decided:
        raise InvalidRequest(f"{case_id} is '{view.state.value}': it has no decision", code="no_decision")
    from permits.service import form_of, frozen_scope

    form: ApplicationForm = form_of(svc, case_id)
    last = decided[-1]
    presented = [e for e in view.history if e.event == "presented"]
    approved = last.event == "approved"
    scope = frozen_scope(svc, case_id) if approved and view.scope_sha256 else None
    return Decision(
        case_id=case_id, kind=view.kind, title=view.title, approved=approved,
        decided_on=view.decided_on or date.fromisoformat(last.ts[:10]), decider=last.actor,
        presenter=presented[-1].actor if presented else None,
        applicant_name=form.applicant.name, organisation=form.organisation.name,
        business_id=form.organisation.business_id, purpose=view.purpose, valid_from=view.valid_from,
        valid_until=view.valid_until, users=view.members, scope=scope, fee=view.fee,
        reasons=None if approved else last.payload.get("reasons"))


def N_(text: str) -> str:
    """Mark a string for extraction (translated when the document is rendered)."""
    return text


#: the codes a decision states, in words
WORDS = {
    "data_permit": N_("Data permit"), "data_request": N_("Data request"), "amendment": N_("Amendment"),
    "statistics": N_("Statistics"), "scientific_research": N_("Scientific research"),
    "development_and_innovation": N_("Development and innovation"), "education": N_("Education"),
    "knowledge_management": N_("Knowledge management"),
    "authority_steering_and_supervision": N_("Steering and supervision by authorities"),
    "authority_planning_and_reporting": N_("Planning and reporting by authorities"),
    "pseudonymised": N_("pseudonymised"), "aggregate": N_("aggregate"), "day": N_("day"), "month": N_("month"),
    "year": N_("year"), "code": N_("municipality code"), "wellbeing_county": N_("wellbeing services county"),
}


@cache
def _env(lang: str) -> Environment:
    env = Environment(loader=PackageLoader("permits", "templates"), autoescape=select_autoescape(["html"]),
                      extensions=["jinja2.ext.i18n"])
    translations = i18n.translations(lang)
    env.install_gettext_translations(translations, newstyle=True)
    env.filters["words"] = lambda code: translations.gettext(WORDS.get(code, code))
    return env


def render_html(d: Decision, lang: str = "fi") -> str:
    """The decision as a standalone HTML page."""
    lang = i18n.normalise(lang)
    return _env(lang).get_template("decision.html").render(d=d, lang=lang)


def render_pdf(d: Decision, lang: str = "fi") -> bytes:
    """The decision as a PDF (WeasyPrint; needs the Pango library from the system)."""
    try:
        from weasyprint import HTML
    except OSError as exc:  # the shared libraries are missing
        raise Unavailable(f"PDF printing is not available on this server ({exc}); the HTML decision is",
                          code="pdf_unavailable") from None
    return HTML(string=render_html(d, lang)).write_pdf()
