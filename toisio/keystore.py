"""Local key store for the service's secrets.

Four secrets exist: the pseudonymisation *master key* (per-permit keys are
derived from it), the *audit key* (HMAC key of the audit hash chain), the
*credential key* (encrypts local accounts' TOTP secrets and signs sign-in state) and the
*receipt key* (signs the DP query service's answers).  Each
is read from an environment variable if set (hex), otherwise from a file in the
key directory, created on first use with mode 0600 inside a 0700 directory.
The key directory must not be inside a git work tree.

Secrets are returned as :class:`Secret`, whose ``repr`` never shows the value,
so a key that reaches a log or an exception message shows as ``Secret(<id>)``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from toisio.errors import Unavailable

MASTER_KEY_ENV = "TOISIO_MASTER_KEY"
AUDIT_KEY_ENV = "TOISIO_AUDIT_KEY"
CREDENTIAL_KEY_ENV = "TOISIO_CREDENTIAL_KEY"
RECEIPT_KEY_ENV = "TOISIO_RECEIPT_KEY"
KEY_BYTES = 32


class KeyStoreError(Unavailable):
    """The key store is misconfigured or unsafe."""

    code = "key_store"


@dataclass(frozen=True)
class Secret:
    """Key material that does not print itself."""

    name: str
    value: bytes = field(repr=False)
    #: The key store directory this key belongs to (where the audit chain's head file is kept); None for a
    #: key given only in the environment with no store.
    store: Path | None = field(default=None, compare=False, repr=False)

    @property
    def fingerprint(self) -> str:
        """A non-secret identifier: first 16 hex of SHA-256 over a domain tag and the key."""
        return hashlib.sha256(b"toisio-key-fingerprint\x00" + self.value).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Secret({self.name}, fingerprint={self.fingerprint})"

    __str__ = __repr__


def _inside_git_worktree(path: Path) -> bool:
    return any((parent / ".git").exists() for parent in [path, *path.parents])


def _load_or_create(key_dir: Path, name: str, env_var: str) -> Secret:
    env = os.environ.get(env_var)
    if env:
        try:
            value = bytes.fromhex(env.strip())
        except ValueError as exc:
            raise KeyStoreError(f"{env_var} must be hex-encoded") from exc
        if len(value) < 16:
            raise KeyStoreError(f"{env_var} must hold at least 16 bytes")
        return Secret(name, value)
    key_dir = key_dir.expanduser().resolve()
    if _inside_git_worktree(key_dir):
        raise KeyStoreError(
            f"key directory {key_dir} is inside a git work tree; keep secrets outside the repository "
            f"(set TOISIO_HOME or TOISIO_KEY_DIR)"
        )
    key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(key_dir, 0o700)
    path = key_dir / f"{name}.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(KEY_BYTES))
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyStoreError(f"{path} is readable by others (mode {mode:o}); chmod 600 it")
    return Secret(name, bytes.fromhex(path.read_text().strip()), store=key_dir)


def master_key(key_dir: Path) -> Secret:
    """The pseudonymisation master key (env ``TOISIO_MASTER_KEY`` or ``<key_dir>/master.key``)."""
    return _load_or_create(key_dir, "master", MASTER_KEY_ENV)


def audit_key(key_dir: Path) -> Secret:
    """The audit chain HMAC key (env ``TOISIO_AUDIT_KEY`` or ``<key_dir>/audit.key``)."""
    return _load_or_create(key_dir, "audit", AUDIT_KEY_ENV)


def credential_key(key_dir: Path) -> Secret:
    """The key that seals TOTP secrets and signs sign-in state (env ``TOISIO_CREDENTIAL_KEY`` or
    ``<key_dir>/credential.key``)."""
    return _load_or_create(key_dir, "credential", CREDENTIAL_KEY_ENV)


def receipt_key(key_dir: Path) -> Secret:
    """The key the DP query service signs its receipts with (env ``TOISIO_RECEIPT_KEY`` or
    ``<key_dir>/receipt.key``); never given to a workspace."""
    return _load_or_create(key_dir, "receipt", RECEIPT_KEY_ENV)
