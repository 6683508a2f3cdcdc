"""The indicator report over cases driven through the service."""

from datetime import date, timedelta

from permits.report import build, write
from tests.factories import DAY, make_case, make_staff


def test_report_figures(svc, tmp_path):
    staff = make_staff(svc)
    make_case(svc, staff)
    make_case(svc, staff, day=DAY + timedelta(days=100))
    r = build(svc, today=date(2026, 12, 1))
    ind = r.indicators.set_index("indicator")
    assert ind.loc["applications", "value"].sum() == 2
    overall = ind.loc["cycle days: overall: submission to decision"]
    assert overall["value"] == 8 and overall["n"] == 2
    assert ind.loc["share decided within the legal deadline", "value"] == 1.0
    assert ind.loc["currently overdue", "value"] == 0
    files = write(r, tmp_path)
    assert all(f.exists() and f.stat().st_size > 0 for f in files)
    assert files[-1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
