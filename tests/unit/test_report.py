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


def test_deadline_counts_cover_in_time_late_due_soon_and_overdue():
    import pandas as pd

    from permits.report import deadline_counts

    today = date(2026, 6, 1)
    cases = pd.DataFrame([
        {"state": "approved", "decision_due": "2026-05-01", "decided_on": "2026-04-20"},   # in time
        {"state": "rejected", "decision_due": "2026-05-01", "decided_on": "2026-05-03"},   # late
        {"state": "presented", "decision_due": "2026-06-10", "decided_on": None},          # due in 14 days
        {"state": "complete", "decision_due": "2026-05-20", "decided_on": None},           # overdue
        {"state": "complete", "decision_due": "2026-09-01", "decided_on": None},           # not yet near
        {"state": "draft", "decision_due": None, "decided_on": None},
    ])
    assert deadline_counts(cases, today) == {"decided in time": 1, "decided late": 1, "open, due in 14 days": 1,
                                             "open, overdue": 1}
    assert deadline_counts(cases.iloc[0:0], today)["open, overdue"] == 0


def test_the_chart_has_a_deadline_panel_and_writes_same_day_stages(svc, tmp_path):
    """Cases handled within one day gave zero-length bars (an empty-looking panel): each value is written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    staff = make_staff(svc)
    make_case(svc, staff, state="approved")
    captured = {}
    original = plt.subplots

    def spy(*args, **kwargs):
        fig, axes = original(*args, **kwargs)
        captured["axes"] = axes
        return fig, axes

    plt.subplots = spy
    try:
        write(build(svc, today=date(2026, 12, 1)), tmp_path)
    finally:
        plt.subplots = original
    a, b, c = captured["axes"]
    assert c.get_title() == "Decision deadlines" and [t.get_text() for t in c.get_xticklabels()][:2] == [
        "decided in time", "decided late"]
    assert any("d (n=" in t.get_text() for t in b.texts)  # every stage's value is written beside its bar
