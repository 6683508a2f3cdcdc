"""Notifications: a message to a person, kept in their inbox and sent by e-mail unless they chose the inbox only.

The stages say who is told what about each event they write to the audit chain (a table per stage, as data:
``permits.notifications.NOTIFY``, ``secure_env.airlock.notifications.NOTIFY``); the notifier job
(:mod:`flows.notifications`) reads the chain after the last entry it handled and queues the messages here.
This module keeps them and sends them:

* each message has a unique ``key`` (the audit entry and the recipient), so handling an entry twice (a worker
  killed mid-run and started again) queues and sends nothing twice;
* the text is rendered in the recipient's language (the one they chose in the portal; Finnish by default)
  from the Babel catalogues;
* e-mail goes through the SMTP server of the settings (``TOISIO_SMTP_HOST``...); without one, messages stay
  in the inbox and are marked ``no_smtp``; a failed send is retried on the next run, at most
  :data:`MAX_ATTEMPTS` times.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from sqlalchemy import Integer, String, Text, UniqueConstraint, select, update
from sqlalchemy.orm import Mapped, mapped_column

from toisio import i18n
from toisio.db import Base, read_connection
from toisio.errors import Invalid
from toisio.identity import Actor, UserRow


def N_(text: str) -> str:
    """Mark a string for extraction (translated for each recipient)."""
    return text


@dataclass(frozen=True)
class Notice:
    """Whom an event tells, and what: a stage's rule (English msgids with placeholders, translated per recipient)."""

    to: tuple[str, ...]
    title: str
    body: str

log = logging.getLogger("toisio.notify")

#: how a person wants to be told: by e-mail (and in the inbox), or in the portal's inbox only
CHANNELS = ("email", "inbox")
MAX_ATTEMPTS = 5


class NotificationRow(Base):
    """One message to one person."""

    __tablename__ = "notification"
    __table_args__ = (UniqueConstraint("key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200))
    user_id: Mapped[str] = mapped_column(String(100), index=True)
    topic: Mapped[str] = mapped_column(String(64))  # the audit action that caused it, e.g. case.returned
    subject: Mapped[str] = mapped_column(String(120))  # case:ID, output:ID
    language: Mapped[str] = mapped_column(String(5))
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    link: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[str] = mapped_column(String(32))
    read_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: pending, sent, failed (after MAX_ATTEMPTS), inbox_only, no_smtp, no_address
    email_status: Mapped[str] = mapped_column(String(16), index=True)
    email_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str] = mapped_column(Text, default="")


class NotifyCursorRow(Base):
    """How far a reader of the audit chain has got (the notifier's position)."""

    __tablename__ = "notify_cursor"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)


@dataclass(frozen=True)
class Message:
    """What a stage wants said to one person about one event (texts are English msgids with ``{name}``
    placeholders, translated for the recipient)."""

    user_id: str
    key: str
    topic: str
    subject: str
    title: str
    body: str
    params: tuple[tuple[str, str], ...] = ()
    link: str = ""


@dataclass(frozen=True)
class Notification:
    """A message as its recipient sees it in the inbox."""

    id: int
    topic: str
    subject: str
    title: str
    body: str
    link: str
    created_at: str
    read: bool
    email_status: str


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _render(text: str, lang: str, params: dict[str, str]) -> str:
    translated = i18n.gettext_for(lang)(text)
    try:
        return translated.format(**params)
    except (KeyError, IndexError, ValueError):  # a translation that lost a placeholder: the English is right
        return text.format(**params)


def queue(conn, message: Message, *, public_url: str = "") -> bool:
    """Queue a message in the caller's transaction; False if one with the same key exists already."""
    if conn.execute(select(NotificationRow.id).where(NotificationRow.key == message.key)).first() is not None:
        return False
    user = conn.execute(select(UserRow).where(UserRow.user_id == message.user_id)).first()
    if user is None or not user.active:
        return False
    lang = user.language or i18n.DEFAULT
    params = dict(message.params)
    channel = user.notify_by or "email"
    status = "pending" if channel == "email" else "inbox_only"
    if status == "pending" and not (user.email or "").strip():
        status = "no_address"
    link = (public_url.rstrip("/") + message.link) if message.link and public_url else message.link
    conn.execute(NotificationRow.__table__.insert().values(
        key=message.key, user_id=message.user_id, topic=message.topic, subject=message.subject, language=lang,
        title=_render(message.title, lang, params), body=_render(message.body, lang, params), link=link,
        created_at=_now(), email_status=status, attempts=0, error=""))
    return True


@dataclass(frozen=True)
class SendReport:
    sent: int
    failed: int
    waiting: int


