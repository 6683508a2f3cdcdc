"""The service's recurring jobs, as plain functions of a date (tested on a fake clock) and as the Prefect flows
the worker schedules (:mod:`flows.worker`).

=====================  =========================  ==========================================================
deployment             schedule (Europe/Helsinki)  what it does
=====================  =========================  ==========================================================
``advance``            every minute               approved permits: extraction, delivery, workspace, activation
``notify``             every minute               queue the messages of new audit entries; send e-mails
``follow``             every minute               a flow run follows every open case and output request
``expire-permits``     daily 00:10                 expire permits past their end date (their workspaces stop)
``deadline-digest``    working days 07:00          each handler's cases nearing or past a deadline
``estimate-reminders`` working days 08:00          remind controllers of estimates due within 3 days or late
``tidy-drafts``        daily 02:00                 remind owners of idle drafts (30 days), delete them (60)
``delete-ended``       daily 03:00                 delete ended permits' data after retention; old quarantines
=====================  =========================  ==========================================================

Every job is idempotent: run twice on one day, it does its work once (the messages have one key per person
and day; an expired permit is not expired again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from prefect import flow
from prefect.logging import get_run_logger

from flows.notifications import run_notifier
from permits import notifications as case_notices
from permits.deadlines import is_working_day
from permits.service import expire_due, tidy_drafts
from toisio import notify
from toisio.identity import SYSTEM
from toisio.service import Service, service

log = logging.getLogger("toisio.jobs")


@dataclass(frozen=True)
class Job:
    """A recurring job: its deployment name, its cron schedule and what it does."""

    name: str
    cron: str
    doing: str


JOBS: tuple[Job, ...] = (
    Job("advance", "* * * * *", "take approved permits further: extraction, delivery, workspace or statistics, "
                                "activation (one flow run per permit)"),
    Job("notify", "* * * * *", "queue the messages of new audit entries; send e-mails"),
    Job("follow", "* * * * *", "every open application and output request has a flow run following it; a run "
                               "waiting at a step recorded meanwhile is resumed (catching up on what the web "
                               "process could not hand over)"),
    Job("expire-permits", "10 0 * * *", "expire permits past their end date (their workspaces stop)"),
    Job("deadline-digest", "0 7 * * 1-5", "each handler's cases nearing or past a deadline (working days)"),
    Job("estimate-reminders", "0 8 * * 1-5", "remind controllers of estimates due within 3 days or late"),
    Job("tidy-drafts", "0 2 * * *", "remind owners of idle drafts after 30 days, delete them after 60"),
    Job("delete-ended", "0 3 * * *", "delete what is held for ended permits after their retention, and "
                                     "quarantines after theirs (proof in the audit chain)"),
)
TIMEZONE = "Europe/Helsinki"


def _queue_all(svc: Service, messages) -> int:
    with svc.engine.begin() as conn:
        return sum(notify.queue(conn, m, public_url=svc.settings.public_url) for m in messages)


def send_digest(svc: Service, today: date) -> int:
    """Queue each handler's digest for ``today`` (nothing on a weekend or a Finnish public holiday); returns
    how many were queued now."""
    if not is_working_day(today):
        return 0
    with svc.engine.connect() as conn:
        messages = case_notices.digest_messages(conn, today)
    return _queue_all(svc, messages)


def remind_estimates(svc: Service, today: date) -> int:
    """Queue the controllers' estimate reminders for ``today`` (working days); returns how many were queued."""
    if not is_working_day(today):
        return 0
    with svc.engine.connect() as conn:
        messages = case_notices.estimate_reminders(conn, today)
    return _queue_all(svc, messages)


def _today() -> date:
    """Today in Helsinki (the schedules' time zone: a working day is a Finnish one)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    return datetime.now(ZoneInfo(TIMEZONE)).date()


@flow(name="toisio-deliver-permit", flow_run_name="deliver {permit_id}", persist_result=False)
def deliver_flow(permit_id: str) -> dict:
    """One permit from its decision to in force (:func:`flows.delivery.deliver`); after a failure the next
    ``advance`` run tries again from the database's state."""
    from flows.delivery import deliver

    report = deliver(service(), permit_id)
    for step in report.steps:
        get_run_logger().info("%s: %s", permit_id, step)
    return {"permit_id": permit_id, "steps": report.steps, "state": report.state}


@flow(name="toisio-advance", flow_run_name="advance", persist_result=False)
def advance_flow() -> list[dict]:
    """Every permit waiting for the service, each in its own flow run tagged with its id."""
    from prefect import tags

    from flows.delivery import waiting_for_service

    out = []
    for permit_id in waiting_for_service(service()):
        with tags(f"case:{permit_id}", "delivery", "toisio"):
            try:
                out.append(deliver_flow(permit_id))
            except Exception as exc:  # one permit's failure must not stop the others; its run shows it
                get_run_logger().error("%s: %s", permit_id, exc)
                out.append({"permit_id": permit_id, "error": str(exc)})
    return out


@flow(name="toisio-notify", flow_run_name="notify", persist_result=False)
def notify_flow() -> dict:
    r = run_notifier(service())
    get_run_logger().info("%d audit entries read, %d messages queued, %d e-mails sent, %d failed", r.entries,
                          r.queued, r.sent, r.failed)
    return {"entries": r.entries, "queued": r.queued, "sent": r.sent, "failed": r.failed}


@flow(name="toisio-follow", flow_run_name="follow", persist_result=False)
def follow_flow() -> dict:
    from flows.follow import reconcile

    r = reconcile(service())
    get_run_logger().info("%d flow runs started, %d resumed", r["started"], r["resumed"])
    return r


@flow(name="toisio-expire-permits", flow_run_name="expire permits", persist_result=False)
def expire_flow() -> list[str]:
    done = expire_due(service(), by=SYSTEM)
    get_run_logger().info("expired: %s", ", ".join(done) or "none")
    return done


@flow(name="toisio-deadline-digest", flow_run_name="deadline digest", persist_result=False)
def digest_flow() -> int:
    n = send_digest(service(), _today())
    get_run_logger().info("%d handlers' digests queued", n)
    run_notifier(service())
    return n


@flow(name="toisio-estimate-reminders", flow_run_name="estimate reminders", persist_result=False)
def estimate_reminders_flow() -> int:
    n = remind_estimates(service(), _today())
    get_run_logger().info("%d estimate reminders queued", n)
    run_notifier(service())
    return n


@flow(name="toisio-tidy-drafts", flow_run_name="tidy drafts", persist_result=False)
def tidy_drafts_flow() -> dict:
    result = tidy_drafts(service(), by=SYSTEM)
    get_run_logger().info("reminded %s; deleted %s", result["reminded"], result["deleted"])
    return result


@flow(name="toisio-delete-ended", flow_run_name="delete ended permits' data", persist_result=False)
def delete_ended_flow() -> dict:
    from flows.retention import delete_ended

    done = delete_ended(service(), today=_today(), by=SYSTEM)
    get_run_logger().info("deleted: %s", {p: [h.kind for h in items] for p, items in done.items()} or "nothing")
    return {p: [h.path for h in items] for p, items in done.items()}


FLOWS = {"advance": advance_flow, "notify": notify_flow, "follow": follow_flow, "expire-permits": expire_flow,
         "deadline-digest": digest_flow,
         "estimate-reminders": estimate_reminders_flow, "tidy-drafts": tidy_drafts_flow,
         "delete-ended": delete_ended_flow}
