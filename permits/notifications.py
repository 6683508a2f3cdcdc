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
from datetime import date

from sqlalchemy import Connection, select

from permits.application import ApplicationForm
from permits.lifecycle import Event
from permits.models import CaseRow, MemberRow
from toisio.audit import AuditEvent
from toisio.identity import Role, UserRow
from toisio.notify import N_, Message, Notice, params

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


# ---------------------------------------------------------------- scheduled messages

#: how many days before a controller's estimate is due they are reminded (and every day after it)
ESTIMATE_REMINDER_DAYS = 3


def digest_messages(conn: Connection, today: date) -> list[Message]:
    """Each handler's deadline digest for ``today``: the cases nearing (14 days) or past a deadline that they
    handle, or that nobody handles yet; one message per handler and day."""
    from permits import deadlines
    from permits.service import _deadline_of, open_states

    rows = list(conn.execute(select(CaseRow).where(CaseRow.state.in_(open_states()))))
    items = []
    for row in rows:
        due, kind = _deadline_of(conn, row)
        status = deadlines.status(due, today)
        if status in ("near", "overdue"):
            items.append((due, row.case_id, row.handler_id, f"{row.case_id} ({row.state}): {kind} {due} – {status}"))
    out = []
    for handler in _users_with(conn, Role.HANDLER):
        mine = [line for _due, _c, h, line in sorted(items, key=lambda i: (i[0], i[1])) if h in (handler, None)]
        if mine:
            out.append(Message(user_id=handler, key=f"digest:{today.isoformat()}:{handler}", topic="case.digest",
                               subject="cases", title=N_("Your deadlines on {day}"),
                               body=N_("Cases nearing or past a deadline:\n{cases}"),
                               params=params(day=today.isoformat(), cases="\n".join(mine)), link="/"))
    return out


def estimate_reminders(conn: Connection, today: date) -> list[Message]:
    """A reminder to each controller whose estimate is due within :data:`ESTIMATE_REMINDER_DAYS` days or late;
    one per estimate, controller and day."""
    from datetime import timedelta

    from permits.models import EstimateRow

    out = []
    soon = today + timedelta(days=ESTIMATE_REMINDER_DAYS)
    for e in conn.execute(select(EstimateRow, CaseRow.title, CaseRow.state).join(
            CaseRow, CaseRow.case_id == EstimateRow.case_id).where(
            EstimateRow.recorded_on.is_(None), EstimateRow.due_on <= soon)):
        if e.state != Event.ESTIMATES_REQUESTED.value:
            continue
        late = e.due_on < today
        for user in _users_with(conn, Role.CONTROLLER, {e.registry}):
            out.append(Message(
                user_id=user, key=f"estimate-reminder:{today.isoformat()}:{e.case_id}:{e.registry}:{user}",
                topic="case.estimate_reminder", subject=f"case:{e.case_id}",
                title=N_("Your estimate for {case} is late") if late else
                N_("Your estimate for {case} is due on {due}"),
                body=N_("The estimate of {registry} for {case} ({title}) was due on {due}.") if late else
                N_("The estimate of {registry} for {case} ({title}) is due on {due}."),
                params=params(case=e.case_id, registry=e.registry, title=e.title, due=e.due_on.isoformat()),
                link=f"/cases/{e.case_id}"))
    return out
