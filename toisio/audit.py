"""The service's one audit log: append-only and hash-chained.

Every stage appends through :func:`append`, inside the same transaction as the
state change it records.  Each entry's hash is
``HMAC-SHA256(audit_key, canonical_json(body))`` where ``body`` holds the
sequence number, time, actor, action, subject, payload and the previous entry's
hash.  The key is kept outside the database, so someone who can write to the
database cannot rebuild the chain after editing it.  Triggers make the table
refuse UPDATE and DELETE; :func:`verify` finds the first broken link after any
edit, deletion, insertion or reordering that got past them.

The newest head ``(seq, entry_hash)`` is also written, on every commit that appended, to a head
file in the key store (:data:`HEAD_FILE`), outside the database.  :func:`verify` checks the chain
against it by default, so deleting the newest rows, emptying the table or restoring an older copy
of the database is reported; ``toisio audit head`` prints it for anchoring elsewhere too.
"""

from __future__ import annotations

import contextvars
import fcntl
import functools
import hashlib
import hmac
import json
import os
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Index, Integer, String, Text, bindparam, event, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Mapped, mapped_column

from toisio.db import Base, StateChangeRow, statement_connection
from toisio.errors import ToisioError
from toisio.keystore import Secret

GENESIS = "0" * 64
HEAD_FILE = "audit.head"
_PENDING = "toisio_audit_head"
#: per connection, the head its commit wrote until that commit is known to have landed (:func:`_head_after_commit`)
_UNCONFIRMED: weakref.WeakKeyDictionary[Connection, tuple] = weakref.WeakKeyDictionary()


#: Every action the audit log records, one catalogue across the stages (the foundation names them; it imports
#: no stage).  :func:`append` refuses any other name, and tests/unit/test_layout.py checks that each stage's
#: lifecycle events have theirs.
_CASE_EVENTS = ("created", "submitted", "returned", "resubmitted", "sent_back", "completeness_confirmed",
                "estimates_requested", "estimate_recorded", "estimate_sent", "accepted", "presented", "approved",
                "rejected", "extraction_started", "delivered", "activated", "expired", "closed", "revoked",
                "withdrawn", "deleted", "handler_assigned", "deadline_extended", "amended", "remarked", "reminded")
_OUTPUT_EVENTS = ("submit", "review_submitted", "approve", "reject", "return", "resubmit", "revoke_approval",
                  "release", "withdraw")
_ACTIONS = {
    "auth": ("login", "login_failed"),
    "user": ("created", "credentials_set", "deactivated", "reactivated", "roles_changed", "oidc_linked",
             "password_changed", "baseline_recorded"),
    "token": ("created", "revoked"),
    "case": (*_CASE_EVENTS, "listed", "viewed", "draft_updated"),
    "attachment": ("stored", "read"),
    "extraction": ("started", "delivered", "failed", "stale_cleaned"),
    "workspace": ("created", "destroyed", "started", "stopped", "token_issued", "audit_viewed", "login",
                  "login_refused", "kernel_started", "kernel_stopped", "cell_executed", "file_read", "file_written",
                  "upload_refused", "quota_exceeded", "quota_refused"),
    "import": ("requested", "approved", "rejected"),
    "output": (*_OUTPUT_EVENTS, "created", "file_added", "group_described", "commented", "voted", "viewed", "file_read",
               "downloaded"),
    "dp": ("budget_set", "query_charged"),
    "data": ("deleted",),
    "audit": ("searched", "head_reanchored"),
}
AuditAction = StrEnum("AuditAction", {f"{area}_{a}".upper(): f"{area}.{a}"
                                      for area, names in _ACTIONS.items() for a in names})
_KNOWN = frozenset(a.value for a in AuditAction)


class AuditEventRow(Base):
    """Database row of one audit event (append-only)."""

    __tablename__ = "audit_event"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    ts: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    subject: Mapped[str] = mapped_column(String(200), index=True)
    payload: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    entry_hash: Mapped[str] = mapped_column(String(64))
    #: the payload field with which this entry vouches for its subject's state (see :func:`vouching_field`),
    #: kept beside the payload so that the newest such entry is one index lookup; :func:`verify` checks it
    vouches: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (Index("ix_audit_event_vouches", "subject", "vouches", "seq"),)


