"""What a stage holds for a permit, and the proof that it deleted it: the typed interface each stage offers the
retention job (:mod:`flows.retention`).

A stage lists its holdings (:class:`Held`) and deletes them; every deletion writes to the audit chain, in one
entry per thing deleted, what it was (path, files, bytes, the manifest's SHA-256 where there is one) and that
the pseudonymisation key was kept, so that the extraction can be reproduced (Findata's practice).  SATRE
3.1.09 (a deletion policy) and 3.1.10 (proof of deletion).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from toisio import audit


@dataclass(frozen=True)
class Held:
    """One thing a stage holds for a permit."""

    stage: str  # pseudonymise, workspace, airlock
    kind: str  # delivery, quarantine, workspace, unreleased_output, aggregate
    path: str
    files: int
    bytes: int
    ref: str = ""  # the run or request it belongs to
    manifest_sha256: str | None = None
    since: str = ""  # when it was made (ISO timestamp), where known


def size_of(path: Path) -> tuple[int, int]:
    """(files, bytes) under a directory (or of one file); (0, 0) if it does not exist."""
    if path.is_file():
        return 1, path.stat().st_size
    files = size = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            p = Path(dirpath) / n
            if not p.is_symlink():
                files += 1
                size += p.stat().st_size
    return files, size


def remove(path: Path) -> None:
    """Delete a directory tree (made writable first: deliveries and data copies are read-only)."""
    if path.is_file() or path.is_symlink():
        path.unlink()
        return
    for dirpath, _dirnames, _files in os.walk(path):
        os.chmod(dirpath, 0o700)
    shutil.rmtree(path)


def record_deletion(conn, key, *, actor: str, permit_id: str, held: Held, reason: str) -> None:
    """The proof of deletion: one audit entry per thing deleted."""
    audit.append(conn, key, actor=actor, action="data.deleted", subject=f"permit:{permit_id}",
                 payload={"stage": held.stage, "kind": held.kind, "path": held.path, "files": held.files,
                          "bytes": held.bytes, "ref": held.ref, "manifest_sha256": held.manifest_sha256,
                          "reason": reason, "key_retained": True})
