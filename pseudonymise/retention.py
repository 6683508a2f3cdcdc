"""The pseudonymisation stage's holdings for a permit: each run's delivery and its quarantine (rows refused,
with raw identity codes), listed and deleted with proof (:mod:`toisio.retention`).  The permit's key is kept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from pseudonymise.runs import LinkageRun
from toisio.identity import Actor, Role
from toisio.retention import Held, record_deletion, remove, size_of
from toisio.service import Service

STAGE = "pseudonymise"


def _check(actor: Actor) -> None:
    from toisio.errors import Forbidden

    if not actor.roles & {Role.SYSTEM, Role.OPERATOR}:
        raise Forbidden(f"{actor.user_id} may not delete extracted data: only the service or an operator may",
                        code="forbidden")


def held(svc: Service, permit_id: str) -> list[Held]:
    """Every run's delivery and quarantine of the permit that still exists on disk."""
    out = []
    with svc.engine.connect() as conn:
        runs = list(conn.execute(select(LinkageRun).where(LinkageRun.permit_id == permit_id)
                                 .order_by(LinkageRun.started_at)))
    for r in runs:
        for kind, path in (("delivery", Path(r.output_dir)), ("quarantine", quarantine_of(svc, permit_id, r.run_id))):
            if path.exists():
                files, size = size_of(path)
                out.append(Held(STAGE, kind, str(path), files, size, r.run_id,
                                r.manifest_sha256 if kind == "delivery" else None, r.finished_at or r.started_at))
    return out


def quarantine_of(svc: Service, permit_id: str, run_id: str) -> Path:
    return svc.settings.quarantine_dir / permit_id / run_id


def delete(svc: Service, actor: Actor, permit_id: str, items: list[Held], *, reason: str) -> list[Held]:
    """Delete the given holdings of the permit, each with its audit entry; returns what was deleted."""
    _check(actor)
    done = []
    for h in items:
        if h.stage != STAGE:
            continue
        path = Path(h.path)
        if path.exists():
            remove(path)
        with svc.engine.begin() as conn:
            record_deletion(conn, svc.audit_key, actor=actor.user_id, permit_id=permit_id, held=h, reason=reason)
        done.append(h)
    return done


def purge_quarantine(svc: Service, actor: Actor, *, now: datetime | None = None,
                     keep_days: int | None = None) -> list[Held]:
    """Delete every run's quarantine older than ``keep_days`` (the configuration's
    ``quarantine_retention_days``), whatever the permit's state."""
    _check(actor)
    now = now or datetime.now(UTC)
    keep = svc.settings.quarantine_retention_days if keep_days is None else keep_days
    cutoff = (now - timedelta(days=keep)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    with svc.engine.connect() as conn:
        permits = sorted({r[0] for r in conn.execute(select(LinkageRun.permit_id))})
    done = []
    for permit_id in permits:
        old = [h for h in held(svc, permit_id) if h.kind == "quarantine" and h.since and h.since < cutoff]
        done += delete(svc, actor, permit_id, old, reason=f"quarantine kept {keep} days")
    return done
