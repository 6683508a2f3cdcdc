"""From a decision to a permit in force, done by the service: the extraction on the frozen scope, the delivery
recorded on the permit, the workspace made with the data copy (a data permit) or the statistics produced in the
service's own area (a data request), and the permit activated.

:func:`deliver` continues from whatever the database says, so a run killed at any point and started again does
each step once: an extraction whose delivery is on disk and recorded in its run is not run again (its delivery
is recorded on the permit), a workspace that exists is not made again, statistics already put forward are not
produced again.  The worker's ``advance`` job runs it for every permit waiting for the service, one flow run
per permit named and tagged with its id.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from flows.data_request import aggregate_dir, produce_statistics
from flows.extraction import extract_for_permit
from permits.application import Kind
from permits.lifecycle import State
from permits.service import act, form_of, permit_access
from pseudonymise.runs import LinkageRun
from secure_env.airlock import outputs as airlock
from secure_env.workspace import provision
from toisio.identity import SYSTEM, Actor
from toisio.service import Service

log = logging.getLogger("toisio.delivery")

#: the states in which a permit waits for the service (not for a person)
WAITING_FOR_SERVICE = (State.APPROVED, State.EXTRACTION, State.DELIVERED)


@dataclass
class DeliveryReport:
    permit_id: str
    steps: list[str] = field(default_factory=list)
    state: str = ""


def delivery_dir(svc: Service, permit_id: str, kind: Kind) -> Path:
    """Where a permit's extraction is delivered: the service's deliveries (a data permit) or its own aggregate
    area (a data request: nobody on the applicant's side sees rows)."""
    return aggregate_dir(svc, permit_id) if kind is Kind.DATA_REQUEST else svc.settings.deliveries_dir / permit_id


def _finished_run(svc: Service, permit_id: str, out: Path) -> LinkageRun | None:
    """The newest run of the permit that delivered to ``out`` and whose delivery is still there."""
    with svc.engine.connect() as conn:
        row = conn.execute(select(LinkageRun).where(LinkageRun.permit_id == permit_id,
                                                    LinkageRun.status == "delivered",
                                                    LinkageRun.output_dir == str(out.resolve()))
                           .order_by(LinkageRun.finished_at.desc())).first()
    return row if row is not None and (out / "manifest.json").exists() else None


def deliver(svc: Service, permit_id: str, *, actor: Actor = SYSTEM, in_dir: Path | None = None,
            **pipeline_options) -> DeliveryReport:
    """Take an approved permit as far as the service can: extracted, delivered, workspace or statistics, active."""
    report = DeliveryReport(permit_id)
    kind = form_of(svc, permit_id).kind
    out = delivery_dir(svc, permit_id, kind)
    state = permit_access(svc, permit_id).state
    if state in (State.APPROVED, State.EXTRACTION):
        done = _finished_run(svc, permit_id, out) if state is State.EXTRACTION else None
        if done is not None:  # the pipeline finished but the delivery was not recorded (a crash in between)
            act(svc, actor, permit_id, "mark_delivered", manifest_sha256=done.manifest_sha256)
            report.steps.append(f"delivery of run {done.run_id} recorded")
        else:
            result = extract_for_permit(svc, actor, permit_id, in_dir or svc.settings.extracts, out,
                                        **pipeline_options)
            report.steps.append(f"extracted (run {result.run_id}): "
                                f"{sum(d.rows for d in result.manifest.datasets.values()):,} rows delivered")
        state = permit_access(svc, permit_id).state
    if state is State.DELIVERED:
        if kind is Kind.DATA_PERMIT:
            if not provision.paths(svc, permit_id).base.exists():
                provision.create(svc, actor, permit_id, out)  # analysts get their own login links in the portal
                report.steps.append("workspace made with the data copy")
        elif not airlock.requests_for_permit(svc, actor, permit_id):
            request_id = produce_statistics(svc, actor, permit_id, delivery=out)
            report.steps.append(f"statistics produced and put forward for review ({request_id})")
        act(svc, actor, permit_id, "activate")
        report.steps.append("activated")
    report.state = permit_access(svc, permit_id).state.value
    for s in report.steps:
        log.info("%s: %s", permit_id, s)
    return report


#: after each failed extraction of a permit in a row, the next attempt waits twice as long (1, 2, 4, ... minutes,
#: at most 6 hours): a missing extract or a broken file is not retried every minute for ever
RETRY_FIRST = timedelta(minutes=1)
RETRY_MOST = timedelta(hours=6)


def retry_due(failures: int, last_failure: datetime | None, now: datetime) -> datetime | None:
    """When a permit whose last ``failures`` extractions failed (the newest at ``last_failure``) is tried again:
    ``None`` when it is due now."""
    if failures <= 0 or last_failure is None:
        return None
    wait = min(RETRY_FIRST * 2 ** min(failures - 1, 20), RETRY_MOST)
    due = last_failure + wait
    return None if now >= due else due


def _failures(conn, permit_id: str) -> tuple[int, datetime | None]:
    """The permit's failed extractions since its last delivered one, and when the newest failed."""
    rows = list(conn.execute(select(LinkageRun.status, LinkageRun.finished_at).where(
        LinkageRun.permit_id == permit_id, LinkageRun.status.in_(("failed", "delivered")))
        .order_by(LinkageRun.started_at.desc())))
    failures = 0
    for status, _ in rows:
        if status != "failed":
            break
        failures += 1
    last = rows[0][1] if failures and rows[0][1] else None
    return failures, datetime.fromisoformat(last.replace("Z", "+00:00")) if last else None


def waiting_for_service(svc: Service, *, now: datetime | None = None) -> list[str]:
    """The permits the service should take further now (one whose extractions keep failing waits its turn,
    :func:`retry_due`)."""
    from permits.models import CaseRow

    now = now or datetime.now(UTC)
    out = []
    with svc.engine.connect() as conn:
        for (case_id,) in conn.execute(select(CaseRow.case_id).where(
                CaseRow.state.in_([s.value for s in WAITING_FOR_SERVICE])).order_by(CaseRow.case_id)):
            due = retry_due(*_failures(conn, case_id), now)
            if due is None:
                out.append(case_id)
            else:
                log.warning("%s: its extraction failed again; next attempt at %s", case_id, due.isoformat())
    return out
