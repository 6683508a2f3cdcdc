"""Governed ingress: code or lookup tables come into a workspace only through an approved import request.

The browser cannot upload files into a workspace (:mod:`secure_env.workspace.browser_rules`).  An analyst
named on a permit in force asks for a file to be imported, with a purpose; a data steward (an
output checker who is neither the requester nor named on the permit) approves or rejects it.  On
approval the file, re-checked against the SHA-256 recorded at the request, is copied read-only
into the workspace's ``imports/`` folder (SATRE 2.0.1, 3.1.04).

An import request has no table of its own: its state is the fold of its audit events (subject
``import:<id>``), so it is covered by the audit chain and cannot be edited behind it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from permits.permissions import Role
from permits.service import permit_access
from secure_env.workspace.rules import check_named_on_permit_in_force
from toisio import audit
from toisio.authz import Table, rule
from toisio.documents import CodedError
from toisio.identity import Actor
from toisio.service import Service

MAX_IMPORT_BYTES = 10 * 1024 * 1024
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
REQUESTED, APPROVED, REJECTED = "requested", "approved", "rejected"
#: audit action -> the state it leads to (the only transitions: requested -> approved | rejected)
TRANSITIONS = {"import.requested": (None, REQUESTED), "import.approved": (REQUESTED, APPROVED),
               "import.rejected": (REQUESTED, REJECTED)}


class IngressError(CodedError):
    """An import request that cannot be made or decided, with a stable ``code``."""

    default_code = "import"


@dataclass(frozen=True)
class ImportRequest:
    """An import request as folded from its audit events."""

    import_id: str
    permit_id: str
    requester: str
    name: str
    sha256: str
    size: int
    purpose: str
    state: str
    decided_by: str | None = None
    reason: str | None = None


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is a plain file name (letters, digits, ``. _ -``; no path)."""
    return bool(_SAFE_NAME.match(name))


def _staging(svc: Service, import_id: str) -> Path:
    return svc.settings.home / "imports" / import_id


def _fold(events: list[audit.AuditEvent]) -> ImportRequest | None:
    req: ImportRequest | None = None
    for e in events:
        if e.action not in TRANSITIONS:
            continue
        before, after = TRANSITIONS[e.action]
        if e.action == "import.requested":
            p = e.payload
            req = ImportRequest(e.subject.removeprefix("import:"), p["permit_id"], e.actor, p["name"], p["sha256"],
                                p["bytes"], p["purpose"], REQUESTED)
        elif req is not None and req.state == before:
            req = ImportRequest(**{**req.__dict__, "state": after, "decided_by": e.actor,
                                   "reason": e.payload.get("reason")})
    return req


def get(svc: Service, import_id: str) -> ImportRequest:
    with svc.engine.connect() as conn:
        found = _fold(audit.events(conn, subject=f"import:{import_id}"))
    if found is None:
        raise IngressError(f"no import request {import_id!r}", "not_found")
    return found


REQUESTER, NAMED = "requester", "named"
IMPORTS = Table("import", {
    "request": rule("ask for imports into this permit's workspace", {NAMED}),
    "decide": rule("decide this import request", {Role.OUTPUT_CHECKER}, barred={REQUESTER, NAMED}),
    "view": rule("see this import request", {REQUESTER, NAMED, Role.OUTPUT_CHECKER, Role.HANDLER, Role.AUDITOR}),
}, {REQUESTER: "the request's author", NAMED: "an analyst named on the permit"})


def _relations(svc: Service, actor: Actor, permit_id: str, requester: str | None = None) -> frozenset[str]:
    named = actor.user_id in permit_access(svc, permit_id).users
    return frozenset(({NAMED} if named else set()) | ({REQUESTER} if actor.user_id == requester else set()))


def list_imports(svc: Service, actor: Actor, permit_id: str | None = None) -> list[ImportRequest]:
    """Import requests the actor may see (:data:`IMPORTS` ``view``): data stewards, handlers and auditors all,
    analysts their permits'."""
    with svc.engine.connect() as conn:
        events = audit.events(conn, subject_prefix="import:")
    by_id: dict[str, list] = {}
    for e in events:
        by_id.setdefault(e.subject, []).append(e)
    out = [r for r in (_fold(v) for v in by_id.values()) if r is not None]
    return [r for r in out if (permit_id is None or r.permit_id == permit_id)
            and IMPORTS.can("view", actor, _relations(svc, actor, r.permit_id, r.requester))]


