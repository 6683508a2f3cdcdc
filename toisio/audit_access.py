"""Who may read the audit log through the service, and the reads themselves (search and verification).

The log is read by auditors (search, verify) and by operators on the service host (verify).  Every
search is itself recorded in the log.  The stages' own checks of their state against the chain
(cases, users and tokens) are added by the composition root (:mod:`toisio.app.auditing`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from toisio import audit
from toisio.audit import AuditEvent, AuditEventRow, VerifyResult
from toisio.authz import Table, rule
from toisio.identity import Actor, Role
from toisio.service import Service

AUDIT = Table("audit", {
    "search": rule("search the audit log", {Role.AUDITOR}),
    "verify": rule("verify the audit chain", {Role.AUDITOR, Role.OPERATOR}),
    "reanchor": rule("re-anchor the chain's recorded head after a crash", {Role.OPERATOR}),
}, {})

check_can_search, can_search = AUDIT.pair("search")
check_can_verify, can_verify = AUDIT.pair("verify")
check_can_reanchor, can_reanchor = AUDIT.pair("reanchor")


@dataclass(frozen=True)
class Page:
    """One page of audit events, newest first, and how many matched in all."""

    total: int
    events: tuple[AuditEvent, ...]


def search(svc: Service, actor: Actor, *, subject: str | None = None, action: str | None = None,
           by: str | None = None, since: str | None = None, limit: int = 100, offset: int = 0) -> Page:
    """Audit events matching every given filter (subject or action as a prefix, ``by`` the acting user,
    ``since`` an ISO timestamp), newest first."""
    check_can_search(actor)
    q = select(AuditEventRow)
    if subject:
        q = q.where(AuditEventRow.subject.startswith(subject, autoescape=True))
    if action:
        q = q.where(AuditEventRow.action.startswith(action, autoescape=True))
    if by:
        q = q.where(AuditEventRow.actor == by)
    if since:
        q = q.where(AuditEventRow.ts >= since)
    with svc.engine.begin() as conn:
        total = conn.execute(select(func.count()).select_from(q.subquery())).scalar() or 0
        rows = conn.execute(q.order_by(AuditEventRow.seq.desc()).limit(limit).offset(offset)).all()
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="audit.searched", subject="audit",
                     payload={"subject": subject, "action": action, "by": by, "since": since, "matched": total})
    return Page(total, tuple(audit._to_event(r) for r in rows))


def verify_chain(svc: Service, actor: Actor, *, anchor: tuple[int, str] | None = None) -> VerifyResult:
    """The whole chain checked against its head (or ``anchor``)."""
    check_can_verify(actor)
    with svc.engine.connect() as conn:
        return audit.verify(conn, svc.audit_key, anchor=anchor)


def reanchor(svc: Service, actor: Actor, *, recorded_seq: int, reason: str) -> audit.Reanchored:
    """An operator on the service host records the database's chain as the head again after a crash left the
    recorded head ahead of it (:func:`toisio.audit.reanchor`, which says what it refuses)."""
    check_can_reanchor(actor)
    return audit.reanchor(svc.engine, svc.audit_key, actor=actor.user_id, recorded_seq=recorded_seq, reason=reason)
