"""Deadlines on the Finnish calendar.

* A decision is due 3 months after completeness is confirmed; it can be extended
  once, by at most 3 months, with a recorded reason.
* Each controller answers an estimate request within 15 working days.
* Working days skip weekends and Finnish public holidays (the ``holidays`` package).
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import cache

import holidays
from dateutil.relativedelta import relativedelta

DECISION_MONTHS = 3
MAX_EXTENSION_MONTHS = 3
ESTIMATE_WORKING_DAYS = 15
NEAR_DAYS = 14


@cache
def _holidays(year: int) -> frozenset[date]:
    return frozenset(holidays.Finland(years=year).keys())


def is_working_day(d: date) -> bool:
    """Monday-Friday and not a Finnish public holiday."""
    return d.weekday() < 5 and d not in _holidays(d.year)


def add_working_days(start: date, days: int) -> date:
    """The date ``days`` working days after ``start`` (``start`` itself not counted)."""
    d = start
    left = days
    while left > 0:
        d += timedelta(days=1)
        if is_working_day(d):
            left -= 1
    return d


def decision_due(complete_on: date, extension_months: int = 0) -> date:
    """Decision deadline: 3 months after completeness, plus an extension of at most 3 months."""
    if not 0 <= extension_months <= MAX_EXTENSION_MONTHS:
        raise ValueError(f"an extension is at most {MAX_EXTENSION_MONTHS} months")
    return complete_on + relativedelta(months=DECISION_MONTHS + extension_months)


def estimate_due(requested_on: date) -> date:
    """A controller's estimate is due 15 working days after the request."""
    return add_working_days(requested_on, ESTIMATE_WORKING_DAYS)


def status(due: date | None, today: date) -> str:
    """``overdue``, ``near`` (within 14 days) or ``ok`` (``none`` without a deadline)."""
    if due is None:
        return "none"
    if today > due:
        return "overdue"
    if (due - today).days <= NEAR_DAYS:
        return "near"
    return "ok"
