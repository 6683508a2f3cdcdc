"""Survival tables (Kaplan-Meier), their disclosure rules and their specification run again.

A step of a Kaplan-Meier curve tells who died (or left) at a time: with few people at risk, a step is one person.
The rules (ACRO's for survival tables, SACRO's threshold): every step shown stands for at least ``min_count`` persons
leaving the risk set (events and censorings since the previous step shown), and no step is shown once fewer than
``min_count`` persons remain at risk.  :func:`safe_table` merges steps until they do (the survival probability is
recomputed over the merged steps, as ACRO's rounded survival function) and cuts the tail; :func:`check` says
whether a table holds the rules.  A table made by the helper from a dataset as read carries its specification, and
the airlock computes it again (:func:`verify`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from secure_env.airlock.disclosure import CheckReport
from secure_env.airlock.profiles import DisclosureProfile

FORMAT = "toisio-survival-spec/1"
COLUMNS = ["time", "at_risk", "events", "left", "survival"]


class SurvivalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["toisio-survival-spec/1"] = FORMAT
    dataset: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    where: dict[str, str | int | float | bool] = Field({}, max_length=20)
    time: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    event: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    min_count: int = Field(ge=1, description="the persons each step stands for, as the helper made it")


def raw_table(time: pd.Series, event: pd.Series) -> pd.DataFrame:
    """Kaplan-Meier by distinct time: persons at risk, events, persons leaving (events and censorings), survival."""
    df = pd.DataFrame({"t": pd.to_numeric(time, errors="coerce"),
                       "e": pd.to_numeric(event, errors="coerce").fillna(0).astype(int)}).dropna()
    by = df.groupby("t").agg(events=("e", "sum"), left=("e", "size")).sort_index()
    at_risk = len(df) - by["left"].cumsum().shift(fill_value=0)
    survival = (1 - by["events"] / at_risk).cumprod()
    return pd.DataFrame({"time": by.index.to_numpy(dtype=float), "at_risk": at_risk.to_numpy(dtype=int),
                         "events": by["events"].to_numpy(dtype=int), "left": by["left"].to_numpy(dtype=int),
                         "survival": survival.to_numpy(dtype=float)})


def safe_table(raw: pd.DataFrame, min_count: int) -> pd.DataFrame:
    """Steps merged until each stands for at least ``min_count`` persons leaving; none shown once fewer than
    ``min_count`` remain at risk.  A merged step is shown at its last time, with the events and leavers it merges
    and the survival over them."""
    rows, pending_events, pending_left, start_risk, surv = [], 0, 0, None, 1.0
    for r in raw.itertuples(index=False):
        if r.at_risk < min_count:
            break
        start_risk = r.at_risk if start_risk is None else start_risk
        pending_events += int(r.events)
        pending_left += int(r.left)
        if pending_left >= min_count:
            surv *= 1 - pending_events / start_risk
            rows.append({"time": r.time, "at_risk": start_risk, "events": pending_events, "left": pending_left,
                         "survival": surv})
            pending_events = pending_left = 0
            start_risk = None
    return pd.DataFrame(rows, columns=COLUMNS)


def check(table: pd.DataFrame, prof: DisclosureProfile) -> CheckReport:
    findings = []
    for r in table.itertuples(index=False):
        if r.left < prof.min_count:
            findings.append(f"the step at time {r.time:g} stands for {int(r.left)} persons leaving, fewer than "
                            f"{prof.min_count}")
        if r.at_risk < prof.min_count:
            findings.append(f"at time {r.time:g} only {int(r.at_risk)} persons are at risk, fewer than "
                            f"{prof.min_count}")
    return CheckReport(prof.name, "fail" if findings else "pass", (), tuple(findings),
                       {"cells": len(table), "pass": len(table) - len(findings), "review": 0, "fail": len(findings)})


def write(path: Path, table: pd.DataFrame, spec: SurvivalSpec | None) -> Path:
    from secure_env.airlock.tables import SPEC_SUFFIX

    path = Path(path)
    table.to_csv(path, index=False)
    if spec is not None:
        Path(str(path) + SPEC_SUFFIX).write_text(spec.model_dump_json(indent=2) + "\n")
    return path


def compute(spec: SurvivalSpec, rows: pd.DataFrame) -> pd.DataFrame:
    """The safe survival table of ``spec`` from the rows it keeps (ValueError naming a missing column)."""
    if spec.time not in rows.columns or spec.event not in rows.columns:
        raise ValueError(f"{spec.dataset} has no column {spec.time!r} or {spec.event!r}")
    return safe_table(raw_table(rows[spec.time], rows[spec.event]), spec.min_count)


def draw_curve(table: pd.DataFrame, time_label: str) -> bytes:
    """The PNG of a Kaplan-Meier curve from a safe table, the same bytes for the same table
    (:func:`secure_env.airlock.tables.figure_png`)."""
    from secure_env.airlock.tables import figure_png

    def draw(ax) -> None:
        ax.step([0.0, *table["time"]], [1.0, *table["survival"]], where="post")
        ax.set_xlabel(time_label)
        ax.set_ylabel("survival")
        ax.set_ylim(0, 1.02)

    return figure_png(draw)


def verify(path: Path, spec: SurvivalSpec, data_dir: Path, prof: DisclosureProfile):
    from secure_env.airlock.tables import Verification, rows_of

    try:
        expected = compute(spec, rows_of(data_dir, spec))  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as e:
        return Verification(False, f"the specification cannot be run again: {e}")
    try:
        got = pd.read_csv(path)
    except (ValueError, OSError) as e:
        return Verification(False, f"the file does not read as a survival table ({e})")
    if list(got.columns) != COLUMNS or len(got) != len(expected) or not np.allclose(
            got.to_numpy(dtype=float), expected.to_numpy(dtype=float), rtol=1e-9, atol=1e-12):
        return Verification(False, "its steps differ from the survival table computed again on the delivered data")
    return Verification(True, "the survival table computed again on the delivered data is the same", check(got, prof))
