"""Who is acting: users, their roles, how they sign in, and their API tokens.

The foundation owns identity; every stage receives an authenticated :class:`Actor` and checks its
own permissions against it.  A person signs in one of two ways:

* a **local account**: a password hashed with argon2id (``argon2-cffi``) and a TOTP second factor
  (``pyotp``; the secret is stored encrypted with the key store's credential key).  This is the
  embedded default ``make demo`` uses.
* an **OpenID Connect identity** (issuer + subject) linked to the user by an operator; the identity
  provider's ``amr``/``acr`` claims say whether it did multi-factor authentication.

Either way the result is an **API token**: named, expiring (90 days by default), its last use
recorded, rotatable and revocable.  Only a token's SHA-256 is stored.  The CLI, the REST API and
the portal all resolve a token to an :class:`Actor` with :func:`authenticate`.

Operator commands run on the service host are recorded as the operating-system user,
``operator:<name>`` (:func:`operator`).

The state that decides permissions - a user's roles, registries and whether they are active, and a
token's owner, expiry and revocation - is chained: each change appends a digest of it to the audit
log in the same transaction, and :func:`authenticate` refuses a user or token whose stored state
differs from what the chain recorded.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Boolean, Connection, ForeignKey, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from toisio import audit
from toisio.db import Base, read_connection
from toisio.errors import Conflict, Forbidden, Invalid, NotFoundError, Unauthenticated
from toisio.text import check_unicode as _check_unicode

#: Days an API token is valid unless asked otherwise, and the longest allowed.
TOKEN_DAYS = 90
TOKEN_MAX_DAYS = 366
#: Failed sign-ins in a row before an account is locked, and for how long.
MAX_FAILED_LOGINS = 5
LOCK_MINUTES = 15
MIN_PASSWORD_LENGTH = 12
TOKEN_PREFIX = "tsk_"
#: last use is written at most this often per token (a write per request would serialise readers)
LAST_USE_RESOLUTION = timedelta(seconds=60)


class Role(StrEnum):
    """Service roles held by users, and the two case relations (applicant, member) the permit stage adds."""

    APPLICANT = "applicant"
    MEMBER = "member"
    HANDLER = "handler"
    DECIDER = "decider"
    CONTROLLER = "controller"
    OUTPUT_CHECKER = "output_checker"
    AUDITOR = "auditor"
    SYSTEM = "system"
    OPERATOR = "operator"


#: Roles an operator may give a user (the case relations come from cases; system and operator are never users).
GRANTABLE_ROLES = frozenset({Role.HANDLER, Role.DECIDER, Role.CONTROLLER, Role.OUTPUT_CHECKER, Role.AUDITOR})


class AuthMethod(StrEnum):
    PASSWORD_TOTP = "password+totp"
    OIDC = "oidc"
    TOKEN = "token"
    OPERATOR = "operator"
    SERVICE = "service"


@dataclass(frozen=True)
class Actor:
    """An authenticated user (or the service itself, or an operator on the host) and what they hold."""

    user_id: str
    roles: frozenset[Role] = frozenset()
    registries: frozenset[str] = frozenset()
    #: how this actor proved who they are; ``mfa`` whether a second factor was part of it
    method: AuthMethod = AuthMethod.TOKEN
    mfa: bool = False

    def has(self, role: Role) -> bool:
        return role in self.roles


SYSTEM = Actor("system", frozenset({Role.SYSTEM}), method=AuthMethod.SERVICE)


def operator(name: str | None = None, *, scheduled_job: bool = False) -> Actor:
    """The operating-system user running an operator command on the service host (``operator:<name>``).

    With ``scheduled_job`` they run one of the service's own jobs (expiring permits, tidying drafts) and so
    also hold the ``system`` role for it; the audit log still names them."""
    roles = {Role.OPERATOR, Role.SYSTEM} if scheduled_job else {Role.OPERATOR}
    return Actor(f"operator:{name or getpass.getuser()}", frozenset(roles), method=AuthMethod.OPERATOR)


# ---------------------------------------------------------------- tables

class UserRow(Base):
    """A person with their service roles (controllers also with the registries they answer for)."""

    __tablename__ = "app_user"

    user_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(200))
    roles: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of service roles
    registries: Mapped[str] = mapped_column(Text, default="[]")  # JSON list, for controllers
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    language: Mapped[str | None] = mapped_column(String(5), nullable=True)  # the portal's language, once chosen
    notify_by: Mapped[str | None] = mapped_column(String(8), nullable=True)  # email (default) or inbox only


class CredentialRow(Base):
    """A local account's password hash and encrypted TOTP secret, with its sign-in failure count."""

    __tablename__ = "user_credential"

    user_id: Mapped[str] = mapped_column(ForeignKey("app_user.user_id"), primary_key=True)
    password_hash: Mapped[str] = mapped_column(Text)
    totp_secret: Mapped[str] = mapped_column(Text)  # AES-GCM under the credential key, base64
    totp_last_step: Mapped[int] = mapped_column(Integer, default=0)  # a code is accepted once
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[str | None] = mapped_column(String(32), nullable=True)
    password_set_at: Mapped[str] = mapped_column(String(32))


