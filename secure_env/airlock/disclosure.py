"""Automatic statistical disclosure control: the checks every table gets before a reviewer sees it.

Rules are data: :data:`CELL_RULES` lists each per-cell rule with the statistics it applies to;
each is a vectorised function over the whole table, so a 10,000-cell table is checked in
milliseconds (see ``make bench``).  A rule gives every cell ``pass``, ``review`` or ``fail`` with
a reason; the cell's verdict is the worst.  :func:`suppress` then does primary suppression (the
failing cells) and secondary suppression, so that no row or column is left with a single
suppressed cell that could be recomputed from the margins.  :func:`check_differencing` compares
a new table with tables already released for the same permit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

from secure_env.airlock.profiles import DisclosureProfile

Statistic = Literal["count", "percent", "sum", "mean", "median"]
PASS, REVIEW, FAIL = 0, 1, 2
STATUS = {PASS: "pass", REVIEW: "review", FAIL: "fail"}
MAGNITUDE: frozenset[str] = frozenset({"sum", "mean", "median"})


@dataclass(frozen=True)
class Table:
    """A statistical table and what the checks need to know about each cell.

    ``values``: the statistic per cell (a suppressed cell is empty, NaN); ``counts``: persons behind
    each cell (the same shape); ``largest``: for magnitude tables, each cell's largest individual
    contributions in descending order, shape ``(rows, columns, m)``; ``negatives``: for magnitude
    tables, how many contributions to each cell are negative (a refund, a correction);
    ``structural_zeros``: cells that are zero by definition.
    """

    values: pd.DataFrame
    counts: pd.DataFrame
    statistic: Statistic
    largest: np.ndarray | None = None
    structural_zeros: frozenset[tuple] = frozenset()
    name: str = ""
    negatives: pd.DataFrame | None = None


@dataclass(frozen=True)
class CellResult:
    row: object
    column: object
    status: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class CheckReport:
    """Per-cell verdicts (non-passing cells listed), the cells found suppressed and table-level findings."""

    profile: str
    status: str
    cells: tuple[CellResult, ...]
    table_findings: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)
    suppressed: tuple[tuple[object, object], ...] = ()

    def to_dict(self) -> dict:
        return {"profile": self.profile, "status": self.status, "counts": self.counts,
                "table_findings": list(self.table_findings),
                "suppressed": [[_jsonable(r), _jsonable(c)] for r, c in self.suppressed],
                "cells": [{"row": _jsonable(c.row), "column": _jsonable(c.column), "status": c.status,
                           "reasons": list(c.reasons)} for c in self.cells]}


def _jsonable(v):
    return v.item() if hasattr(v, "item") else (v if isinstance(v, (str, int, float)) or v is None else str(v))


RuleFn = Callable[[Table, DisclosureProfile], tuple[np.ndarray, str]]


@dataclass(frozen=True)
class CellRule:
    code: str
    applies_to: frozenset[str]
    description: str
    check: RuleFn  # returns (status array, reason template with {value} for the cell's figure)


def _min_count(t: Table, p: DisclosureProfile) -> tuple[np.ndarray, str]:
    c = t.counts.to_numpy(dtype=float)
    out = np.where((c > 0) & (c < p.min_count), FAIL, PASS)
    return out, f"{{value}} persons behind the cell, fewer than the minimum {p.min_count}"


def _zeros(t: Table, p: DisclosureProfile) -> tuple[np.ndarray, str]:
    c = t.counts.to_numpy(dtype=float)
    zero = c == 0
    if t.structural_zeros:
        rows, cols = list(t.counts.index), list(t.counts.columns)
        for r, col in t.structural_zeros:
            zero[rows.index(r), cols.index(col)] = False
    return np.where(zero, FAIL if p.zeros_disclosive else REVIEW, PASS), "zero cell (not marked structural)"


def _negatives(t: Table) -> np.ndarray:
    """Cells with a negative contribution (dominance is not defined there)."""
    if t.negatives is None:
        return np.zeros(t.values.shape, dtype=bool)
    return np.nan_to_num(t.negatives.to_numpy(dtype=float)) > 0


def _negative(t: Table, p: DisclosureProfile) -> tuple[np.ndarray, str]:
    return np.where(_negatives(t), REVIEW, PASS), ("negative or mixed-sign contributions: dominance is not defined, "
                                                   "the reviewers judge the cell")


def _nk(t: Table, p: DisclosureProfile) -> tuple[np.ndarray, str]:
    if t.largest is None:
        return np.full(t.values.shape, REVIEW), "magnitude table without contributor data: dominance not checked"
    top = np.nan_to_num(t.largest[:, :, : p.nk_n]).sum(axis=2)
    total = _totals(t)
    with np.errstate(invalid="ignore", divide="ignore"):
        # ACRO's convention: a cell fails when the n largest hold a share of k or more
        share = np.where(total > 0, top / np.where(total > 0, total, 1.0), 0.0)  # ACRO: top_n_sum / sum
        dominated = (total > 0) & (share >= p.nk_k) & ~_negatives(t)
    return np.where(dominated, FAIL, PASS), (f"N-K dominance: the {p.nk_n} largest contributors hold "
                                             f"{p.nk_k:.0%} or more of the cell total")


def _p_percent(t: Table, p: DisclosureProfile) -> tuple[np.ndarray, str]:
    if t.largest is None or t.largest.shape[2] < 2:
        return np.full(t.values.shape, PASS), ""
    l1 = np.nan_to_num(t.largest[:, :, 0])
    l2 = np.nan_to_num(t.largest[:, :, 1])
    rest = _totals(t) - l1 - l2
    return np.where((l1 > 0) & (rest < p.p_percent / 100 * l1) & ~_negatives(t), FAIL, PASS), (
        f"p% rule: the second largest contributor could estimate the largest to within {p.p_percent:g}%")


def _totals(t: Table) -> np.ndarray:
    v = t.values.to_numpy(dtype=float)
    if t.statistic == "sum":
        return np.nan_to_num(v)
    # mean (and median as an approximation): total = mean x count
    return np.nan_to_num(v * t.counts.to_numpy(dtype=float))


ALL = frozenset({"count", "percent", "sum", "mean", "median"})
CELL_RULES: tuple[CellRule, ...] = (
    CellRule("min_count", ALL, "minimum number of persons behind any cell or statistic", _min_count),
    CellRule("zeros", frozenset({"count", "percent"}), "zero cells: disclosive or to review", _zeros),
    CellRule("negative", MAGNITUDE, "negative or mixed-sign contributions go to review", _negative),
    CellRule("dominance_nk", MAGNITUDE, "N-K dominance rule (fails at a share of k or more)", _nk),
    CellRule("dominance_p_percent", MAGNITUDE, "p% rule", _p_percent),
)


def check_table(t: Table, p: DisclosureProfile) -> CheckReport:
    """Run every rule that applies to the table's statistic."""
    if t.values.shape != t.counts.shape:
        raise ValueError(f"values {t.values.shape} and counts {t.counts.shape} differ in shape")
    worst = np.zeros(t.values.shape, dtype=np.int8)
    flagged: list[tuple[np.ndarray, str]] = []
    for rule in CELL_RULES:
        if t.statistic not in rule.applies_to:
            continue
        status, reason = rule.check(t, p)
        worst = np.maximum(worst, status)
        if status.any():
            flagged.append((status, reason))
    cells = []
    rows, cols = t.values.index, t.values.columns
    counts_arr = t.counts.to_numpy()
    for i, j in zip(*np.nonzero(worst), strict=True):
        reasons = tuple(r.format(value=int(counts_arr[i, j]) if counts_arr[i, j] == counts_arr[i, j] else "?")
                        for s, r in flagged if s[i, j])
        cells.append(CellResult(rows[i], cols[j], STATUS[int(worst[i, j])], reasons))
    hidden = np.isnan(t.values.to_numpy(dtype=float))
    findings, finding_status = suppression_findings(t, hidden)
    n_fail = int((worst == FAIL).sum())
    n_review = int((worst == REVIEW).sum())
    status = "fail" if n_fail or finding_status == FAIL else (
        "review" if n_review or finding_status == REVIEW else "pass")
    return CheckReport(p.name, status, tuple(cells), tuple(findings),
                       {"cells": int(worst.size), "pass": int(worst.size) - n_fail - n_review, "review": n_review,
                        "fail": n_fail, "suppressed": int(hidden.sum())},
                       tuple((rows[i], cols[j]) for i, j in zip(*np.nonzero(hidden), strict=True)))