def send_pending(svc, *, limit: int = 500) -> SendReport:
    """Send the pending e-mails (each marked sent in its own transaction, so a crash sends nothing twice
    that was marked, and at most the one in flight again)."""
    s = svc.settings
    with svc.engine.begin() as conn:
        rows = list(conn.execute(select(NotificationRow, UserRow.email).join(
            UserRow, UserRow.user_id == NotificationRow.user_id).where(
            NotificationRow.email_status == "pending").order_by(NotificationRow.id).limit(limit)))
        if not s.smtp_host:
            for r in rows:
                conn.execute(update(NotificationRow).where(NotificationRow.id == r.id).values(email_status="no_smtp"))
            return SendReport(0, 0, 0)
    sent = failed = 0
    if not rows:
        return SendReport(0, 0, 0)
    try:
        smtp = _connect(s)
    except (OSError, smtplib.SMTPException) as exc:
        log.warning("the SMTP server %s:%s could not be reached: %s", s.smtp_host, s.smtp_port, exc)
        _mark_failed(svc, [r.id for r in rows], f"SMTP unreachable: {exc}")
        return SendReport(0, 0, len(rows))
    with smtp:
        for r in rows:
            mail = EmailMessage()
            mail["From"], mail["To"], mail["Subject"] = s.smtp_from, r.email, r.title
            mail.set_content(r.body + (f"\n\n{r.link}" if r.link else "") + "\n")
            mail["Content-Language"] = r.language  # after set_content, which clears the Content-* headers
            try:
                smtp.send_message(mail)
            except smtplib.SMTPException as exc:
                failed += 1
                _mark_failed(svc, [r.id], str(exc))
                continue
            with svc.engine.begin() as conn:
                conn.execute(update(NotificationRow).where(NotificationRow.id == r.id).values(
                    email_status="sent", email_at=_now(), attempts=r.attempts + 1, error=""))
            sent += 1
    log.info("notifications: %d e-mails sent, %d failed", sent, failed)
    return SendReport(sent, failed, 0)


def _connect(s) -> smtplib.SMTP:
    smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30)
    if s.smtp_starttls:
        smtp.starttls(context=ssl.create_default_context())
    if s.smtp_user:
        smtp.login(s.smtp_user, s.smtp_password)
    return smtp


def _mark_failed(svc, ids: list[int], error: str) -> None:
    with svc.engine.begin() as conn:
        for i in ids:
            row = conn.execute(select(NotificationRow.attempts).where(NotificationRow.id == i)).first()
            attempts = (row[0] if row else 0) + 1
            conn.execute(update(NotificationRow).where(NotificationRow.id == i).values(
                attempts=attempts, error=error[:500], email_status="failed" if attempts >= MAX_ATTEMPTS else "pending"))


def inbox(svc, actor: Actor, *, limit: int = 50) -> list[Notification]:
    """The actor's own messages, newest first."""
    with read_connection(svc.engine) as conn:
        rows = conn.execute(select(NotificationRow).where(NotificationRow.user_id == actor.user_id)
                            .order_by(NotificationRow.id.desc()).limit(limit)).all()
    return [Notification(r.id, r.topic, r.subject, r.title, r.body, r.link, r.created_at, r.read_at is not None,
                         r.email_status) for r in rows]


def mark_read(svc, actor: Actor, notification_id: int | None = None) -> int:
    """Mark one of the actor's messages (or all of them) read; returns how many changed."""
    with svc.engine.begin() as conn:
        q = update(NotificationRow).where(NotificationRow.user_id == actor.user_id,
                                          NotificationRow.read_at.is_(None))
        if notification_id is not None:
            q = q.where(NotificationRow.id == notification_id)
        return conn.execute(q.values(read_at=_now())).rowcount


def channel_of(svc, actor: Actor) -> str:
    with read_connection(svc.engine) as conn:
        row = conn.execute(select(UserRow.notify_by).where(UserRow.user_id == actor.user_id)).first()
    return (row[0] if row else None) or "email"


def set_channel(svc, actor: Actor, channel: str) -> None:
    """The actor's own choice: ``email`` (and the inbox) or ``inbox`` only (a preference; it decides no
    permission, so it is not chained)."""
    if channel not in CHANNELS:
        raise Invalid(f"unknown channel {channel!r}; use {' or '.join(CHANNELS)}", code="unknown_channel")
    with svc.engine.begin() as conn:
        conn.execute(update(UserRow).where(UserRow.user_id == actor.user_id).values(notify_by=channel))


def cursor(conn, name: str) -> int:
    row = conn.execute(select(NotifyCursorRow.seq).where(NotifyCursorRow.name == name)).first()
    return row[0] if row else 0


def set_cursor(conn, name: str, seq: int) -> None:
    if conn.execute(select(NotifyCursorRow.seq).where(NotifyCursorRow.name == name)).first() is None:
        conn.execute(NotifyCursorRow.__table__.insert().values(name=name, seq=seq))
    else:
        conn.execute(update(NotifyCursorRow).where(NotifyCursorRow.name == name).values(seq=seq))


def params(**values: Any) -> tuple[tuple[str, str], ...]:
    """A message's placeholders, as the frozen pairs :class:`Message` keeps."""
    return tuple(sorted((k, str(v)) for k, v in values.items()))
