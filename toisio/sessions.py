"""Server-side web sessions for the portal: a starsessions store in the service's database.

The browser holds only a random session id in an HttpOnly, SameSite cookie (Secure when the portal is
served over TLS).  The database holds, per session, the SHA-256 of that id and the session's data
encrypted (AES-GCM) under a key derived from the id itself: someone who can read the database can
neither find a session's cookie nor read what the session holds (the user's short-lived sign-in token).
Sessions expire (``lifetime``) and are removed at sign-out; expired rows are swept on write.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import LargeBinary, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column
from starlette.concurrency import run_in_threadpool
from starsessions.stores.base import SessionStore

from toisio.db import Base


class WebSessionRow(Base):
    """One portal session: its id's digest, its encrypted data and when it expires."""

    __tablename__ = "web_session"

    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    expires_at: Mapped[str] = mapped_column(String(32), index=True)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _key(session_id: str) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=b"toisio-web-session").derive(session_id.encode())


def _content(data: bytes) -> str:
    """A digest of what a session holds, for telling whether a write changes it.  starsessions stamps the session
    with the time of every load (``__metadata__.last_access``), which nothing here reads (its expiry is fixed at
    sign-in), so that stamp is left out: otherwise every page would write the session."""
    try:
        held = json.loads(data)
        held["__metadata__"].pop("last_access", None)
        data = json.dumps(held, sort_keys=True).encode()
    except (ValueError, TypeError, KeyError, AttributeError):
        pass  # not starsessions' JSON: the bytes as they are
    return hashlib.sha256(data).hexdigest()


def _now() -> datetime:
    return datetime.now(UTC)


class DatabaseStore(SessionStore):
    """starsessions' store interface over the ``web_session`` table."""

    def __init__(self, engine, *, max_lifetime: int = 8 * 3600):
        self.engine, self.max_lifetime = engine, max_lifetime
        # what each session held when this process last read or wrote it: starsessions saves the session after
        # every response, and an unchanged one need not be written again (its expiry does not move either)
        self._unchanged: dict[str, str] = {}
        self._last_sweep = 0.0

    def _read(self, session_id: str) -> bytes:
        with self.engine.connect() as conn:
            row = conn.execute(select(WebSessionRow).where(WebSessionRow.id_sha256 == _digest(session_id))).first()
        if row is None or row.expires_at <= _now().isoformat():
            return b""
        raw = row.data
        try:
            data = AESGCM(_key(session_id)).decrypt(raw[:12], raw[12:], b"session")
        except Exception:  # noqa: BLE001 - a row that does not decrypt is no session
            return b""
        self._unchanged[_digest(session_id)] = _content(data)
        return data

    def _write(self, session_id: str, data: bytes, ttl: int) -> None:
        digest = _digest(session_id)
        content = _content(data)
        if self._unchanged.get(digest) == content:
            return  # the same as stored: nothing to write (the expiry stays where it was)
        ttl = min(ttl or self.max_lifetime, self.max_lifetime)
        nonce = os.urandom(12)
        sealed = nonce + AESGCM(_key(session_id)).encrypt(nonce, data, b"session")
        expires = (_now() + timedelta(seconds=ttl)).isoformat()
        import time

        sweep = time.monotonic() - self._last_sweep > 60
        with self.engine.begin() as conn:
            if sweep:  # expired sessions are removed at most once a minute
                conn.execute(delete(WebSessionRow).where(WebSessionRow.expires_at <= _now().isoformat()))
                self._last_sweep = time.monotonic()
            conn.execute(delete(WebSessionRow).where(WebSessionRow.id_sha256 == digest))
            conn.execute(WebSessionRow.__table__.insert().values(id_sha256=digest, data=sealed, expires_at=expires))
        if len(self._unchanged) > 50_000:  # a bound on memory; forgetting only costs a rewrite
            self._unchanged.clear()
        self._unchanged[digest] = content

    def _remove(self, session_id: str) -> None:
        self._unchanged.pop(_digest(session_id), None)
        with self.engine.begin() as conn:
            conn.execute(delete(WebSessionRow).where(WebSessionRow.id_sha256 == _digest(session_id)))

    async def read(self, session_id: str, lifetime: int) -> bytes:
        return await run_in_threadpool(self._read, session_id)

    async def write(self, session_id: str, data: bytes, lifetime: int, ttl: int) -> str:
        await run_in_threadpool(self._write, session_id, data, ttl)
        return session_id

    async def remove(self, session_id: str) -> None:
        await run_in_threadpool(self._remove, session_id)

    async def exists(self, session_id: str) -> bool:
        return bool(await self.read(session_id, 0))