#: row or column labels that name a margin (pandas' and ACRO's "All", and the usual words in fi/sv/en)
MARGIN_LABELS = frozenset({"all", "total", "totals", "sum", "yhteensä", "kaikki", "summa", "totalt", "alla"})


def _is_margin(label: object) -> bool:
    parts = label if isinstance(label, tuple) else (label,)
    return any(str(x).strip().lower() in MARGIN_LABELS for x in parts)


def suppression_findings(t: Table, hidden: np.ndarray) -> tuple[list[str], int]:
    """Whether the table's suppressed (empty) cells could be worked out again.

    A suppressed cell that is the only one in its row or column (of more than one cell) is recovered by
    subtraction from that line's total: a ``fail`` when the table itself carries the margin, a ``review``
    otherwise (the total may be published elsewhere; the checkers judge).  Returns the findings and the
    worst status.
    """
    if not hidden.any():
        return [], PASS
    rows, cols = list(t.values.index), list(t.values.columns)
    has_margin = any(_is_margin(r) for r in rows) or any(_is_margin(c) for c in cols)
    findings, worst = [], PASS
    for axis, labels, what in ((1, rows, "row"), (0, cols, "column")):
        per_line = hidden.sum(axis=axis)
        length = hidden.shape[axis]
        for k in np.nonzero(per_line == 1)[0]:
            if length < 2 or _is_margin(labels[k]):
                continue
            status = FAIL if has_margin else REVIEW
            worst = max(worst, status)
            findings.append(f"{what} {labels[k]!r} has a single suppressed cell: it can be worked out from the "
                            f"{what}'s total" + (" shown in the table" if has_margin else
                                                 " if that total is known (suppress a second cell)"))
    return findings, worst