class OidcIdentityRow(Base):
    """An OpenID Connect identity (issuer, subject) that signs in as a user."""

    __tablename__ = "user_oidc_identity"

    issuer: Mapped[str] = mapped_column(String(300), primary_key=True)
    subject: Mapped[str] = mapped_column(String(300), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("app_user.user_id"), index=True)


class ApiTokenRow(Base):
    """An API token: only its SHA-256 is stored."""

    __tablename__ = "api_token"

    token_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("app_user.user_id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[str] = mapped_column(String(32))
    last_used_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    revoked_at: Mapped[str | None] = mapped_column(String(32), nullable=True)
    method: Mapped[str] = mapped_column(String(32), default=AuthMethod.TOKEN.value)
    mfa: Mapped[bool] = mapped_column(Boolean, default=False)


# ---------------------------------------------------------------- value objects

@dataclass(frozen=True)
class User:
    user_id: str
    name: str
    email: str
    roles: frozenset[Role]
    registries: frozenset[str]
    active: bool
    local_account: bool
    oidc: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TokenInfo:
    """An API token as its owner sees it (never its value)."""

    token_id: str
    user_id: str
    name: str
    created_at: str
    expires_at: str
    last_used_at: str | None
    revoked_at: str | None

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        return "expired" if self.expires_at <= _now() else "active"


@dataclass(frozen=True)
class NewToken:
    """A token just issued: its value is shown once."""

    info: TokenInfo
    value: str


@dataclass(frozen=True)
class Enrolment:
    """What a new local account's owner needs once: the first password (if generated) and the TOTP secret."""

    user_id: str
    password: str | None
    totp_secret: str
    totp_uri: str


# ---------------------------------------------------------------- helpers

def _now(at: datetime | None = None) -> str:
    return (at or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_hasher = PasswordHasher()


def _seal(svc, plain: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(svc.credential_key.value[:32]).encrypt(nonce, plain.encode(), b"toisio-totp")
    return base64.b64encode(nonce + sealed).decode()


def _unseal(svc, sealed: str) -> str:
    raw = base64.b64decode(sealed)
    return AESGCM(svc.credential_key.value[:32]).decrypt(raw[:12], raw[12:], b"toisio-totp").decode()


def check_unicode(data) -> None:
    try:
        _check_unicode(data)
    except ValueError as exc:
        raise Invalid(str(exc), code="invalid_text") from None


def _user_row(conn: Connection, user_id: str):
    return conn.execute(select(UserRow).where(UserRow.user_id == user_id)).first()


def user_digest(conn: Connection, user_id: str) -> str:
    """SHA-256 over what decides a user's permissions: roles, registries, active, linked identities."""
    row = _user_row(conn, user_id)
    oidc = sorted([r.issuer, r.subject] for r in conn.execute(
        select(OidcIdentityRow).where(OidcIdentityRow.user_id == user_id)))
    body = {"user_id": user_id, "roles": json.loads(row.roles), "registries": json.loads(row.registries),
            "active": bool(row.active), "oidc": oidc}
    return hashlib.sha256(audit.canonical_json(body).encode()).hexdigest()


def _token_digest(row) -> str:
    body = {"token_id": row.token_id, "user_id": row.user_id, "sha256": row.sha256, "expires_at": row.expires_at,
            "revoked_at": row.revoked_at, "method": row.method, "mfa": bool(row.mfa)}
    return hashlib.sha256(audit.canonical_json(body).encode()).hexdigest()


def _record_user(conn: Connection, svc, by: Actor, user_id: str, action: str, payload: dict | None = None) -> None:
    audit.append(conn, svc.audit_key, actor=by.user_id, action=action, subject=f"user:{user_id}",
                 payload={**(payload or {}), "user_digest": user_digest(conn, user_id)})


def _record_token(conn: Connection, svc, by: Actor, token_id: str, action: str, payload: dict | None = None) -> None:
    row = conn.execute(select(ApiTokenRow).where(ApiTokenRow.token_id == token_id)).first()
    audit.append(conn, svc.audit_key, actor=by.user_id, action=action, subject=f"token:{token_id}",
                 payload={**(payload or {}), "user_id": row.user_id, "name": row.name,
                          "expires_at": row.expires_at, "token_digest": _token_digest(row)})


def _check_vouched(conn: Connection, svc, subject: str, field: str, actual: str, what: str) -> None:
    try:
        audit.check_head(conn, svc.audit_key)
        recorded = audit.recorded_digest(conn, svc.audit_key, subject, field)
    except audit.AuditError as exc:
        raise Unauthenticated(f"{what} cannot be trusted: {exc}", code="identity_tampered") from None
    if recorded != actual:
        raise Unauthenticated(f"{what} differs from what the audit log recorded (edited outside the service); "
                              f"refusing it", code="identity_tampered")


def _actor_from(row, *, method: AuthMethod, mfa: bool) -> Actor:
    return Actor(row.user_id, frozenset(Role(r) for r in json.loads(row.roles)),
                 frozenset(json.loads(row.registries)), method=method, mfa=mfa)


def _check_operator(by: Actor, doing: str) -> None:
    if Role.OPERATOR not in by.roles and Role.SYSTEM not in by.roles:
        raise Forbidden(f"only an operator on the service host may {doing} ({by.user_id} is not one)",
                        code="forbidden")


def _check_roles(roles) -> list[str]:
    out = []
    for r in roles:
        if r not in {x.value for x in GRANTABLE_ROLES}:
            raise Invalid(f"unknown or ungrantable role {r!r}; a user may hold "
                          f"{', '.join(sorted(x.value for x in GRANTABLE_ROLES))}", code="unknown_role")
        out.append(str(r))
    return sorted(set(out))


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid(f"a password needs at least {MIN_PASSWORD_LENGTH} characters", code="weak_password")
    check_unicode(password)


# ---------------------------------------------------------------- users (operator)

def create_user(svc, by: Actor, user_id: str, name: str, email: str, roles=(), registries=(), *,
                password: str | None = None, local: bool = True) -> Enrolment | None:
    """Create a user (operator only).  With ``local`` (the default) they get a local account: the password
    given (or a generated one) and a new TOTP secret, returned once in the :class:`Enrolment`."""
    _check_operator(by, "add users")
    roles_ = _check_roles(roles)
    check_unicode([user_id, name, email])
    if not user_id or len(user_id) > 100 or any(c.isspace() for c in user_id) or ":" in user_id:
        raise Invalid(f"a user id is 1-100 characters with no spaces or ':' (got {user_id!r})", code="bad_user_id")
    if password is not None:
        check_password_strength(password)
    with svc.engine.begin() as conn:
        if _user_row(conn, user_id) is not None:
            raise Conflict(f"a user {user_id!r} already exists", code="user_exists")
        conn.execute(UserRow.__table__.insert().values(
            user_id=user_id, name=name, email=email, roles=json.dumps(roles_),
            registries=json.dumps(sorted(set(registries))), active=True))
        _record_user(conn, svc, by, user_id, "user.created",
                     {"roles": roles_, "registries": sorted(set(registries)), "local_account": local})
        if not local:
            return None
        return _set_credentials(conn, svc, by, user_id, password)


def _set_credentials(conn: Connection, svc, by: Actor, user_id: str, password: str | None) -> Enrolment:
    generated = password is None
    password = password or secrets.token_urlsafe(15)
    secret = pyotp.random_base32()
    values = {"password_hash": _hasher.hash(password), "totp_secret": _seal(svc, secret), "totp_last_step": 0,
              "failed_logins": 0, "locked_until": None, "password_set_at": _now()}
    if conn.execute(select(CredentialRow.user_id).where(CredentialRow.user_id == user_id)).first() is None:
        conn.execute(CredentialRow.__table__.insert().values(user_id=user_id, **values))
    else:
        conn.execute(update(CredentialRow).where(CredentialRow.user_id == user_id).values(**values))
    audit.append(conn, svc.audit_key, actor=by.user_id, action="user.credentials_set", subject=f"user:{user_id}",
                 payload={"generated_password": generated})
    uri = pyotp.TOTP(secret).provisioning_uri(name=user_id, issuer_name="Toisio")
    return Enrolment(user_id, password if generated else None, secret, uri)


def reset_credentials(svc, by: Actor, user_id: str, *, password: str | None = None) -> Enrolment:
    """A new password and TOTP secret for a local account (operator only; every token of the user is revoked)."""
    _check_operator(by, "reset credentials")
    if password is not None:
        check_password_strength(password)
    with svc.engine.begin() as conn:
        if _user_row(conn, user_id) is None:
            raise NotFoundError(f"no user {user_id!r}", code="no_such_user")
        _revoke_all(conn, svc, by, user_id, "credentials reset")
        return _set_credentials(conn, svc, by, user_id, password)


def set_active(svc, by: Actor, user_id: str, active: bool) -> None:
    """Deactivate (every token revoked, no sign-in) or reactivate a user (operator only)."""
    _check_operator(by, "deactivate or reactivate users")
    with svc.engine.begin() as conn:
        if _user_row(conn, user_id) is None:
            raise NotFoundError(f"no user {user_id!r}", code="no_such_user")
        conn.execute(update(UserRow).where(UserRow.user_id == user_id).values(active=active))
        if not active:
            _revoke_all(conn, svc, by, user_id, "user deactivated")
        _record_user(conn, svc, by, user_id, "user.reactivated" if active else "user.deactivated")


def set_roles(svc, by: Actor, user_id: str, roles, registries=()) -> None:
    """Replace a user's service roles and registries (operator only)."""
    _check_operator(by, "change roles")
    roles_ = _check_roles(roles)
    with svc.engine.begin() as conn:
        if _user_row(conn, user_id) is None:
            raise NotFoundError(f"no user {user_id!r}", code="no_such_user")
        conn.execute(update(UserRow).where(UserRow.user_id == user_id).values(
            roles=json.dumps(roles_), registries=json.dumps(sorted(set(registries)))))
        _record_user(conn, svc, by, user_id, "user.roles_changed",
                     {"roles": roles_, "registries": sorted(set(registries))})


def link_oidc(svc, by: Actor, user_id: str, issuer: str, subject: str) -> None:
    """Let an OpenID Connect identity sign in as ``user_id`` (operator only)."""
    _check_operator(by, "link identities")
    with svc.engine.begin() as conn:
        if _user_row(conn, user_id) is None:
            raise NotFoundError(f"no user {user_id!r}", code="no_such_user")
        taken = conn.execute(select(OidcIdentityRow).where(OidcIdentityRow.issuer == issuer,
                                                           OidcIdentityRow.subject == subject)).first()
        if taken is not None:
            raise Conflict(f"that identity already signs in as {taken.user_id!r}", code="identity_linked")
        conn.execute(OidcIdentityRow.__table__.insert().values(issuer=issuer, subject=subject, user_id=user_id))
        _record_user(conn, svc, by, user_id, "user.oidc_linked", {"issuer": issuer, "subject": subject})


def get_user(svc, user_id: str) -> User:
    with read_connection(svc.engine) as conn:
        row = _user_row(conn, user_id)
        if row is None:
            raise NotFoundError(f"no user {user_id!r}", code="no_such_user")
        local = conn.execute(select(CredentialRow.user_id).where(CredentialRow.user_id == user_id)).first()
        oidc = tuple((r.issuer, r.subject) for r in conn.execute(
            select(OidcIdentityRow).where(OidcIdentityRow.user_id == user_id)))
    return User(row.user_id, row.name, row.email, frozenset(Role(r) for r in json.loads(row.roles)),
                frozenset(json.loads(row.registries)), bool(row.active), local is not None, oidc)


def language_of(svc, actor: Actor) -> str | None:
    """The language the user last chose in the portal (fi, sv or en), if any."""
    with read_connection(svc.engine) as conn:
        row = _user_row(conn, actor.user_id)
    return row.language if row is not None else None


def set_language(svc, actor: Actor, language: str) -> None:
    """Remember the user's language (a preference: it decides no permission, so it is not chained)."""
    if language not in ("fi", "sv", "en"):
        raise Invalid(f"unknown language {language!r}; use fi, sv or en", code="unknown_language")
    with svc.engine.begin() as conn:
        conn.execute(update(UserRow).where(UserRow.user_id == actor.user_id).values(language=language))


def list_users(svc) -> list[User]:
    with read_connection(svc.engine) as conn:
        ids = [r[0] for r in conn.execute(select(UserRow.user_id).order_by(UserRow.user_id))]
    return [get_user(svc, u) for u in ids]


def ensure_user(conn: Connection, svc, by: Actor, user_id: str, name: str, email: str) -> None:
    """Create a user with no roles and no credentials if none exists (a person named on an application
    before they have an account; an operator gives them a way to sign in later)."""
    if _user_row(conn, user_id) is None:
        conn.execute(UserRow.__table__.insert().values(user_id=user_id, name=name, email=email, roles="[]",
                                                       registries="[]", active=True))
        _record_user(conn, svc, by, user_id, "user.created", {"roles": [], "registries": [],
                                                               "local_account": False, "named_on_application": True})


def actor_for(conn: Connection, user_id: str) -> Actor:
    """The actor of an active user, without authentication: for the service's own jobs and for tests.

    Entry points (CLI, API, portal) never use this; they call :func:`authenticate`."""
    row = conn.execute(select(UserRow).where(UserRow.user_id == user_id, UserRow.active)).first()
    if row is None:
        raise NotFoundError(f"no active user {user_id!r}", code="no_such_user")
    return _actor_from(row, method=AuthMethod.SERVICE, mfa=False)


def actors_with_role(conn: Connection, role: Role) -> list[Actor]:
    """The actors of every active user who holds ``role`` (for the service's own jobs: whom to tell)."""
    return [_actor_from(row, method=AuthMethod.SERVICE, mfa=False)
            for row in conn.execute(select(UserRow).where(UserRow.active).order_by(UserRow.user_id))
            if role.value in json.loads(row.roles)]


# ---------------------------------------------------------------- signing in

def _fail(conn: Connection, svc, user_id: str, why: str, *, count: bool = True) -> Unauthenticated:
    if count:
        cred = conn.execute(select(CredentialRow).where(CredentialRow.user_id == user_id)).first()
        if cred is not None:
            failed = cred.failed_logins + 1
            locked = _now(datetime.now(UTC) + timedelta(minutes=LOCK_MINUTES)) if failed >= MAX_FAILED_LOGINS else None
            conn.execute(update(CredentialRow).where(CredentialRow.user_id == user_id).values(
                failed_logins=0 if locked else failed, locked_until=locked or cred.locked_until))
    audit.append(conn, svc.audit_key, actor=f"anonymous:{user_id}"[:200], action="auth.login_failed",
                 subject=f"user:{user_id}"[:200], payload={"reason": why})
    return Unauthenticated("sign-in failed: wrong user id, password or one-time code", code="login_failed")


def login_local(svc, user_id: str, password: str, code: str, *, token_name: str = "login",
                days: int = TOKEN_DAYS) -> NewToken:
    """Sign in with a password and a TOTP code; returns a new API token.  Failures are audited, and
    :data:`MAX_FAILED_LOGINS` in a row lock the account for :data:`LOCK_MINUTES` minutes."""
    failure: Unauthenticated | None = None
    with svc.engine.begin() as conn:
        row = _user_row(conn, user_id)
        cred = conn.execute(select(CredentialRow).where(CredentialRow.user_id == user_id)).first()
        if row is None or cred is None:
            failure = _fail(conn, svc, user_id, "no local account", count=False)
        elif cred.locked_until and _parse(cred.locked_until) > datetime.now(UTC):
            failure = _fail(conn, svc, user_id, "account locked", count=False)
            failure = Unauthenticated(f"too many failed sign-ins; try again after {cred.locked_until[:16]} UTC",
                                      code="account_locked")
        elif not row.active:
            failure = _fail(conn, svc, user_id, "user deactivated", count=False)
        else:
            try:
                _hasher.verify(cred.password_hash, password)
                ok_password = True
            except (VerificationError, InvalidHashError):
                ok_password = False
            totp = pyotp.TOTP(_unseal(svc, cred.totp_secret))
            step = _matching_step(totp, code)
            if not ok_password:
                failure = _fail(conn, svc, user_id, "wrong password")
            elif step is None:
                failure = _fail(conn, svc, user_id, "wrong one-time code")
            elif step <= cred.totp_last_step:
                failure = _fail(conn, svc, user_id, "one-time code used before")
            else:
                _check_vouched(conn, svc, f"user:{user_id}", "user_digest", user_digest(conn, user_id),
                               f"user {user_id}")
                values = {"totp_last_step": step, "failed_logins": 0, "locked_until": None}
                if _hasher.check_needs_rehash(cred.password_hash):
                    values["password_hash"] = _hasher.hash(password)
                conn.execute(update(CredentialRow).where(CredentialRow.user_id == user_id).values(**values))
                audit.append(conn, svc.audit_key, actor=user_id, action="auth.login", subject=f"user:{user_id}",
                             payload={"method": AuthMethod.PASSWORD_TOTP.value, "mfa": True})
                by = _actor_from(row, method=AuthMethod.PASSWORD_TOTP, mfa=True)
                return _issue(conn, svc, by, user_id, token_name, days)
    raise failure


def _matching_step(totp: pyotp.TOTP, code: str, window: int = 1) -> int | None:
    """The time step whose code ``code`` is (this one or one either side), or None."""
    code = (code or "").strip().replace(" ", "")
    if not code.isdigit():
        return None
    now = datetime.now(UTC)
    step_now = totp.timecode(now)
    for off in range(-window, window + 1):
        at = now + timedelta(seconds=off * totp.interval)
        if hmac.compare_digest(totp.at(at), code):
            return step_now + off
    return None


def change_password(svc, actor: Actor, old: str, new: str) -> None:
    """A user changes their own local password (needs the old one)."""
    check_password_strength(new)
    with svc.engine.begin() as conn:
        cred = conn.execute(select(CredentialRow).where(CredentialRow.user_id == actor.user_id)).first()
        if cred is None:
            raise Conflict(f"{actor.user_id} has no local account", code="no_local_account")
        try:
            _hasher.verify(cred.password_hash, old)
        except (VerificationError, InvalidHashError):
            raise _fail(conn, svc, actor.user_id, "wrong password on change") from None
        conn.execute(update(CredentialRow).where(CredentialRow.user_id == actor.user_id).values(
            password_hash=_hasher.hash(new), password_set_at=_now()))
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="user.password_changed",
                     subject=f"user:{actor.user_id}", payload={})


def mfa_from_claims(claims: dict) -> bool:
    """Whether an identity provider says it did multi-factor authentication (``amr`` or ``acr``)."""
    amr = claims.get("amr") or []
    if isinstance(amr, str):
        amr = [amr]
    if {"mfa", "otp", "hwk", "swk", "sms", "fpt", "face", "iris"} & {str(a).lower() for a in amr}:
        return True
    acr = str(claims.get("acr") or "").lower()
    return any(t in acr for t in ("mfa", "multi", "loa3", "loa4", "substantial", "high", "2fa"))


def login_oidc(svc, claims: dict, *, token_name: str = "oidc", days: int = TOKEN_DAYS,
               require_mfa: bool = True) -> NewToken:
    """Sign in with an identity provider's verified ID token claims (``iss``, ``sub``, ``amr``/``acr``).

    The claims must come from a token the caller verified (authlib does, in the API's callback).  With
    ``require_mfa`` a provider that did not report multi-factor authentication is refused."""
    issuer, subject = str(claims.get("iss") or ""), str(claims.get("sub") or "")
    mfa = mfa_from_claims(claims)
    with svc.engine.begin() as conn:
        link = conn.execute(select(OidcIdentityRow).where(OidcIdentityRow.issuer == issuer,
                                                          OidcIdentityRow.subject == subject)).first()
        row = _user_row(conn, link.user_id) if link else None
        who = link.user_id if link else f"{issuer}#{subject}"
        if row is None or not row.active:
            failure = _fail(conn, svc, who, "identity not linked" if row is None else "user deactivated",
                            count=False)
        elif require_mfa and not mfa:
            failure = _fail(conn, svc, who, "identity provider did not report multi-factor authentication",
                            count=False)
            failure = Unauthenticated("your identity provider did not report multi-factor authentication, which "
                                      "this service requires", code="mfa_required")
        else:
            _check_vouched(conn, svc, f"user:{row.user_id}", "user_digest", user_digest(conn, row.user_id),
                           f"user {row.user_id}")
            audit.append(conn, svc.audit_key, actor=row.user_id, action="auth.login", subject=f"user:{row.user_id}",
                         payload={"method": AuthMethod.OIDC.value, "mfa": mfa, "issuer": issuer})
            by = _actor_from(row, method=AuthMethod.OIDC, mfa=mfa)
            return _issue(conn, svc, by, row.user_id, token_name, days)
    raise failure


# ---------------------------------------------------------------- tokens

def _info(row) -> TokenInfo:
    return TokenInfo(row.token_id, row.user_id, row.name, row.created_at, row.expires_at, row.last_used_at,
                     row.revoked_at)


def _issue(conn: Connection, svc, by: Actor, user_id: str, name: str, days: int) -> NewToken:
    check_unicode(name)
    if not name or len(name) > 100:
        raise Invalid("a token needs a name of 1-100 characters", code="bad_token_name")
    if not 1 <= days <= TOKEN_MAX_DAYS:
        raise Invalid(f"a token is valid for 1-{TOKEN_MAX_DAYS} days (got {days})", code="bad_token_days")
    token_id = secrets.token_hex(6)
    value = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    now = datetime.now(UTC)
    conn.execute(ApiTokenRow.__table__.insert().values(
        token_id=token_id, user_id=user_id, name=name, sha256=token_hash(value), created_at=_now(now),
        expires_at=_now(now + timedelta(days=days)), last_used_at=None, revoked_at=None,
        method=by.method.value if by.user_id == user_id else AuthMethod.TOKEN.value,
        mfa=by.mfa if by.user_id == user_id else False))
    _record_token(conn, svc, by, token_id, "token.created", {"days": days})
    row = conn.execute(select(ApiTokenRow).where(ApiTokenRow.token_id == token_id)).first()
    return NewToken(_info(row), value)


def _check_may_manage(by: Actor, user_id: str) -> None:
    if by.user_id != user_id and Role.OPERATOR not in by.roles:
        raise Forbidden(f"{by.user_id} may manage only their own tokens (an operator may manage anyone's)",
                        code="forbidden")


def create_token(svc, by: Actor, name: str, *, user_id: str | None = None, days: int = TOKEN_DAYS) -> NewToken:
    """A new named token for ``by`` (or, by an operator, for ``user_id``); its value is shown once."""
    user_id = user_id or by.user_id
    _check_may_manage(by, user_id)
    with svc.engine.begin() as conn:
        row = _user_row(conn, user_id)
        if row is None or not row.active:
            raise NotFoundError(f"no active user {user_id!r}", code="no_such_user")
        return _issue(conn, svc, by, user_id, name, days)


def list_tokens(svc, by: Actor, *, user_id: str | None = None) -> list[TokenInfo]:
    user_id = user_id or by.user_id
    _check_may_manage(by, user_id)
    with read_connection(svc.engine) as conn:
        return [_info(r) for r in conn.execute(select(ApiTokenRow).where(ApiTokenRow.user_id == user_id)
                                               .order_by(ApiTokenRow.created_at))]


def _token_row(conn: Connection, by: Actor, token_id: str):
    row = conn.execute(select(ApiTokenRow).where(ApiTokenRow.token_id == token_id)).first()
    if row is None:
        raise NotFoundError(f"no token {token_id!r}", code="no_such_token")
    _check_may_manage(by, row.user_id)
    return row


def revoke_token(svc, by: Actor, token_id: str) -> TokenInfo:
    with svc.engine.begin() as conn:
        row = _token_row(conn, by, token_id)
        if row.revoked_at is None:
            conn.execute(update(ApiTokenRow).where(ApiTokenRow.token_id == token_id).values(revoked_at=_now()))
            _record_token(conn, svc, by, token_id, "token.revoked")
        return _info(conn.execute(select(ApiTokenRow).where(ApiTokenRow.token_id == token_id)).first())


def rotate_token(svc, by: Actor, token_id: str, *, days: int = TOKEN_DAYS) -> NewToken:
    """A new token with the same name and owner; the old one is revoked in the same transaction."""
    with svc.engine.begin() as conn:
        row = _token_row(conn, by, token_id)
        if row.revoked_at is not None:
            raise Conflict(f"token {token_id} is revoked; create a new one", code="token_revoked")
        conn.execute(update(ApiTokenRow).where(ApiTokenRow.token_id == token_id).values(revoked_at=_now()))
        _record_token(conn, svc, by, token_id, "token.revoked", {"rotated": True})
        return _issue(conn, svc, by, row.user_id, row.name, days)


def sign_out(svc, token: str) -> None:
    """Revoke the token presented (signing out of the CLI or the portal)."""
    actor = authenticate(svc, token)
    with svc.engine.begin() as conn:
        row = conn.execute(select(ApiTokenRow).where(ApiTokenRow.sha256 == token_hash(token.strip()))).first()
        conn.execute(update(ApiTokenRow).where(ApiTokenRow.token_id == row.token_id).values(revoked_at=_now()))
        _record_token(conn, svc, actor, row.token_id, "token.revoked", {"reason": "signed out"})


def _revoke_all(conn: Connection, svc, by: Actor, user_id: str, why: str) -> None:
    live = [r.token_id for r in conn.execute(select(ApiTokenRow.token_id).where(
        ApiTokenRow.user_id == user_id, ApiTokenRow.revoked_at.is_(None)))]
    for token_id in live:
        conn.execute(update(ApiTokenRow).where(ApiTokenRow.token_id == token_id).values(revoked_at=_now()))
        _record_token(conn, svc, by, token_id, "token.revoked", {"reason": why})


@dataclass(frozen=True)
class _Signed:
    """A token and its user as verified against the chain (kept in :attr:`Service.verified`)."""

    token_id: str
    user_id: str
    expires_at: str
    last_used_at: str | None
    actor: Actor

    @property
    def vouching(self) -> list[tuple[str, str]]:
        return [(f"token:{self.token_id}", "token_digest"), (f"user:{self.user_id}", "user_digest")]


def authenticate(svc, token: str | None) -> Actor:
    """The actor a bearer token belongs to; :class:`Unauthenticated` saying why if it does not (none, unknown,
    expired, revoked, user deactivated, or the user or token edited outside the service).

    The token and its user are verified against the chain in full the first time and whenever the service has
    changed either since (a revocation, a role change, a deactivation: each appends a vouching entry); in
    between, one indexed look at the chain confirms that what this process verified still holds."""
    if not token:
        raise Unauthenticated("no credentials: sign in with `toisio login` or send 'Authorization: Bearer <token>'",
                              code="unauthenticated")
    digest = token_hash(token.strip())
    key = ("token", digest)
    kept, signed = svc.verified.peek(key), None
    if kept is not None:
        signed = svc.verified.get(key, audit.current_stamp(svc.engine, kept.vouching))
    if signed is None:
        with read_connection(svc.engine) as conn:
            signed = _verify_token(conn, svc, digest)
    if _parse(signed.expires_at) <= datetime.now(UTC):
        raise Unauthenticated(f"token {signed.token_id} expired on {signed.expires_at[:10]}; sign in again",
                              code="token_expired")
    if signed.last_used_at is None or _parse(signed.last_used_at) < datetime.now(UTC) - LAST_USE_RESOLUTION:
        now = _now()
        with svc.engine.begin() as conn:
            conn.execute(update(ApiTokenRow).where(ApiTokenRow.token_id == signed.token_id).values(last_used_at=now))
        svc.verified.touch(key, lambda s: replace(s, last_used_at=now))
    return signed.actor


def _verify_token(conn: Connection, svc, digest: str) -> _Signed:
    """The token with this hash and its user, checked in full against the chain, and kept for later requests
    under the stamp read before the check (a change landing during the check makes the next request check
    again)."""
    found = conn.execute(select(ApiTokenRow.token_id, ApiTokenRow.user_id).where(ApiTokenRow.sha256 == digest)).first()
    if found is None:
        raise Unauthenticated("unknown token", code="token_unknown")
    stamp = audit.stamp(conn, [(f"token:{found.token_id}", "token_digest"), (f"user:{found.user_id}",
                                                                               "user_digest")])
    row = conn.execute(select(ApiTokenRow).where(ApiTokenRow.sha256 == digest)).first()
    if row is None or (row.token_id, row.user_id) != tuple(found):
        raise Unauthenticated("unknown token", code="token_unknown")
    if row.revoked_at:
        raise Unauthenticated(f"token {row.token_id} was revoked on {row.revoked_at[:10]}", code="token_revoked")
    user = _user_row(conn, row.user_id)
    if user is None or not user.active:
        raise Unauthenticated(f"user {row.user_id} is deactivated", code="user_inactive")
    _check_vouched(conn, svc, f"token:{row.token_id}", "token_digest", _token_digest(row), f"token {row.token_id}")
    _check_vouched(conn, svc, f"user:{row.user_id}", "user_digest", user_digest(conn, row.user_id),
                   f"user {row.user_id}")
    signed = _Signed(row.token_id, row.user_id, row.expires_at, row.last_used_at,
                     _actor_from(user, method=AuthMethod(row.method), mfa=bool(row.mfa)))
    svc.verified.put(("token", digest), stamp, signed)
    return signed


def verify_identities(svc) -> list[tuple[str, str]]:
    """Every user or token whose stored state the audit chain does not vouch for (for ``audit verify``)."""
    bad = []
    with read_connection(svc.engine) as conn:
        checks = [(f"user:{u}", "user_digest", user_digest(conn, u))
                  for (u,) in conn.execute(select(UserRow.user_id).order_by(UserRow.user_id))]
        checks += [(f"token:{r.token_id}", "token_digest", _token_digest(r))
                   for r in conn.execute(select(ApiTokenRow).order_by(ApiTokenRow.token_id))]
        for subject, field, actual in checks:
            try:
                recorded = audit.recorded_digest(conn, svc.audit_key, subject, field)
            except audit.AuditError as exc:
                bad.append((subject, str(exc)))
                continue
            if recorded != actual:
                bad.append((subject, "edited outside the service (differs from the audit log)"
                            if recorded else "no audit entry records it"))
    return bad


def record_baselines(svc, by: Actor) -> list[str]:
    """Record in the audit chain the state of every user that no entry vouches for yet (users created before
    the chain covered identity; run by ``toisio db upgrade``).  Returns their ids."""
    _check_operator(by, "record identity baselines")
    done = []
    with svc.engine.begin() as conn:
        for (user_id,) in conn.execute(select(UserRow.user_id).order_by(UserRow.user_id)).all():
            if audit.recorded_digest(conn, svc.audit_key, f"user:{user_id}", "user_digest") is None:
                _record_user(conn, svc, by, user_id, "user.baseline_recorded")
                done.append(user_id)
    return done