@dataclass(frozen=True)
class AuditEvent:
    """One audit event as read back from the log."""

    seq: int
    ts: str
    actor: str
    action: str
    subject: str
    payload: dict[str, Any]
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :func:`verify`: ``ok``, how many entries were checked, the first bad one."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str = ""
    #: the chain does not hold the anchored head (gone, or a different entry under its number): a truncation,
    #: an older copy restored, or a crash before a commit whose head was recorded (:func:`reanchor`)
    anchor_missing: bool = False


class AuditError(ToisioError, RuntimeError):
    """The audit log could not be appended to, or no longer holds its recorded head."""

    code, http_status = "audit", 500


def canonical_json(obj: Any) -> str:
    """The canonical JSON text hashed by the chain (sorted keys, no spaces, UTF-8)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _entry_hash(key: Secret, body: dict[str, Any]) -> str:
    return hmac.new(key.value, canonical_json(body).encode("utf-8"), hashlib.sha256).hexdigest()


def _body(seq: int, ts: str, actor: str, action: str, subject: str, payload: str, prev: str) -> dict:
    return {
        "seq": seq,
        "ts": ts,
        "actor": actor,
        "action": action,
        "subject": subject,
        "payload": payload,
        "prev": prev,
    }


#: PostgreSQL: take the append lock and read the chain's newest entry in one round trip.  The appends of a
#: process take turns through this lock, so each round trip under it is paid by every reader waiting for a
#: batch.  A VOLATILE function reads each statement at a fresh snapshot, so the read sees every append
#: committed before the lock was granted (what a separate statement after the lock sees).
LOCKED_HEAD_POSTGRES = (
    "CREATE OR REPLACE FUNCTION audit_locked_head(OUT seq integer, OUT entry_hash text) AS $$ "
    "BEGIN PERFORM pg_advisory_xact_lock(7410001); "
    "SELECT a.seq, a.entry_hash INTO seq, entry_hash FROM audit_event a ORDER BY a.seq DESC LIMIT 1; "
    "END; $$ LANGUAGE plpgsql VOLATILE"
)


def _locked_head(conn: Connection) -> tuple[int, str] | None:
    """Under the append lock (held until the transaction ends): the newest entry's ``(seq, entry_hash)``."""
    if conn.dialect.name == "postgresql":
        row = conn.execute(text("SELECT seq, entry_hash FROM audit_locked_head()")).one()
        return None if row.seq is None else (row.seq, row.entry_hash)
    # SQLite: the engine's BEGIN IMMEDIATE already serialises writers.
    row = conn.execute(
        select(AuditEventRow.seq, AuditEventRow.entry_hash).order_by(AuditEventRow.seq.desc()).limit(1)
    ).first()
    return None if row is None else (row[0], row[1])


