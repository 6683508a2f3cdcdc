"""Per-permit workspaces: layout, access tokens and lifecycle (the JupyterLab server itself comes next).

A workspace belongs to exactly one permit:

``$TOISIO_HOME/workspaces/<permit>/``
  ``root/``      the Jupyter root: notebooks (``examples/`` to start from) and scratch space (size quota)
  ``data/``      the permit's delivered dataset, read-only, *outside* the Jupyter root
  ``config/``    generated Jupyter configuration (lockdown) and the kernelspec
  ``tokens.json`` one login token per named analyst, stored as SHA-256 hashes

It is created only for a data permit in force (never for a data request), its tokens are
issued only to the analysts named on the permit, and a token stops working as soon as its
analyst is no longer named (amendment) or the permit is no longer in force.  Destroying a
workspace deletes its data copy and scratch space and records what was deleted; the permit's
pseudonymisation key is not touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from permits.application import Kind
from permits.permissions import PermissionDenied
from permits.service import form_of, permit_access
from pseudonymise.manifest import load as load_manifest
from secure_env.workspace.lockdown import Lockdown, write_config
from secure_env.workspace.rules import check_can_workspace
from secure_env.workspace.sandbox import KernelLimits, code_dirs, find_cgroups, python_dirs
from toisio import audit
from toisio.documents import CodedError
from toisio.identity import Actor, Role, token_hash
from toisio.service import Service

EXAMPLE_NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


class WorkspaceError(CodedError):
    """A workspace operation that cannot be done, with a stable ``code``."""

    default_code = "workspace"


@dataclass(frozen=True)
class WorkspacePaths:
    base: Path

    @property
    def root(self) -> Path:
        return self.base / "root"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def config(self) -> Path:
        return self.base / "config"

    @property
    def tokens(self) -> Path:
        return self.base / "tokens.json"

    @property
    def runtime(self) -> Path:
        return self.base / "runtime"

    @property
    def server(self) -> Path:
        return self.base / "server.json"

    @property
    def log(self) -> Path:
        return self.base / "server.log"


def paths(svc: Service, permit_id: str) -> WorkspacePaths:
    return WorkspacePaths(svc.settings.home / "workspaces" / permit_id)


def tree_usage(root: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` for every file under ``root`` (hidden ones included)."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            try:
                st = p.stat()
            except FileNotFoundError:
                continue
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def used_bytes(root: Path) -> int:
    return sum(size for size, _ in tree_usage(root).values())


def check_in_force(svc: Service, permit_id: str):
    """The permit's access, or :class:`WorkspaceError` (``permit_not_in_force``) if it is not in force."""
    access = permit_access(svc, permit_id)
    if not access.in_force:
        raise WorkspaceError(f"permit {permit_id} is not in force ({access.reason}); its workspace cannot be used",
                             "permit_not_in_force")
    return access


def existing(svc: Service, permit_id: str) -> WorkspacePaths:
    """The permit's workspace paths, or :class:`WorkspaceError` (``no_workspace``) if it has none."""
    p = paths(svc, permit_id)
    if not p.tokens.exists():
        raise WorkspaceError(f"permit {permit_id} has no workspace (create it first)", "no_workspace")
    return p


def _write_token_hashes(p: WorkspacePaths, hashes: dict[str, str]) -> None:
    p.tokens.write_text(json.dumps(hashes, indent=2, sort_keys=True))
    os.chmod(p.tokens, 0o600)


def _make_read_only(tree: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(tree):
        for f in filenames:
            os.chmod(Path(dirpath) / f, stat.S_IRUSR | stat.S_IRGRP)
        os.chmod(dirpath, stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)


def lockdown_for(svc: Service, permit_id: str, quota_mb: int | None = None) -> Lockdown:
    """The lockdown parameters of a permit's workspace (quota from the workspace record or the settings)."""
    p = paths(svc, permit_id)
    if quota_mb is None:
        meta = p.base / "workspace.json"
        quota_mb = json.loads(meta.read_text())["quota_mb"] if meta.exists() else svc.settings.workspace_quota_mb
    st = svc.settings
    limits = KernelLimits(memory_mb=st.workspace_kernel_memory_mb, processes=st.workspace_kernel_processes,
                          cpu_seconds=st.workspace_kernel_cpu_seconds)
    return Lockdown(permit_id=permit_id, workspace=p.base, home=st.home, key_dir=st.keys, quota_mb=quota_mb,
                    check_seconds=st.workspace_check_seconds, read_max_bytes=st.workspace_read_max_kb * 1024,
                    limits=limits, cgroups=find_cgroups(),
                    python=python_dirs(), code=code_dirs())


def create(svc: Service, actor: Actor, permit_id: str, delivery: Path, *, quota_mb: int | None = None
           ) -> dict[str, str]:
    """Create the permit's workspace with a read-only copy of its delivery; returns a token per analyst."""
    check_can_workspace(svc, actor, permit_id, "create")
    quota_mb = quota_mb or svc.settings.workspace_quota_mb
    access = check_in_force(svc, permit_id)
    if form_of(svc, permit_id).kind is not Kind.DATA_PERMIT:
        raise WorkspaceError(f"{permit_id} is not a data permit: data requests get statistics, never a workspace",
                             "not_a_data_permit")
    manifest = delivery / "manifest.json"
    if not manifest.exists():
        raise WorkspaceError(f"{delivery} is not a delivery (no manifest.json)", "no_delivery")
    if load_manifest(manifest).permit_id != permit_id:
        raise WorkspaceError(f"{delivery} belongs to another permit", "wrong_delivery")
    p = paths(svc, permit_id)
    if p.base.exists():
        raise WorkspaceError(f"permit {permit_id} already has a workspace", "exists")
    p.root.mkdir(parents=True)
    (p.root / "scratch").mkdir()
    if EXAMPLE_NOTEBOOKS.is_dir():  # the example analyses an analyst starts from
        shutil.copytree(EXAMPLE_NOTEBOOKS, p.root / "examples", ignore=shutil.ignore_patterns(".*"))
    shutil.copytree(delivery, p.data)
    _make_read_only(p.data)
    (p.base / "workspace.json").write_text(json.dumps({"permit_id": permit_id, "quota_mb": quota_mb}))
    write_config(p.config, lockdown_for(svc, permit_id, quota_mb))
    tokens = {user: secrets.token_urlsafe(24) for user in access.users}
    _write_token_hashes(p, {u: token_hash(t) for u, t in tokens.items()})
    with svc.engine.begin() as conn:
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="workspace.created",
                     subject=f"permit:{permit_id}",
                     payload={"analysts": sorted(tokens), "data_manifest_sha256":
                              hashlib.sha256(manifest.read_bytes()).hexdigest(), "quota_mb": quota_mb})
    return tokens


