"""The notifier: reads the audit chain after the last entry it handled, queues the messages each stage's table
says its events cause, then sends the e-mails (:mod:`toisio.notify`).

It is a job of the service (the worker runs it every minute; ``toisio notify`` runs it once).  Everything it
does is idempotent against the database: the cursor advances in the same transaction as the messages are
queued, each message has a unique key (the audit entry and the recipient), and an e-mail is marked sent as it
leaves.  A run killed half-way is continued by the next one, which sends nothing twice that it had marked.
An audit entry whose hash does not match its content (a forged row) notifies nobody, and is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select

from permits import notifications as case_notices
from secure_env.airlock import notifications as output_notices
from secure_env.workspace import notifications as import_notices
from toisio import audit, notify
from toisio.notify import NotifyCursorRow
from toisio.service import Service

log = logging.getLogger("toisio.notifier")
CURSOR = "notifier"


@dataclass(frozen=True)
class NotifierReport:
    entries: int
    queued: int
    skipped_forged: int
    sent: int
    failed: int


def queue_new(svc: Service, *, batch: int = 1000) -> tuple[int, int, int]:
    """Queue the messages of the audit entries after the cursor (one batch, one transaction); returns
    (entries read, messages queued, forged entries skipped)."""
    with svc.engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # one notifier at a time moves the cursor
            conn.execute(select(NotifyCursorRow.seq).where(NotifyCursorRow.name == CURSOR).with_for_update())
        start = notify.cursor(conn, CURSOR)
        entries = audit.events(conn, after=start, limit=batch)
        queued = forged = 0
        for e in entries:
            if not audit.authentic(svc.audit_key, e):
                forged += 1
                log.warning("audit entry %d does not match its hash; it notifies nobody", e.seq)
                continue
            for m in [*case_notices.messages_for(conn, e), *output_notices.messages_for(conn, svc, e),
                      *import_notices.messages_for(conn, svc, e)]:
                queued += notify.queue(conn, m, public_url=svc.settings.public_url)
        if entries:
            notify.set_cursor(conn, CURSOR, entries[-1].seq)
    return len(entries), queued, forged


def run_notifier(svc: Service) -> NotifierReport:
    """Queue everything new, then send the pending e-mails."""
    entries = queued = forged = 0
    while True:
        n, q, f = queue_new(svc)
        entries, queued, forged = entries + n, queued + q, forged + f
        if n == 0:
            break
    sent = notify.send_pending(svc)
    log.info("notifier: %d audit entries read, %d messages queued, %d e-mails sent, %d failed",
             entries, queued, sent.sent, sent.failed)
    return NotifierReport(entries, queued, forged, sent.sent, sent.failed)
