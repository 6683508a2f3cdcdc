"""The recurring jobs on a fake clock: the handlers' deadline digest on working days, the controllers'
estimate reminders, each queued once per person and day."""

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from flows.jobs import JOBS, remind_estimates, send_digest
from permits.deadlines import is_working_day
from permits.service import act
from tests.factories import make_case, make_staff
from toisio.notify import NotificationRow

pytestmark = pytest.mark.unit


def _told(svc, topic):
    with svc.engine.connect() as conn:
        return sorted((r.user_id, r.title) for r in conn.execute(
            select(NotificationRow).where(NotificationRow.topic == topic)))


def _working_day_after(d: date, days: int) -> date:
    d += timedelta(days=days)
    while not is_working_day(d):
        d += timedelta(days=1)
    return d


def test_every_job_has_a_flow_a_schedule_and_a_description():
    from flows.jobs import FLOWS

    assert {j.name for j in JOBS} == set(FLOWS)
    assert all(len(j.cron.split()) == 5 and j.doing for j in JOBS)


def test_the_digest_tells_each_handler_of_their_deadlines_on_working_days_once(svc):
    staff = make_staff(svc)
    case = make_case(svc, staff, state="submitted").case_id  # completeness check due 7 days after submission
    act(svc, staff["hanna"], case, "assign_handler", handler_id="harri")
    view_day = date(2026, 3, 9)  # a Monday, 7 days after the factory's submission day: the check is due
    assert send_digest(svc, view_day) == 1
    assert [u for u, _ in _told(svc, "case.digest")] == ["harri"]  # the case's handler, not every handler
    assert send_digest(svc, view_day) == 0  # once a day
    assert send_digest(svc, date(2026, 3, 14)) == 0  # a Saturday
    with svc.engine.connect() as conn:
        body = conn.execute(select(NotificationRow.body).where(NotificationRow.topic == "case.digest")).scalar()
    assert case in body


def test_controllers_are_reminded_of_estimates_due_soon_or_late(svc):
    staff = make_staff(svc)
    case = make_case(svc, staff, state="estimates_requested").case_id
    from permits.models import EstimateRow

    with svc.engine.connect() as conn:
        due = {r.registry: r.due_on for r in conn.execute(select(EstimateRow).where(EstimateRow.case_id == case))}
    first_due = min(due.values())
    early = _working_day_after(first_due - timedelta(days=10), 0)
    if early + timedelta(days=3) < first_due:
        assert remind_estimates(svc, early) == 0  # not yet
    late = _working_day_after(first_due, 1)
    n = remind_estimates(svc, late)
    told = _told(svc, "case.estimate_reminder")
    assert n == len(told) > 0
    assert {u for u, _ in told} <= {"thl1", "kela1"}
    assert remind_estimates(svc, late) == 0  # once a day
    act(svc, staff["thl1"], case, "record_estimate", registry="hilmo", cost_eur=10, working_days=5)
    act(svc, staff["thl1"], case, "record_estimate", registry="population", cost_eur=10, working_days=5)
    next_day = _working_day_after(late, 1)
    remind_estimates(svc, next_day)
    assert not [t for t in _told(svc, "case.estimate_reminder") if t[0] == "thl1" and next_day.isoformat() in t[1]]


def test_a_failing_extraction_is_retried_later_each_time():
    from datetime import UTC, datetime, timedelta

    from flows.delivery import RETRY_MOST, retry_due

    t = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    assert retry_due(0, None, t) is None  # never failed: now
    assert retry_due(1, t, t + timedelta(seconds=59)) == t + timedelta(minutes=1)
    assert retry_due(1, t, t + timedelta(minutes=1)) is None
    assert retry_due(3, t, t + timedelta(minutes=3)) == t + timedelta(minutes=4)
    assert retry_due(4, t, t + timedelta(minutes=8)) is None
    assert retry_due(50, t, t + RETRY_MOST - timedelta(seconds=1)) == t + RETRY_MOST  # capped at 6 hours
    assert retry_due(50, t, t + RETRY_MOST) is None
