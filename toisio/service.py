"""Wiring shared by every stage: settings, the database engine and the audit key.

The CLI, the REST API and the Prefect flows build one :class:`Service` and hand
it to domain functions; nothing else reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from sqlalchemy import Engine

from toisio import audit
from toisio.config import Settings, load_settings
from toisio.db import get_engine
from toisio.keystore import Secret, audit_key, credential_key, receipt_key


@dataclass(frozen=True)
class Service:
    """Handles on the shared parts of the service."""

    settings: Settings

    @cached_property
    def engine(self) -> Engine:
        return get_engine(self.settings.db_url)

    @cached_property
    def audit_key(self) -> Secret:
        """The audit HMAC key; its store is the key directory, where the chain's head file is kept."""
        key = audit_key(self.settings.keys)
        return key if key.store is not None else replace(key, store=self.settings.keys)

    @cached_property
    def credential_key(self) -> Secret:
        """The key sealing local accounts' TOTP secrets (and signing sign-in state)."""
        return credential_key(self.settings.keys)

    @cached_property
    def receipt_key(self) -> Secret:
        """The key the DP query service signs its answers with (the airlock verifies them)."""
        return receipt_key(self.settings.keys)

    @cached_property
    def verified(self) -> audit.VerifiedCache:
        """State this process verified against the audit chain, by the stamp it was verified at."""
        return audit.VerifiedCache()

    @cached_property
    def reads(self) -> audit.ReadRecorder:
        """Records who read what, many readers' events to one commit."""
        return audit.ReadRecorder(self.engine, self.audit_key)

    def record(self, *, actor: str, action: str, subject: str, payload: dict[str, Any] | None = None):
        """Append one audit event in a transaction of its own (for events with no other state change)."""
        with self.engine.begin() as conn:
            return audit.append(conn, self.audit_key, actor=actor, action=action, subject=subject,
                                payload=payload)


def service(**overrides: object) -> Service:
    """A :class:`Service` from the environment (and ``overrides``)."""
    return Service(load_settings(**overrides))
