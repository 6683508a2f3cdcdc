"""Who is told what about a case's events: one table, as data (:data:`NOTIFY`), read by the notifier job
(:mod:`flows.notifications`) for each ``case.<event>`` entry of the audit chain.

Recipients are named by their relation to the case: ``applicant``, ``members`` (the named users),
``handler`` (the assigned handler, else every handler), ``deciders``, ``controllers`` (those answering for a
registry of the application) and ``other_party`` (for a message: the authority when the applicant or a named
user wrote, the applicant when the authority wrote a public message; an internal remark tells nobody
outside the authority).  Whoever caused the event is never told of it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import Connection, select

from permits.application import ApplicationForm
from permits.lifecycle import Event
from permits.models import CaseRow, MemberRow
from toisio.audit import AuditEvent
from toisio.identity import Role, UserRow
from toisio.notify import Message, params


def N_(text: str) -> str:
    """Mark a string for extraction (translated for each recipient)."""
    return text


@dataclass(frozen=True)
class Notice:
    """Whom an event tells, and what (English msgids with ``{case}``, ``{title}``, ``{reason}``, ``{actor}``
    and ``{text}`` placeholders)."""

    to: tuple[str, ...]
    title: str
    body: str


RECIPIENTS = ("applicant", "members", "handler", "deciders", "controllers", "other_party")

NOTIFY: dict[Event, Notice] = {
    Event.SUBMITTED: Notice(("handler",), N_("New application {case}"),
                            N_("The application {case} ({title}) was submitted and waits for its completeness "
                               "check.")),
    Event.RESUBMITTED: Notice(("handler",), N_("Application {case} was resubmitted"),
                              N_("The applicant resubmitted {case} ({title}) with the information asked for.")),
    Event.RETURNED: Notice(("applicant",), N_("Your application {case} was returned"),
                           N_("The handler returned {case} ({title}) for more information: {reason}")),
    Event.ESTIMATES_REQUESTED: Notice(("controllers",), N_("Your estimate is asked for {case}"),
                                      N_("The handler asks for your estimate of the cost and working days of the "
                                         "extraction for {case} ({title}).")),
    Event.ESTIMATE_RECORDED: Notice(("handler",), N_("An estimate was recorded for {case}"),
                                    N_("{actor} recorded an estimate for {case} ({title}).")),
    Event.ESTIMATE_SENT: Notice(("applicant",), N_("The estimate for {case} is ready"),
                                N_("Read the estimate and the extraction description of {case} ({title}) and accept "
                                   "them with the terms of use to go on.")),
    Event.ACCEPTED: Notice(("handler",), N_("The applicant accepted the estimate for {case}"),
                           N_("{case} ({title}) can be presented for decision.")),
    Event.PRESENTED: Notice(("deciders",), N_("{case} waits for your decision"),
                            N_("{actor} presented {case} ({title}) for decision.")),
    Event.SENT_BACK: Notice(("handler",), N_("{case} was sent back to you"),
                            N_("The decider sent {case} ({title}) back: {reason}")),
    Event.APPROVED: Notice(("applicant", "members"), N_("Decision on {case}: approved"),
                           N_("The application {case} ({title}) was approved. The decision document is on the "
                              "case's page.")),
    Event.REJECTED: Notice(("applicant",), N_("Decision on {case}: rejected"),
                           N_("The application {case} ({title}) was rejected. The decision document, with how to "
                              "appeal, is on the case's page.")),
    Event.ACTIVATED: Notice(("applicant", "members"), N_("The workspace of {case} is open"),
                            N_("The data of {case} ({title}) is in its workspace. Sign in to the portal for your "
                               "login link.")),
    Event.EXPIRED: Notice(("applicant", "members"), N_("Permit {case} has ended"),
                          N_("The permit {case} ({title}) reached its end date; its workspace is closed.")),
    Event.REVOKED: Notice(("applicant", "members"), N_("Permit {case} was revoked"),
                          N_("The permit {case} ({title}) was revoked: {reason}")),
    Event.DEADLINE_EXTENDED: Notice(("applicant",), N_("The decision on {case} will take longer"),
                                    N_("The decision deadline of {case} ({title}) was extended: {reason}")),
    Event.REMARKED: Notice(("other_party",), N_("New message on {case}"), N_("{actor} wrote on {case}: {text}")),
    Event.REMINDED: Notice(("applicant",), N_("Reminder about {case}"), N_("{case} ({title}): {reason}")),
}


def _users_with(conn: Connection, role: Role, registries: set[str] | None = None) -> list[str]:
    out = []
    for u in conn.execute(select(UserRow).where(UserRow.active)):
        if role.value in json.loads(u.roles) and (registries is None or registries & set(json.loads(u.registries))):
            out.append(u.user_id)
    return out


def _recipients(conn: Connection, who: str, row, entry: AuditEvent) -> list[str]:
    if who == "applicant":
        return [row.applicant_id]
    if who == "members":
        return [m.user_id for m in conn.execute(select(MemberRow).where(MemberRow.case_id == row.case_id,
                                                                        MemberRow.active))]
    if who == "handler":
        return [row.handler_id] if row.handler_id else _users_with(conn, Role.HANDLER)
    if who == "deciders":
        return _users_with(conn, Role.DECIDER)
    if who == "controllers":
        form = ApplicationForm.model_validate_json(row.form)
        asked = set(form.extraction.registries) if form.extraction else set()
        return _users_with(conn, Role.CONTROLLER, asked)
    if who == "other_party":
        by_applicant_side = entry.payload.get("role") in (Role.APPLICANT.value, Role.MEMBER.value)
        if by_applicant_side:
            return [row.handler_id] if row.handler_id else _users_with(conn, Role.HANDLER)
        return [row.applicant_id] if entry.payload.get("public", True) else []
    raise ValueError(f"unknown recipient {who!r}")


def messages_for(conn: Connection, entry: AuditEvent) -> list[Message]:
    """The messages one audit entry of a case causes (none for other entries)."""
    if not entry.action.startswith("case.") or not entry.subject.startswith("case:"):
        return []
    try:
        event = Event(entry.action.removeprefix("case."))
    except ValueError:
        return []
    notice = NOTIFY.get(event)
    if notice is None:
        return []
    case_id = entry.subject.removeprefix("case:")
    row = conn.execute(select(CaseRow).where(CaseRow.case_id == case_id)).first()
    if row is None:
        return []
    to = dict.fromkeys(u for who in notice.to for u in _recipients(conn, who, row, entry) if u and u != entry.actor)
    values = params(case=case_id, title=row.title, actor=entry.actor,
                    reason=entry.payload.get("reason") or entry.payload.get("reasons") or "",
                    text=entry.payload.get("text") or "")
    return [Message(user_id=u, key=f"{entry.seq}:{u}", topic=entry.action, subject=entry.subject,
                    title=notice.title, body=notice.body, params=values, link=f"/cases/{case_id}") for u in to]
