"""Who is told what about an output request's events: one table, as data (:data:`NOTIFY`), read by the
notifier job (:mod:`flows.notifications`) for each ``output.<event>`` entry of the audit chain.

Recipients: ``checkers`` (every output checker who may review the request: not its author, not named on its
permit), ``requester`` and ``holder`` (the permit's holder).  Whoever caused the event is never told of it.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from permits.service import permit_access
from secure_env.airlock import rules
from secure_env.airlock.models import OutputRequestRow
from toisio.audit import AuditEvent
from toisio.identity import Role, actors_with_role
from toisio.notify import N_, Message, Notice, params

RECIPIENTS = ("checkers", "requester", "holder")

NOTIFY: dict[str, Notice] = {
    "output.submit": Notice(("checkers",), N_("Output request {request} waits for review"),
                            N_("{actor} asked for outputs of permit {permit} to be released ({request}).")),
    "output.resubmit": Notice(("checkers",), N_("Output request {request} was resubmitted"),
                              N_("{actor} resubmitted {request} of permit {permit} after changes.")),
    "output.return": Notice(("requester",), N_("Your output request {request} was returned"),
                            N_("The checkers returned {request} with their comments: see the request's page.")),
    "output.reject": Notice(("requester",), N_("Your output request {request} was rejected"),
                            N_("The checkers rejected {request}: see the request's page for their comments.")),
    "output.approve": Notice(("requester",), N_("Your output request {request} was approved"),
                             N_("{request} was approved and will be released.")),
    "output.release": Notice(("requester", "holder"), N_("Outputs of {request} were released"),
                             N_("The files of {request} (permit {permit}) can be downloaded from the Outputs page.")),
}


def _checkers(conn: Connection, row, access) -> list[str]:
    return [a.user_id for a in actors_with_role(conn, Role.OUTPUT_CHECKER) if rules.OUTPUTS.can(
        "review", a, rules.relations(a, requester=row.requester, permit_users=access.users, holder=access.holder))]


def messages_for(conn: Connection, svc, entry: AuditEvent) -> list[Message]:
    """The messages one audit entry of an output request causes (none for other entries)."""
    notice = NOTIFY.get(entry.action)
    if notice is None or not entry.subject.startswith("output:"):
        return []
    request_id = entry.subject.removeprefix("output:")
    row = conn.execute(select(OutputRequestRow).where(OutputRequestRow.request_id == request_id)).first()
    if row is None:
        return []
    access = permit_access(svc, row.permit_id)
    found: list[str] = []
    for who in notice.to:
        if who == "checkers":
            found += _checkers(conn, row, access)
        elif who == "requester":
            found.append(row.requester)
        elif who == "holder":
            found.append(access.holder)
        else:
            raise ValueError(f"unknown recipient {who!r}")
    to = dict.fromkeys(u for u in found if u and u != entry.actor)
    values = params(request=request_id, permit=row.permit_id, actor=entry.actor)
    return [Message(user_id=u, key=f"{entry.seq}:{u}", topic=entry.action, subject=entry.subject,
                    title=notice.title, body=notice.body, params=values, link=f"/outputs/{request_id}") for u in to]