def check_regression(residual_df: int, p: DisclosureProfile) -> CheckReport:
    """A model output passes when its residual degrees of freedom reach the profile's minimum."""
    if residual_df < p.min_residual_df:
        finding = f"residual degrees of freedom {residual_df} below the minimum {p.min_residual_df}"
        return CheckReport(p.name, "fail", (), (finding,), {"cells": 0, "pass": 0, "review": 0, "fail": 1})
    return CheckReport(p.name, "pass", (), (), {"cells": 0, "pass": 0, "review": 0, "fail": 0})


def _small(diff: float, p: DisclosureProfile) -> bool:
    return bool(0 < abs(diff) < p.min_count)


def check_differencing(new: Table, released: list[Table], p: DisclosureProfile) -> list[str]:
    """Findings where the new table and an already released one differ by a small, non-zero count.

    The tables need not have the same shape: cells are compared where both have the same row and column
    label; a row (or column) both have is compared by its total over the columns (rows) both have and by its
    whole total (the new table's extra columns then describe the difference); and the grand totals.  Margin
    rows and columns are left out of the sums.  A suppressed (empty) cell makes the sums it is in unknown,
    so they are not compared.
    """
    findings: list[str] = []
    for old in released:
        a, b = _body(new.counts), _body(old.counts)
        rows = [r for r in a.index if r in b.index]
        cols = [c for c in a.columns if c in b.columns]
        add = findings.append
        if rows and cols:
            diff = a.loc[rows, cols].to_numpy(dtype=float) - b.loc[rows, cols].to_numpy(dtype=float)
            for i, j in zip(*np.nonzero((np.abs(diff) > 0) & (np.abs(diff) < p.min_count)), strict=True):
                add(f"cell ({rows[i]}, {cols[j]}) differs from released table '{old.name}' by "
                    f"{int(abs(diff[i, j]))} persons, fewer than {p.min_count}")
        for what, shared, x, y in (("row", rows, a, b), ("column", cols, a.T, b.T)):
            for label in shared:
                tx, ty = _line_total(x.loc[label]), _line_total(y.loc[label])
                if tx is not None and ty is not None and _small(tx - ty, p):
                    add(f"{what} {label!r} totals {tx:g} here and {ty:g} in released table '{old.name}': the "
                        f"difference of {abs(tx - ty):g} persons describes a group smaller than {p.min_count}")
        ta, tb = _line_total(a.stack()), _line_total(b.stack())
        if ta is not None and tb is not None and _small(ta - tb, p):
            add(f"total differs from released table '{old.name}' by {abs(ta - tb):g} persons, fewer than "
                f"{p.min_count}: the difference describes a small group")
    return list(dict.fromkeys(findings))