def _lock_for_append(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(7410001)"))
    # SQLite: the engine's BEGIN IMMEDIATE already serialises writers.


VOUCH_SUFFIX = "_digest"


def vouching_field(payload: dict[str, Any]) -> str | None:
    """The payload field with which an entry vouches for the state of its subject: a stage records a digest of
    the state that decides permissions (``case_digest``, ``user_digest``, ``token_digest``) in every entry that
    changes it.  The first such field in name order (a stage records one)."""
    return next((k for k in sorted(payload) if k.endswith(VOUCH_SUFFIX)), None)


@dataclass(frozen=True)
class Pending:
    """An event to append: who did what to which subject."""

    actor: str
    action: str
    subject: str
    payload: dict[str, Any]

    def __post_init__(self) -> None:
        if not self.actor or not self.action or not self.subject:
            raise AuditError("audit events need an actor, an action and a subject")
        if self.action not in _KNOWN:
            raise AuditError(f"{self.action!r} is not in the audit action catalogue (toisio.audit.AuditAction)",
                             code="unknown_audit_action")


def append(
    conn: Connection,
    key: Secret,
    *,
    actor: str,
    action: str,
    subject: str,
    payload: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> AuditEvent:
    """Append one event in the caller's transaction and return it."""
    return _append_all(conn, key, [Pending(actor, action, subject, payload or {})], now=now)[0]


def _append_all(conn: Connection, key: Secret, items: list[Pending], *, now: datetime | None = None,
                check_anchor: bool = False, head_by_caller: bool = False) -> list[AuditEvent]:
    """Append ``items`` in order in the caller's transaction (under the append lock).  ``check_anchor``: first
    refuse to extend a chain that ends before the head recorded outside the database (truncated, or an older
    copy restored); under the lock every earlier append has committed, so the database holds that head.
    ``head_by_caller``: the caller writes the head file once the transaction has committed (:func:`_write_head`
    with the last event) instead of this transaction writing it just before its commit."""
    last = _locked_head(conn)
    if check_anchor:
        anchor = read_head_file(key)
        if anchor is not None and anchor[0] > 0 and (last is None or last[0] < anchor[0]):
            raise AuditError(f"the audit log no longer holds its recorded head (entry {anchor[0]}): it was truncated "
                             f"or an older copy of the database was restored")
    seq, prev = (last[0], last[1]) if last else (0, GENESIS)
    ts = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rows, out = [], []
    for item in items:
        seq += 1
        payload_text = canonical_json(item.payload)
        entry = _entry_hash(key, _body(seq, ts, item.actor, item.action, item.subject, payload_text, prev))
        rows.append({"seq": seq, "ts": ts, "actor": item.actor, "action": item.action, "subject": item.subject,
                     "payload": payload_text, "prev_hash": prev, "entry_hash": entry,
                     "vouches": vouching_field(item.payload)})
        out.append(AuditEvent(seq, ts, item.actor, item.action, item.subject, json.loads(payload_text), prev, entry))
        prev = entry
    conn.execute(AuditEventRow.__table__.insert(), rows)
    if not head_by_caller:
        _head_after_commit(conn, key, seq, prev, before=(last[0], last[1]) if last else None)
    return out


class ReadRecorder:
    """Records reads (who saw what) in transactions of their own, gathering the reads that arrive while one
    transaction commits into the next (group commit): one lock, one insert and one commit for many readers.

    :meth:`record` returns only once its event has committed, so a read is on the chain before its data is
    handed out; if the append fails, the reader gets the error (and no data).  Each batch first checks that the
    chain still ends at the head recorded outside the database, so a read also notices a truncated log.

    One reader at a time leads: it commits the batch that holds its own event, hands the lead to the first
    reader still queued, then writes the head file (while the next batch commits) and wakes each reader of its
    batch.  Every reader is woken once, by its own event: with many readers waiting, waking them all at every
    batch cost more processor time than the batches themselves.
    """

    def __init__(self, engine: Engine, key: Secret, *, max_batch: int = 500):
        self.engine, self.key, self.max_batch = engine, key, max_batch
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._busy = False

    def record(self, *, actor: str, action: str, subject: str, payload: dict[str, Any] | None = None) -> AuditEvent:
        mine = _Waiting(Pending(actor, action, subject, payload or {}))
        with self._lock:
            self._queue.append(mine)
            lead = not self._busy
            self._busy = True
        if not lead:
            mine.wake.wait()  # woken with its event (or error), or to lead the batch that holds it
        if not mine.done:
            self._lead()
        if mine.error is not None:
            raise mine.error
        assert mine.event is not None
        return mine.event

    def _lead(self) -> None:
        """Commit the next batch (the leader's own event first), hand over the lead, then write the head file and
        give each reader of the batch its event, or the error every reader in it gets."""
        with self._lock:
            batch, self._queue = self._queue[:self.max_batch], self._queue[self.max_batch:]
        events = self._commit(batch)
        with self._lock:
            following = self._queue[0] if self._queue else None
            self._busy = following is not None
        if following is not None:
            following.wake.set()
        # the next batch may commit while this one writes the head file; its readers get their events only once
        # the head is written (or the error if it cannot be: a read fails closed)
        if not isinstance(events, BaseException):
            try:
                _write_head(self.key, events[-1].seq, events[-1].entry_hash)
            except BaseException as exc:
                events = exc
        for i, w in enumerate(batch):
            if isinstance(events, BaseException):
                w.error = events
            else:
                w.event = events[i]
            w.done = True
            w.wake.set()

    def _commit(self, batch: list[_Waiting]) -> list[AuditEvent] | BaseException:
        """Append the batch in one transaction: its events, or the error that every reader in it gets."""
        try:
            with self.engine.begin() as conn:
                return _append_all(conn, self.key, [w.item for w in batch], check_anchor=True, head_by_caller=True)
        except BaseException as exc:
            return exc


class VerifiedCache:
    """What a process verified against the chain, kept with the stamp (:func:`stamp`) it was verified at.

    A later read asks :func:`stamp` (one indexed statement) and uses the kept value only while the stamp
    is unchanged: every change the service makes appends a newer vouching entry, in this process or another; a
    log truncated below it changes the stamp too; and database triggers count every edit of the rows behind it,
    the service's or anyone's, so an edit made outside the service is verified, and refused, at the next read.
    (Someone able to disable the triggers, as a database superuser can, gets past the count but not the chain:
    the edit is refused at the next change, by every process that verifies afresh, and by ``toisio audit
    verify``; a kept value is never read again from the rows.)  Bounded: the least recently kept go first.
    """

    def __init__(self, size: int = 4096):
        self.size = size
        self._items: dict[Any, tuple[tuple, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Any, stamp: tuple) -> Any | None:
        if None in stamp:
            return None
        with self._lock:
            kept = self._items.get(key)
            if kept is None or kept[0] != stamp:
                return None
            self._items[key] = self._items.pop(key)  # most recently used last
            return kept[1]

    def peek(self, key: Any) -> Any | None:
        """The value kept under ``key`` whatever its stamp (to learn what to stamp it by; not to use it)."""
        with self._lock:
            kept = self._items.get(key)
        return None if kept is None else kept[1]

    def touch(self, key: Any, change: Callable[[Any], Any]) -> None:
        """Replace the kept value by ``change(value)`` under the same stamp (for what the stamp does not cover)."""
        with self._lock:
            kept = self._items.get(key)
            if kept is not None:
                self._items[key] = (kept[0], change(kept[1]))

    def put(self, key: Any, stamp: tuple, value: Any) -> None:
        if None in stamp:
            return
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (stamp, value)
            while len(self._items) > self.size:
                self._items.pop(next(iter(self._items)))


@dataclass
class _Waiting:
    item: Pending
    event: AuditEvent | None = None
    error: BaseException | None = None
    done: bool = False
    wake: threading.Event = field(default_factory=threading.Event)


def head_path(key: Secret) -> Path | None:
    """Where the chain's head is kept outside the database (in the key store), if the key has a store."""
    return key.store / HEAD_FILE if key.store is not None else None


def read_head_file(key: Secret) -> tuple[int, str] | None:
    """The head ``(seq, hash)`` last written outside the database, or None if there is none."""
    path = head_path(key)
    if path is None:
        return None
    # plain system calls: this runs under the append lock for every batch of reads, and each call that leaves
    # the interpreter (stat, fstat, ioctl of a buffered open) may wait for it on the way back
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        text = os.read(fd, 4096).decode("ascii")
    finally:
        os.close(fd)
    seq, h = text.strip().split(":", 1)
    return int(seq), h


def _write_head(key: Secret, seq: int, entry: str) -> None:
    """Replace the head file by ``seq:entry`` (durably) unless it already records ``seq`` or a later entry.

    Writers take turns on an advisory lock of the file (``audit.head.lock`` beside it), so a head never
    replaces a newer one: the appends of state changes write it while they hold the database's append lock,
    and batches of recorded reads after their commit, while the next batch commits."""
    _replace_head(key, lambda current: (seq, entry) if current is None or current[0] < seq else current)


def _take_back_head(key: Secret, seq: int, entry: str, before: tuple[int, str] | None) -> None:
    """The commit that wrote the head ``seq:entry`` failed: put back ``before`` (the chain's head under that
    transaction's append lock; no file if the chain was empty), unless another writer has replaced that head."""
    _replace_head(key, lambda current: before if current == (seq, entry) else current)


def _replace_head(key: Secret, decide: Callable[[tuple[int, str] | None], tuple[int, str] | None]) -> None:
    """Under the head file's lock, replace its head ``current`` by ``decide(current)`` (durably; None: no file)."""
    path = head_path(key)
    if path is None:
        return
    lock = path.with_name(f".{HEAD_FILE}.lock")
    try:
        lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        current = read_head_file(key)
        new = decide(current)
        if new == current:
            return
        if new is None:
            path.unlink()
            return
        tmp = path.with_name(f".{HEAD_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f"{new[0]}:{new[1]}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        os.close(lock_fd)  # releases the lock


def _head_after_commit(conn: Connection, key: Secret, seq: int, entry: str, *,
                       before: tuple[int, str] | None) -> None:
    """Write the head file when (and only if) the appending transaction commits, just before its commit lands
    (if writing it fails, nothing is committed; if the commit itself then fails, the head is taken back to
    ``before``, so the file is not left ahead of the database)."""
    conn.info[_PENDING] = (key, seq, entry, before)

    def on_commit(c: Connection) -> None:
        pending = c.info.pop(_PENDING, None)
        if pending is not None:
            _write_head(*pending[:3])
            _UNCONFIRMED[c] = pending

    def on_rollback(c: Connection) -> None:
        c.info.pop(_PENDING, None)

    event.listen(conn, "commit", on_commit, once=True)
    event.listen(conn, "rollback", on_rollback, once=True)
    event.listen(conn, "begin", _commit_landed)
    engine = conn.engine
    if not event.contains(engine, "handle_error", _commit_failed):
        event.listen(engine, "handle_error", _commit_failed)


def _commit_landed(conn: Connection) -> None:
    """The connection begins anew: its last commit landed (a failed one raised through :func:`_commit_failed`)."""
    _UNCONFIRMED.pop(conn, None)


def _commit_failed(ctx: Any) -> None:
    """An error on a connection whose commit wrote the head: if it came from the commit (no statement), take
    that head back."""
    conn = ctx.connection
    if conn is None or ctx.statement is not None:
        return
    unconfirmed = _UNCONFIRMED.pop(conn, None)
    if unconfirmed is not None:
        _take_back_head(*unconfirmed)


@dataclass(frozen=True)
class Reanchored:
    """What :func:`reanchor` did: the head recorded outside the database that it replaced, where the database's
    chain ended, and the entry that records the re-anchoring (now the recorded head)."""

    recorded: tuple[int, str]
    database: tuple[int, str] | None
    entry: AuditEvent


def reanchor(engine: Engine, key: Secret, *, actor: str, recorded_seq: int, reason: str) -> Reanchored:
    """Record the database's chain as the head again, after the head recorded outside it was left ahead of it:
    the service stopped (a crash, a power cut) between a change writing the head and its commit landing, so
    every check of the head refuses, as it would for a truncated log.  The operator's recovery, on the host
    that holds the key store, never a silent one:

    - refused unless the recorded head is missing from the database or differs from it (nothing to recover
      otherwise), unless ``recorded_seq`` confirms the recorded head's entry number (the operator has looked
      at it: ``toisio audit verify`` names it), and unless the chain in the database verifies entry by entry
      (re-anchoring a chain that is broken would hide the break);
    - appends ``audit.head_reanchored`` naming the head it replaces, the database's head and the reason, and
      records that entry as the head.

    A log truncated by someone without the key store is re-anchored only if an operator confirms it; the
    entry stays on the chain for auditors to see."""
    if not reason.strip():
        raise AuditError("re-anchoring the audit log needs a reason (what happened to the service)",
                         code="reason_required")
    with engine.begin() as conn:
        last = _locked_head(conn)
        recorded = read_head_file(key)
        if recorded is None or recorded[0] == 0:
            raise AuditError("no head is recorded outside the database: nothing to re-anchor", code="audit_head_held")
        held = conn.execute(select(AuditEventRow.entry_hash).where(AuditEventRow.seq == recorded[0])).scalar()
        if held == recorded[1]:
            raise AuditError(f"the database holds the recorded head (entry {recorded[0]}): nothing to re-anchor",
                             code="audit_head_held")
        if recorded_seq != recorded[0]:
            raise AuditError(f"the head recorded outside the database is entry {recorded[0]}, not {recorded_seq}; "
                             f"confirm the number it has", code="audit_reanchor_unconfirmed")
        checked = _verify(conn, key, anchor=None)
        if not checked.ok:
            raise AuditError(f"the chain in the database is itself broken at entry {checked.first_bad_seq} "
                             f"({checked.reason}); re-anchoring would hide that", code="audit_tampered")
        entry = _append_all(conn, key, [Pending(actor, "audit.head_reanchored", "audit", {
            "recorded_head": f"{recorded[0]}:{recorded[1]}",
            "database_head": f"{last[0]}:{last[1]}" if last else "0:" + GENESIS,
            "reason": reason.strip()})], head_by_caller=True)[0]
    _replace_head(key, lambda current: (entry.seq, entry.entry_hash)
                  if current == recorded or current is None or current[0] < entry.seq else current)
    return Reanchored(recorded, last, entry)


def authentic(key: Secret, e: AuditEvent) -> bool:
    """Whether one entry's hash matches its content under ``key`` (the link to its neighbours is not checked)."""
    body = _body(e.seq, e.ts, e.actor, e.action, e.subject, canonical_json(e.payload), e.prev_hash)
    return hmac.compare_digest(_entry_hash(key, body), e.entry_hash)


def recorded_digest(conn: Connection, key: Secret, subject: str, field: str) -> str | None:
    """The value of ``field`` in the newest audit entry of ``subject`` that records one (None if none does).

    Stages chain a digest of the state that decides permissions (a case, a user, a token) in every
    entry that changes it; a read compares the stored state with this.  Raises :class:`AuditError`
    if that entry was itself altered.
    """
    row = conn.execute(select(AuditEventRow).where(
        AuditEventRow.subject == subject, AuditEventRow.vouches == field,
    ).order_by(AuditEventRow.seq.desc()).limit(1)).first()
    if row is None:
        return None
    e = _to_event(row)
    if not authentic(key, e) or field not in e.payload:
        raise AuditError(f"the audit entry {e.seq} of {subject} was altered", code="audit_tampered")
    return e.payload.get(field)


def stamp(conn: Connection, pairs: list[tuple[str, str]]) -> tuple[int | None, ...]:
    """For each ``(subject, field)``: the number of the newest entry vouching for the subject's state with that
    field (None if none does) and how many times its rows were changed (:class:`toisio.db.StateChangeRow`), in
    one statement.  Both change whenever the service changes that state; the count also when anyone edits a row
    outside the service.  A process keeps what it verified under this stamp (:class:`VerifiedCache`)."""
    if not pairs:
        return ()
    params = {}
    for i, (subject, vouched_by) in enumerate(pairs):
        params[f"s{i}"], params[f"f{i}"] = subject, vouched_by
    return tuple(conn.execute(_stamp_statement(len(pairs)), params).one())


#: The stamps one request reads ahead: pairs registered by :func:`read_ahead` wait in ``pending``; the next
#: :func:`current_stamp` of the request reads them with its own pairs and keeps them in ``read`` for one use.
_AHEAD: contextvars.ContextVar[_Ahead | None] = contextvars.ContextVar("toisio_stamps_ahead", default=None)


@dataclass
class _Ahead:
    pending: list[tuple[str, str]]
    read: dict[tuple[str, str], tuple[int | None, ...]]


def read_ahead(pairs: list[tuple[str, str]]) -> None:
    """Have the next :func:`current_stamp` of this request read ``pairs`` too (in the same statement), so that a
    read that needs them later in the request does not make another round trip.  For safe (GET) requests only,
    called before the request's first stamp (a route dependency on the event loop, so the request's threads
    share it); each value read ahead is used once, by the request that asked for it.  Starts afresh: nothing
    read ahead for an earlier request in the same context is used."""
    _AHEAD.set(_Ahead(list(dict.fromkeys(pairs)), {}))


def current_stamp(engine: Engine, pairs: list[tuple[str, str]]) -> tuple[int | None, ...]:
    """:func:`stamp` of ``pairs`` now: taken from what this request read ahead if it holds them all (each value
    used once), else one statement on a connection of its own, which also reads what the request registered."""
    ahead = _AHEAD.get()
    if ahead is not None and pairs and all(p in ahead.read for p in pairs):
        return tuple(v for p in pairs for v in ahead.read.pop(p))
    extra = [p for p in ahead.pending if p not in pairs] if ahead is not None else []
    with statement_connection(engine) as conn:
        values = stamp(conn, [*pairs, *extra])
    if extra:
        assert ahead is not None
        ahead.pending.clear()
        # a stamp is two values per pair (the vouching entry and the change count)
        for i, p in enumerate(extra, start=len(pairs)):
            ahead.read[p] = values[2 * i:2 * i + 2]
    return values[:2 * len(pairs)]


@functools.cache
def _stamp_statement(n: int):
    """The statement of :func:`stamp` for ``n`` pairs, built once (it runs on every authenticated read)."""
    t, c = AuditEventRow.__table__, StateChangeRow.__table__
    columns = []
    for i in range(n):
        columns.append(select(func.max(t.c.seq)).where(t.c.subject == bindparam(f"s{i}"),
                                                       t.c.vouches == bindparam(f"f{i}")).scalar_subquery())
        columns.append(func.coalesce(select(c.c.n).where(c.c.subject == bindparam(f"s{i}")).scalar_subquery(), 0))
    return select(*columns)


def _to_event(row) -> AuditEvent:
    return AuditEvent(
        row.seq, row.ts, row.actor, row.action, row.subject, json.loads(row.payload), row.prev_hash,
        row.entry_hash,
    )


def events(
    conn: Connection, *, subject: str | None = None, subject_prefix: str | None = None,
    action_prefix: str | None = None, after: int | None = None, limit: int | None = None,
) -> list[AuditEvent]:
    """Events in chain order, optionally for one subject, a subject prefix or an action prefix, after one
    sequence number, at most ``limit`` of them."""
    q = select(AuditEventRow).order_by(AuditEventRow.seq)
    if after is not None:
        q = q.where(AuditEventRow.seq > after)
    if limit is not None:
        q = q.limit(limit)
    if subject is not None:
        q = q.where(AuditEventRow.subject == subject)
    if subject_prefix is not None:
        q = q.where(AuditEventRow.subject.startswith(subject_prefix, autoescape=True))
    if action_prefix is not None:
        q = q.where(AuditEventRow.action.startswith(action_prefix, autoescape=True))
    return [_to_event(r) for r in conn.execute(q)]


def head(conn: Connection) -> tuple[int, str]:
    """The chain head ``(seq, entry_hash)``, for anchoring outside the database."""
    row = conn.execute(
        select(AuditEventRow.seq, AuditEventRow.entry_hash).order_by(AuditEventRow.seq.desc()).limit(1)
    ).first()
    return (row[0], row[1]) if row else (0, GENESIS)


def verify(conn: Connection, key: Secret, *, anchor: tuple[int, str] | None = None) -> VerifyResult:
    """Walk the chain and report the first broken link.

    ``anchor`` is a ``(seq, hash)`` pair stored outside the database earlier; the chain must
    still contain it (this catches truncation of the tail and a restored older copy).  Without
    one, the head file in the key store is the anchor.
    """
    try:
        return _verify(conn, key, anchor=anchor if anchor is not None else read_head_file(key))
    except DBAPIError as exc:
        if not _table_exists(conn):
            return VerifyResult(False, 0, None, "the audit_event table is missing (dropped or never created)")
        raise AuditError(f"the audit log could not be read: {exc.orig}") from None


def _table_exists(conn: Connection) -> bool:
    from contextlib import suppress

    from sqlalchemy import inspect

    with suppress(DBAPIError):
        conn.rollback()
    return inspect(conn).has_table(AuditEventRow.__tablename__)


def check_head(conn: Connection, key: Secret) -> None:
    """Raise :class:`AuditError` unless the database still holds the head recorded outside it (O(1): for use
    before trusting state the chain covers).

    A reader may see a head file whose entry is not yet visible to it: the head is written just before the
    appending commit lands, and SQLite WAL fixes a reader's snapshot at its first read.  When the recorded head
    is newer than anything the reader sees, a fresh read after the append lock is free decides between such a
    concurrent commit and a truncated log."""
    anchor = read_head_file(key)
    if anchor is None or anchor[0] == 0:
        return
    q = select(AuditEventRow.entry_hash).where(AuditEventRow.seq == anchor[0])
    row = conn.execute(q).first()
    if row is not None and row[0] == anchor[1]:
        return
    if row is None:
        newest = conn.execute(select(func.max(AuditEventRow.seq))).scalar() or 0
        if newest >= anchor[0]:
            # PostgreSQL reads each statement at its own snapshot: the entry's commit landed between the two
            # reads above.  Look again (in one snapshot, as SQLite's, a missing entry stays missing).
            again = conn.execute(q).first()
            if again is not None and again[0] == anchor[1]:
                return
        # A writer records the head while it still holds the append lock, just before its commit lands; a
        # reader that sees the head but not yet the entry waits for that lock and looks again.  (A SQLite
        # write transaction holds the lock itself, and no commit can be in flight then.)
        may_wait = conn.get_execution_options().get("toisio_readonly") or conn.dialect.name == "postgresql"
        if newest < anchor[0] and may_wait:
            with conn.engine.begin() as fresh:
                _lock_for_append(fresh)
                again = fresh.execute(q).first()
            if again is not None and again[0] == anchor[1]:
                return
    raise AuditError(f"the audit log no longer holds its recorded head (entry {anchor[0]}): it was truncated "
                     f"or an older copy of the database was restored")


def _verify(conn: Connection, key: Secret, *, anchor: tuple[int, str] | None) -> VerifyResult:
    prev = GENESIS
    expected_seq = 1
    checked = 0
    anchor_seen = anchor is None or anchor[0] == 0
    for row in conn.execute(select(AuditEventRow).order_by(AuditEventRow.seq)):
        if row.seq != expected_seq:
            return VerifyResult(False, checked, expected_seq, f"entry {expected_seq} is missing (next is {row.seq})")
        if row.prev_hash != prev:
            return VerifyResult(False, checked, row.seq, f"entry {row.seq} does not link to entry {row.seq - 1}")
        body = _body(row.seq, row.ts, row.actor, row.action, row.subject, row.payload, row.prev_hash)
        if not hmac.compare_digest(_entry_hash(key, body), row.entry_hash):
            return VerifyResult(False, checked, row.seq, f"entry {row.seq} was altered (hash mismatch)")
        if row.vouches != vouching_field(json.loads(row.payload)):
            return VerifyResult(False, checked, row.seq, f"entry {row.seq}'s vouching mark was altered (it says "
                                                         f"{row.vouches!r}, its payload otherwise)")
        if anchor is not None and row.seq == anchor[0]:
            if row.entry_hash != anchor[1]:
                return VerifyResult(False, checked, row.seq, f"entry {row.seq} differs from the anchored head",
                                    anchor_missing=True)
            anchor_seen = True
        prev = row.entry_hash
        expected_seq += 1
        checked += 1
    if not anchor_seen:
        return VerifyResult(False, checked, anchor[0], f"anchored entry {anchor[0]} is gone (log truncated or an "
                                                       f"older copy of the database restored)", anchor_missing=True)
    return VerifyResult(True, checked)


APPEND_ONLY_SQLITE = [
    "CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event "
    "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END",
    "CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event "
    "BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END",
]
APPEND_ONLY_POSTGRES = [
    "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION 'audit_event is append-only'; END; $$ LANGUAGE plpgsql",
    "CREATE TRIGGER audit_event_no_update BEFORE UPDATE OR DELETE ON audit_event "
    "FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()",
    "CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()",
]
