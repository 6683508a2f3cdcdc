"""Data at the end of a permit: what is held for it, until when, and its deletion with proof.

When a permit ends (expired, closed or revoked), after ``TOISIO_RETENTION_DAYS_AFTER_END`` days (default 0:
at once) the retention job deletes what each stage holds for it: the workspace (data copy and scratch), each
run's delivery and quarantine, and the airlock's unreleased copies.  Released outputs stay (they are the
results), and so does the pseudonymisation key (a re-extraction reproduces the data).  Quarantines, which hold
raw identity codes, are deleted after ``TOISIO_QUARANTINE_RETENTION_DAYS`` (30) whatever the permit's state.
Each stage deletes its own holdings through its own interface and writes the proof to the audit chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from permits.lifecycle import State
from permits.service import permit_access
from pseudonymise import retention as extracted
from secure_env.airlock import outputs as airlock
from secure_env.workspace import provision
from toisio import audit
from toisio.authz import Table, rule
from toisio.identity import SYSTEM, Actor, Role
from toisio.retention import Held, size_of
from toisio.service import Service

ENDED = {State.EXPIRED: "case.expired", State.CLOSED: "case.closed", State.REVOKED: "case.revoked"}


@dataclass(frozen=True)
class Retention:
    """What is held for a permit, and from when it may be deleted (None while the permit has not ended)."""

    permit_id: str
    state: str
    ended_on: date | None
    delete_after: date | None
    held: tuple[Held, ...]


RETENTION = Table("retention", {
    "view": rule("see what is held for a permit", {Role.HANDLER, Role.AUDITOR, Role.OPERATOR, Role.SYSTEM}),
}, {})


def _ended_on(svc: Service, permit_id: str, state: State) -> date | None:
    action = ENDED.get(state)
    if action is None:
        return None
    with svc.engine.connect() as conn:
        entries = audit.events(conn, subject=f"case:{permit_id}", action_prefix=action)
    return datetime.fromisoformat(entries[-1].ts.replace("Z", "+00:00")).date() if entries else None


def _workspace(svc: Service, permit_id: str) -> list[Held]:
    base = provision.paths(svc, permit_id).base
    if not base.exists():
        return []
    files, size = size_of(base)
    return [Held("workspace", "workspace", str(base), files, size, permit_id)]


def retention(svc: Service, actor: Actor, permit_id: str) -> Retention:
    """What each stage holds for the permit and when it will be deleted."""
    RETENTION.check_can("view", actor)
    access = permit_access(svc, permit_id)
    ended = _ended_on(svc, permit_id, access.state)
    after = ended + timedelta(days=svc.settings.retention_days_after_end) if ended else None
    items = (*_workspace(svc, permit_id), *extracted.held(svc, permit_id), *airlock.held(svc, permit_id))
    return Retention(permit_id, access.state.value, ended, after, items)


def delete_ended(svc: Service, *, today: date | None = None, by: Actor = SYSTEM) -> dict[str, list[Held]]:
    """Delete what is held for every permit whose retention has run out; then the old quarantines.  Returns
    what was deleted, by permit (``quarantine`` for the age-based purge)."""
    from permits.models import CaseRow

    today = today or date.today()
    with svc.engine.connect() as conn:
        from sqlalchemy import select

        ended = [r[0] for r in conn.execute(select(CaseRow.case_id).where(
            CaseRow.state.in_([s.value for s in ENDED])))]
    done: dict[str, list[Held]] = {}
    for permit_id in ended:
        r = retention(svc, by, permit_id)
        if r.delete_after is None or r.delete_after > today or not r.held:
            continue
        reason = f"permit {r.state} on {r.ended_on}; retention {svc.settings.retention_days_after_end} days"
        deleted: list[Held] = []
        if any(h.stage == "workspace" for h in r.held):
            provision.destroy(svc, by, permit_id)  # records workspace.destroyed with files and bytes
            deleted += [h for h in r.held if h.stage == "workspace"]
        deleted += extracted.delete(svc, by, permit_id, [h for h in r.held if h.stage == "pseudonymise"],
                                    reason=reason)
        deleted += airlock.discard_unreleased(svc, by, permit_id, reason=reason)
        done[permit_id] = deleted
    purged = extracted.purge_quarantine(svc, by)
    if purged:
        done["quarantine"] = purged
    return done
