"""Objects the benchmarks need: a service with active data permits (built with the test factories)."""

from __future__ import annotations

from datetime import date
from pathlib import Path


def active_permits(home: Path, n: int, *, day: date):
    """A service with ``n`` active data permits, each naming the analyst ``bob``."""
    from tests.factories import make_service, make_staff
    from tests.test_permit_service import _to_active

    svc = make_service(home)
    staff = make_staff(svc)
    return svc, [_to_active(svc, staff, day=day).case_id for _ in range(n)]
