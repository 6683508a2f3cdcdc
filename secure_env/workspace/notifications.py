"""Who is told what about an import request's events: one table, as data (:data:`NOTIFY`), read by the notifier
job (:mod:`flows.notifications`) for each ``import.<event>`` entry of the audit chain.

Recipients: ``stewards`` (every data steward who may decide the request: an output checker who neither made it
nor is named on its permit) and ``requester``.  Whoever caused the event is never told of it.
"""

from __future__ import annotations

from sqlalchemy import Connection

from secure_env.workspace import ingress
from toisio.audit import AuditEvent
from toisio.identity import Role, actors_with_role
from toisio.notify import N_, Message, Notice, params

RECIPIENTS = ("stewards", "requester")

NOTIFY: dict[str, Notice] = {
    "import.requested": Notice(("stewards",), N_("Import request {request} waits for a decision"),
                               N_("{actor} asked for a file to be imported into the workspace of permit {permit} "
                                  "({request}).")),
    "import.approved": Notice(("requester",), N_("Your import request {request} was approved"),
                              N_("The file of {request} is in the workspace's imports folder, read-only.")),
    "import.rejected": Notice(("requester",), N_("Your import request {request} was rejected"),
                              N_("{actor} rejected {request}: see the request for the reason.")),
}


def _stewards(conn: Connection, req: ingress.ImportRequest, users: tuple[str, ...]) -> list[str]:
    def relations(a) -> frozenset[str]:
        return frozenset(({ingress.NAMED} if a.user_id in users else set()) |
                         ({ingress.REQUESTER} if a.user_id == req.requester else set()))

    return [a.user_id for a in actors_with_role(conn, Role.OUTPUT_CHECKER)
            if ingress.IMPORTS.can("decide", a, relations(a))]


def messages_for(conn: Connection, svc, entry: AuditEvent) -> list[Message]:
    """The messages one audit entry of an import request causes (none for other entries)."""
    from toisio.audit import events

    notice = NOTIFY.get(entry.action)
    if notice is None or not entry.subject.startswith("import:"):
        return []
    req = ingress._fold(events(conn, subject=entry.subject))
    if req is None:
        return []
    from permits.service import permit_access

    users = permit_access(svc, req.permit_id).users
    found: list[str] = []
    for who in notice.to:
        if who == "stewards":
            found += _stewards(conn, req, users)
        elif who == "requester":
            found.append(req.requester)
        else:
            raise ValueError(f"unknown recipient {who!r}")
    to = dict.fromkeys(u for u in found if u and u != entry.actor)
    values = params(request=req.import_id, permit=req.permit_id, actor=entry.actor)
    return [Message(user_id=u, key=f"{entry.seq}:{u}", topic=entry.action, subject=entry.subject,
                    title=notice.title, body=notice.body, params=values, link="/imports") for u in to]