def analyst_for_token(svc: Service, permit_id: str, token: str) -> str:
    """The analyst a token belongs to, if the permit is in force and they are still named on it."""
    access = check_in_force(svc, permit_id)
    p = existing(svc, permit_id)
    digest = token_hash(token)
    for user, stored in json.loads(p.tokens.read_text()).items():
        if secrets.compare_digest(stored, digest):
            if user not in access.users:
                raise PermissionDenied(f"{user} is no longer named on permit {permit_id}", action="login")
            return user
    raise PermissionDenied("unknown token for this workspace", action="login")


def issue_token(svc: Service, actor: Actor, permit_id: str, analyst: str) -> str:
    """A new login token for an analyst named on the permit (one added by amendment, or a lost token).

    Replaces any token the analyst had; returns the token, which is shown once.  An analyst may get (and so
    rotate) their own; a handler issues anyone's.
    """
    check_can_workspace(svc, actor, permit_id, "own_token" if analyst == actor.user_id and Role.HANDLER not in
                        actor.roles else "token")
    access = check_in_force(svc, permit_id)
    p = existing(svc, permit_id)
    if analyst not in access.users:
        raise WorkspaceError(f"{analyst} is not named on permit {permit_id}", "not_named")
    token = secrets.token_urlsafe(24)
    hashes = json.loads(p.tokens.read_text())
    replaced = analyst in hashes
    hashes[analyst] = token_hash(token)
    _write_token_hashes(p, hashes)
    with svc.engine.begin() as conn:
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="workspace.token_issued",
                     subject=f"permit:{permit_id}",
                     payload={"analyst": analyst, "replaced": replaced})
    return token


def still_authorised(svc: Service, permit_id: str, analyst: str) -> bool:
    """Whether ``analyst`` may still use the permit's workspace (permit in force, still named on it)."""
    access = permit_access(svc, permit_id)
    return access.in_force and analyst in access.users


def destroy(svc: Service, actor: Actor, permit_id: str) -> dict:
    """Delete the workspace (data copy and scratch space) and record what was deleted."""
    from secure_env.workspace.server import stop

    check_can_workspace(svc, actor, permit_id, "destroy")
    p = paths(svc, permit_id)
    if not p.base.exists():
        raise WorkspaceError(f"permit {permit_id} has no workspace", "no_workspace")
    stop(svc, actor, permit_id, reason="workspace destroyed")
    deleted = {"files": 0, "bytes": 0}
    for dirpath, _dirs, files in os.walk(p.base):
        for f in files:
            deleted["files"] += 1
            deleted["bytes"] += (Path(dirpath) / f).stat().st_size
    for dirpath, _dirnames, _files in os.walk(p.base):
        os.chmod(dirpath, 0o700)
    shutil.rmtree(p.base)
    with svc.engine.begin() as conn:
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="workspace.destroyed",
                     subject=f"permit:{permit_id}",
                     payload={**deleted, "key_retained": True})
    return deleted


def session_audit(svc: Service, actor: Actor, permit_id: str) -> list:
    """The workspace events of a permit (logins, kernels, cells, files, start and stop); the read is audited."""
    check_can_workspace(svc, actor, permit_id, "audit")
    with svc.engine.begin() as conn:
        found = [e for e in audit.events(conn, subject=f"permit:{permit_id}") if e.action.startswith("workspace.")]
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="workspace.audit_viewed",
                     subject=f"permit:{permit_id}", payload={"events": len(found)})
    return found


@dataclass(frozen=True)
class WorkspaceFile:
    """A file in a workspace's Jupyter root (what an analyst can ask to release)."""

    path: str  # relative to the root, e.g. scratch/table.csv
    bytes: int


def files(svc: Service, actor: Actor, permit_id: str) -> list[WorkspaceFile]:
    """The files in the workspace's root that an output request can name (not the read-only examples)."""
    check_can_workspace(svc, actor, permit_id, "status")
    root = existing(svc, permit_id).root
    out = []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if f.is_file() and not f.is_symlink() and rel.parts[0] not in ("examples", "imports") \
                and not any(part.startswith(".") for part in rel.parts):
            out.append(WorkspaceFile(str(rel), f.stat().st_size))
    return out
