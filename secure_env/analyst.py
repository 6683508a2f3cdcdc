"""Helpers an analyst calls in a workspace notebook: tables that come back already checked.

``safe_crosstab`` and ``safe_pivot`` build the table from row-level data (so the checks see the
true number of persons behind every cell and the largest contributors), run the permit's
disclosure profile, apply primary and secondary suppression and rounding, and return the
releasable table with its report.  These helpers run inside a workspace's kernel: they never import the
database or any part of the service that could reach it (tests/unit/test_layout.py checks it).
The DP versions are in :class:`secure_env.airlock.dp.DpSession`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from secure_env.airlock.disclosure import (
    Statistic,
    check_regression,
    check_table,
    round_counts,
    suppress,
    table_from_rows,
)
from secure_env.airlock.profiles import profile


@dataclass(frozen=True)
class SafeTable:
    """A checked table: ``table`` is what may be requested for release; ``report`` says why."""

    table: pd.DataFrame
    report: dict
    suppressed_primary: int
    suppressed_secondary: int

    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        self.table.to_csv(path)
        return path


def safe_crosstab(df: pd.DataFrame, rows: str, columns: str | None = None, *, statistic: Statistic = "count",
                  value: str | None = None, person: str = "pseudonym",
                  profile_name: str = "toisio-default") -> SafeTable:
    """Counts (or a statistic of ``value``) by ``rows`` x ``columns``, checked and suppressed."""
    prof = profile(profile_name)
    t = table_from_rows(df, rows, columns, statistic=statistic, value=value, person=person,
                        top_m=max(prof.nk_n, 2))
    report = check_table(t, prof)
    released, primary, secondary = suppress(t, report)
    if statistic == "count":
        released = round_counts(released, prof.rounding_base)
    out = report.to_dict()
    out["suppressed"] = {"primary": int(primary.sum()), "secondary": int(secondary.sum())}
    return SafeTable(released, out, int(primary.sum()), int(secondary.sum()))


safe_pivot = safe_crosstab


def safe_describe(df: pd.DataFrame, value: str, by: str, *, person: str = "pseudonym",
                  profile_name: str = "toisio-default") -> SafeTable:
    """Mean of ``value`` by group with the counts behind each mean checked."""
    return safe_crosstab(df, by, None, statistic="mean", value=value, person=person, profile_name=profile_name)


def safe_regression_summary(coefficients: pd.DataFrame, residual_df: int, *,
                            profile_name: str = "toisio-default") -> SafeTable:
    """A model summary: released only if its residual degrees of freedom reach the profile's minimum."""
    report = check_regression(residual_df, profile(profile_name)).to_dict()
    table = coefficients if report["status"] == "pass" else coefficients.map(lambda _: np.nan)
    return SafeTable(table, report, 0 if report["status"] == "pass" else int(coefficients.size), 0)
