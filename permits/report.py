"""Indicators the ministry's strategy measures: permits and requests, cycle times, deadline compliance.

``toisio report --out DIR`` writes ``indicators.csv``, ``cases.csv`` and ``indicators.png``.  All
figures are computed from the case events in one query, so the report stays fast as cases grow.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
from sqlalchemy import select

from permits.models import CaseEventRow, CaseRow
from toisio.authz import Table, rule
from toisio.identity import Actor, Role
from toisio.service import Service

# Stages of the cycle as (name, start event, end event).
STAGES: tuple[tuple[str, str, str], ...] = (
    ("completeness check", "submitted", "completeness_confirmed"),
    ("controller estimates", "estimates_requested", "estimate_sent"),
    ("applicant acceptance", "estimate_sent", "accepted"),
    ("presentation and decision", "accepted", "decided"),
    ("extraction and delivery", "decided", "delivered"),
    ("overall: submission to decision", "submitted", "decided"),
)


@dataclass(frozen=True)
class Report:
    cases: pd.DataFrame
    indicators: pd.DataFrame


def _quarter(d: pd.Series) -> pd.Series:
    return d.dt.year.astype("Int64").astype(str) + "-Q" + d.dt.quarter.astype("Int64").astype(str)


def build(svc: Service, *, today: date | None = None) -> Report:
    """Compute the indicators from the database."""
    today = today or date.today()
    with svc.engine.connect() as conn:
        cases = pd.DataFrame(conn.execute(select(
            CaseRow.case_id, CaseRow.kind, CaseRow.purpose, CaseRow.state, CaseRow.decision_due,
            CaseRow.decided_on)).all(), columns=["case_id", "kind", "purpose", "state", "decision_due", "decided_on"])
        ev = pd.DataFrame(conn.execute(select(CaseEventRow.case_id, CaseEventRow.event, CaseEventRow.on_date)).all(),
                          columns=["case_id", "event", "on_date"])
    ev["event"] = ev["event"].replace({"approved": "decided", "rejected": "decided"})
    first = ev.pivot_table(index="case_id", columns="event", values="on_date", aggfunc="min")
    first = first.apply(pd.to_datetime)
    cases = cases.set_index("case_id").join(first, how="left")
    for col in ("decision_due", "decided_on"):
        cases[col] = pd.to_datetime(cases[col])
    rows = []
    if "submitted" in cases:
        cases["period"] = _quarter(cases["submitted"])
        for (kind, purpose, period), n in cases.groupby(["kind", "purpose", "period"], dropna=False).size().items():
            rows.append({"indicator": "applications", "kind": kind, "purpose": purpose or "", "period": period,
                         "value": int(n)})
    for name, start, end in STAGES:
        if start in cases and end in cases:
            days = (cases[end] - cases[start]).dt.days.dropna()
            if len(days):
                rows.append({"indicator": f"cycle days: {name}", "kind": "all", "purpose": "", "period": "all",
                             "value": float(days.median()), "p90": float(days.quantile(0.9)), "n": int(len(days))})
    decided = cases.dropna(subset=["decided_on"])
    with_due = decided.dropna(subset=["decision_due"])
    if len(with_due):
        share = float((with_due["decided_on"] <= with_due["decision_due"]).mean())
        rows.append({"indicator": "share decided within the legal deadline", "kind": "all", "purpose": "",
                     "period": "all", "value": round(share, 4), "n": int(len(with_due))})
    open_states = {"complete", "estimates_requested", "estimates_received", "estimate_sent", "accepted", "presented"}
    overdue = cases[cases["state"].isin(open_states) & (cases["decision_due"] < pd.Timestamp(today))]
    rows.append({"indicator": "currently overdue", "kind": "all", "purpose": "", "period": str(today),
                 "value": int(len(overdue))})
    for kind, n in decided.groupby("kind").size().items():
        rows.append({"indicator": "decided", "kind": kind, "purpose": "", "period": "all", "value": int(n)})
    return Report(cases.reset_index(), pd.DataFrame(rows))


OPEN_STATES = ("submitted", "complete", "estimates_requested", "estimates_received", "estimate_sent", "accepted",
               "presented")


def deadline_counts(cases: pd.DataFrame, today: date | None = None) -> dict[str, int]:
    """Decided within / after the legal deadline, and open cases past it or due within 14 days."""
    today_ts = pd.Timestamp(today or date.today())
    if not len(cases):
        return {"decided in time": 0, "decided late": 0, "open, due in 14 days": 0, "open, overdue": 0}
    due, decided = pd.to_datetime(cases["decision_due"]), pd.to_datetime(cases["decided_on"])
    has = due.notna() & decided.notna()
    is_open = cases["state"].isin(OPEN_STATES) & due.notna()
    soon = (due >= today_ts) & (due <= today_ts + pd.Timedelta(days=14))
    return {"decided in time": int((has & (decided <= due)).sum()), "decided late": int((has & (decided > due)).sum()),
            "open, due in 14 days": int((is_open & soon).sum()),
            "open, overdue": int((is_open & (due < today_ts)).sum())}


def write(report: Report, out_dir: Path) -> list[Path]:
    """Write the CSVs and the chart; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    ind = out_dir / "indicators.csv"
    report.indicators.to_csv(ind, index=False)
    cases_csv = out_dir / "cases.csv"
    report.cases.to_csv(cases_csv, index=False)
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(17, 4.8))
    apps = report.indicators[report.indicators["indicator"] == "applications"]
    if len(apps):
        apps.pivot_table(index="period", columns="kind", values="value", aggfunc="sum").plot.bar(ax=a, stacked=True)
    a.set_title("Applications by quarter of submission")
    a.set_ylabel("applications")
    cyc = report.indicators[report.indicators["indicator"].str.startswith("cycle days")]
    if len(cyc):
        labels = cyc["indicator"].str.replace("cycle days: ", "", regex=False)
        b.barh(labels, cyc["value"], label="median")
        b.barh(labels, cyc["p90"] - cyc["value"], left=cyc["value"], alpha=0.4, label="to 90th percentile")
        # a stage done within the day has a zero-length bar: write every value so no row looks empty
        for y, (median, p90, n) in enumerate(zip(cyc["value"], cyc["p90"], cyc["n"], strict=True)):
            b.text(max(p90, median), y, f"  {median:g} / {p90:g} d (n={n})", va="center", fontsize=8)
        b.set_xlim(0, max(1.0, float(cyc["p90"].max())) * 1.6)
        b.legend(loc="lower right")
    else:
        b.text(0.5, 0.5, "no stage completed yet", ha="center", va="center", transform=b.transAxes)
    b.set_title("Cycle time per stage (days; median / 90th percentile)")
    counts = deadline_counts(report.cases)
    bars = c.bar(list(counts), list(counts.values()), color=["#2a7", "#c33", "#e80", "#c33"])
    for bar, v in zip(bars, counts.values(), strict=True):
        c.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), str(v), ha="center", va="bottom")
    c.set_title("Decision deadlines")
    c.set_ylabel("cases")
    c.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    png = out_dir / "indicators.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return [ind, cases_csv, png]


REPORT = Table("report", {"indicators": rule("see the service's indicators",
                                             {Role.HANDLER, Role.DECIDER, Role.AUDITOR, Role.OPERATOR})}, {})
check_can_see_indicators, can_see_indicators = REPORT.pair("indicators")


@dataclass(frozen=True)
class Indicator:
    """One row of the indicators report."""

    indicator: str
    kind: str
    purpose: str
    period: str
    value: float
    p90: float | None = None
    n: int | None = None


def indicators(svc: Service, actor: Actor, *, today: date | None = None) -> list[Indicator]:
    """The indicators report as typed rows (handlers, deciders, auditors and operators)."""
    check_can_see_indicators(actor)
    out = []
    for r in build(svc, today=today).indicators.to_dict("records"):
        p90, n = r.get("p90"), r.get("n")
        out.append(Indicator(str(r["indicator"]), str(r["kind"]), str(r["purpose"] or ""), str(r["period"]),
                             float(r["value"]), None if p90 is None or pd.isna(p90) else float(p90),
                             None if n is None or pd.isna(n) else int(n)))
    return out