def check_can_request(svc: Service, actor: Actor, permit_id: str) -> None:
    """An analyst named on a permit in force asks for imports into its workspace."""
    IMPORTS.check_can("request", actor, _relations(svc, actor, permit_id))
    check_named_on_permit_in_force(svc, actor, permit_id, action="import.request",
                                   doing="ask for imports into its workspace")


def check_can_decide(svc: Service, actor: Actor, req: ImportRequest) -> None:
    """A data steward (output checker) independent of the request and the permit decides an import."""
    IMPORTS.check_can("decide", actor, _relations(svc, actor, req.permit_id, req.requester))


def request_import(svc: Service, actor: Actor, permit_id: str, source: Path, *, purpose: str) -> ImportRequest:
    """Ask for ``source`` (code or a lookup table) to be imported into the permit's workspace."""
    check_can_request(svc, actor, permit_id)
    name = source.name
    if not _SAFE_NAME.match(name):
        raise IngressError(f"{name!r} is not a plain file name (letters, digits, . _ -)", "bad_name")
    if not purpose.strip():
        raise IngressError("say what the file is for (purpose)", "missing_purpose")
    if not source.is_file():
        raise IngressError(f"{source} is not a file", "not_a_file")
    size = source.stat().st_size
    if size > MAX_IMPORT_BYTES:
        raise IngressError(f"{name} is {size:,} bytes; imports are limited to {MAX_IMPORT_BYTES:,}", "too_large")
    data = source.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    with svc.engine.begin() as conn:
        n = sum(1 for e in audit.events(conn, action_prefix="import.requested") if e.payload["permit_id"] == permit_id)
        import_id = f"IMP-{permit_id}-{n + 1}"
        staging = _staging(svc, import_id)
        staging.mkdir(parents=True, mode=0o700)
        (staging / name).write_bytes(data)
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="import.requested",
                     subject=f"import:{import_id}",
                     payload={"permit_id": permit_id, "name": name, "sha256": sha, "bytes": size,
                              "purpose": purpose})
    return get(svc, import_id)


def decide_import(svc: Service, actor: Actor, import_id: str, *, approve: bool, reason: str = "") -> ImportRequest:
    """Approve (copy into the workspace's ``imports/``, read-only) or reject an import request."""
    req = get(svc, import_id)
    check_can_decide(svc, actor, req)
    if req.state != REQUESTED:
        raise IngressError(f"{import_id} is already {req.state}", "already_decided")
    if not approve and not reason.strip():
        raise IngressError("a rejection needs a reason the analyst can act on", "missing_reason")
    staged = _staging(svc, import_id) / req.name
    target = None
    if approve:
        from secure_env.workspace.provision import existing

        if hashlib.sha256(staged.read_bytes()).hexdigest() != req.sha256:
            raise IngressError(f"the staged file of {import_id} changed after it was requested", "tampered")
        if not permit_access(svc, req.permit_id).in_force:
            raise IngressError(f"permit {req.permit_id} is no longer in force", "permit_not_in_force")
        target = existing(svc, req.permit_id).root / "imports" / req.name
        if target.exists():
            raise IngressError(f"{target.name} was already imported into this workspace", "exists")
    # The decision and the copy commit together: if the copy fails, no approval is recorded.
    with svc.engine.begin() as conn:
        audit.append(conn, svc.audit_key, actor=actor.user_id,
                     action="import.approved" if approve else "import.rejected", subject=f"import:{import_id}",
                     payload={"permit_id": req.permit_id, "reason": reason or None, "sha256": req.sha256,
                              **({"path": f"imports/{req.name}"} if target else {})})
        if target is not None:
            target.parent.mkdir(exist_ok=True)
            shutil.copyfile(staged, target)
            os.chmod(target, 0o444)
    shutil.rmtree(_staging(svc, import_id), ignore_errors=True)
    return get(svc, import_id)