def _body(counts: pd.DataFrame) -> pd.DataFrame:
    """A table's cells without its margin rows and columns."""
    return counts.loc[[r for r in counts.index if not _is_margin(r)], [c for c in counts.columns if not _is_margin(c)]]


def _line_total(line: pd.Series) -> float | None:
    values = line.to_numpy(dtype=float)
    return None if np.isnan(values).any() else float(values.sum())


def suppress(t: Table, report: CheckReport) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Primary and secondary suppression.

    Returns the released values (suppressed cells NaN), the primary mask and the secondary mask.
    Secondary suppression repeats until no row or column holds exactly one suppressed cell,
    each time adding the unsuppressed cell with the smallest count in that row or column.
    """
    rows, cols = list(t.values.index), list(t.values.columns)
    primary = np.zeros(t.values.shape, dtype=bool)
    for c in report.cells:
        if c.status == "fail":
            primary[rows.index(c.row), cols.index(c.column)] = True
    mask = primary.copy()
    counts = t.counts.to_numpy(dtype=float)
    changed = True
    while changed:
        changed = False
        for axis in (0, 1):
            lines = mask if axis == 0 else mask.T
            for k in range(lines.shape[0]):
                if lines[k].sum() == 1 and lines.shape[1] > 1:
                    line_counts = counts[k] if axis == 0 else counts[:, k]
                    candidates = np.where(~lines[k], line_counts, np.inf)
                    pick = int(np.argmin(candidates))
                    if np.isfinite(candidates[pick]):
                        if axis == 0:
                            mask[k, pick] = True
                        else:
                            mask[pick, k] = True
                        changed = True
    released = t.values.mask(mask)
    return released, primary, mask & ~primary


def round_counts(values: pd.DataFrame, base: int | None) -> pd.DataFrame:
    """Round to the nearest multiple of ``base`` (no change without a base)."""
    if not base:
        return values
    return (values / base).round() * base


def table_from_rows(df: pd.DataFrame, rows: str, columns: str | None = None, *, statistic: Statistic = "count",
                    value: str | None = None, person: str = "pseudonym", top_m: int = 3) -> Table:
    """Build a :class:`Table` (with true counts and top contributors) from row-level data."""
    work = df.assign(_col=df[columns] if columns else "all")
    counts = work.groupby([rows, "_col"])[person].nunique().unstack(fill_value=0)
    counts.columns.name = columns
    if statistic == "count":
        values = counts.astype(float)
        largest = None
    else:
        if value is None:
            raise ValueError(f"a {statistic} table needs a value column")
        per_person = work.groupby([rows, "_col", person])[value].sum()
        negatives = (per_person < 0).groupby(level=[0, 1]).sum().unstack().reindex(
            index=counts.index, columns=counts.columns).fillna(0)
        agg = {"sum": "sum", "mean": "mean", "median": "median"}[statistic]
        values = work.groupby([rows, "_col"])[value].agg(agg).unstack()
        values = values.reindex(index=counts.index, columns=counts.columns)
        top = per_person.groupby(level=[0, 1]).nlargest(top_m)
        largest = np.full((*counts.shape, top_m), np.nan)
        ridx = {r: i for i, r in enumerate(counts.index)}
        cidx = {c: i for i, c in enumerate(counts.columns)}
        for (r, c), grp in top.groupby(level=[0, 1]):
            vals = grp.to_numpy()
            largest[ridx[r], cidx[c], : len(vals)] = vals
    return Table(values, counts.astype(float), statistic, largest,
                 negatives=None if statistic == "count" else negatives)
