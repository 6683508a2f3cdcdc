"""Objects the benchmarks need: a service with active data permits (built with the test factories)."""

from __future__ import annotations

from datetime import date
from pathlib import Path


def active_permits(home: Path, n: int, *, day: date):
    """A service with ``n`` active data permits, each naming the analyst ``bob``."""
    from tests.factories import make_case, make_service, make_staff

    svc = make_service(home)
    staff = make_staff(svc)
    return svc, [make_case(svc, staff, day=day).case_id for _ in range(n)]
