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

Statistic = Literal["count", "percent", "sum", "mean", "median", "q10", "q25", "q75", "q90", "min", "max", "mode",
                    "std", "var"]
PASS, REVIEW, FAIL = 0, 1, 2
STATUS = {PASS: "pass", REVIEW: "review", FAIL: "fail"}
#: quantiles by name (the median is q50)
QUANTILES: dict[str, float] = {"q10": 0.10, "q25": 0.25, "median": 0.5, "q75": 0.75, "q90": 0.90}
#: statistics that add up contributions, so that one large contributor can dominate them (ACRO applies the
#: dominance rules to these)
MAGNITUDE: frozenset[str] = frozenset({"sum", "mean", *QUANTILES})
#: statistics that show one person's own value
INDIVIDUAL: frozenset[str] = frozenset({"min", "max", "mode"})
#: statistics of spread, whose degrees of freedom per cell are the count behind it less one
SPREAD: frozenset[str] = frozenset({"std", "var"})


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
    sums: pd.DataFrame | None = None  # magnitude tables built from rows: each cell's true total


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
    if t.sums is not None:  # the true sums behind a mean or a quantile (from the rows)
        return np.nan_to_num(t.sums.to_numpy(dtype=float))
    # mean (and quantiles as an approximation): total = statistic x count
    return np.nan_to_num(v * t.counts.to_numpy(dtype=float))


def _individual(t: Table, p: DisclosureProfile) -> tuple[np.ndarray, str]:
    c = t.counts.to_numpy(dtype=float)
    allowed = p.individual_values and c >= p.min_count
    return np.where((c > 0) & ~allowed, FAIL, PASS), (
        f"a {t.statistic} is one person's own value; it fails unless the profile allows individual values "
        f"and {p.min_count} or more persons are behind it ({{value}} here)")


def _dof(t: Table, p: DisclosureProfile) -> tuple[np.ndarray, str]:
    c = t.counts.to_numpy(dtype=float)
    return np.where((c > 0) & (c - 1 < p.min_residual_df), FAIL, PASS), (
        f"{{value}} persons behind the {t.statistic}: degrees of freedom below the minimum {p.min_residual_df}")


ALL = frozenset({"count", "percent", *MAGNITUDE, *INDIVIDUAL, *SPREAD})
CELL_RULES: tuple[CellRule, ...] = (
    CellRule("min_count", ALL, "minimum number of persons behind any cell or statistic", _min_count),
    CellRule("zeros", ALL, "zero cells (no person behind a count or a statistic): disclosive or to review",
             _zeros),
    CellRule("individual_value", INDIVIDUAL, "min, max and mode show one person's value: fail unless the profile "
                                             "allows individual values and the cell's count reaches the minimum",
             _individual),
    CellRule("degrees_of_freedom", SPREAD, "std and var: the persons behind the cell less one must reach the "
                                           "minimum degrees of freedom", _dof),
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
    # a suppressed cell (empty, though persons are behind it) shows nothing; suppression_findings checks it stays
    # hidden.  A cell with nobody behind it is a zero cell, whatever its statistic shows.
    hidden = np.isnan(t.values.to_numpy(dtype=float)) & ~(t.counts.to_numpy(dtype=float) == 0)
    worst[hidden] = PASS
    flagged = [(np.where(hidden, 0, status), reason) for status, reason in flagged]
    cells = []
    rows, cols = t.values.index, t.values.columns
    counts_arr = t.counts.to_numpy()
    for i, j in zip(*np.nonzero(worst), strict=True):
        reasons = tuple(r.format(value=int(counts_arr[i, j]) if counts_arr[i, j] == counts_arr[i, j] else "?")
                        for s, r in flagged if s[i, j])
        cells.append(CellResult(rows[i], cols[j], STATUS[int(worst[i, j])], reasons))
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


MARGIN = "All"
AGGREGATORS = ("count", *QUANTILES, "sum", "mean", "min", "max", "mode", "std", "var")


def _aggregate(values: pd.core.groupby.SeriesGroupBy, aggfunc: str) -> pd.Series:
    if aggfunc in QUANTILES:
        return values.quantile(QUANTILES[aggfunc])
    if aggfunc == "mode":
        return values.agg(lambda s: s.mode().iloc[0] if s.notna().any() else np.nan)
    return values.agg(aggfunc)


def build_table(df: pd.DataFrame, index: list[str] | tuple[str, ...], columns: list[str] | tuple[str, ...] = (), *,
                aggfunc: str = "count", values: str | None = None, person: str = "pseudonym", margins: bool = False,
                normalize: bool | str = False, top_m: int = 3) -> Table:
    """A :class:`Table` with what the checks need (persons behind every cell, each cell's largest and negative
    contributions, its true total) from row-level data, by one or more row and column variables.

    ``aggfunc``: ``count`` (distinct persons), a quantile (``median``, ``q10`` ...), ``sum``, ``mean``, ``min``,
    ``max``, ``mode``, ``std`` or ``var`` of ``values``.  ``margins`` adds an ``All`` row and column computed from
    the rows (not summed from the cells).  ``normalize`` (counts only, as pandas' crosstab): ``all``, ``index`` or
    ``columns`` gives shares instead of counts; the counts stay behind them for the checks.  Labels are text.
    """
    index, columns = list(index), list(columns)
    if not index:
        raise ValueError("a table needs at least one row variable")
    if len({*index, *columns}) < len(index) + len(columns):
        raise ValueError(f"each variable is on the rows or the columns once (rows {index}, columns {columns})")
    if aggfunc not in AGGREGATORS:
        raise ValueError(f"aggfunc {aggfunc!r}: one of {', '.join(AGGREGATORS)}")
    if aggfunc != "count" and values is None:
        raise ValueError(f"a {aggfunc} table needs values= (the column it summarises)")
    if normalize and aggfunc != "count":
        raise ValueError("normalize applies to counts only")
    unknown = [c for c in [*index, *columns, *([values] if values else []), person] if c not in df.columns]
    if unknown:
        raise ValueError(f"no column {unknown[0]!r}; columns: {', '.join(map(str, df.columns))}")
    cols = columns or ["_all"]
    keys = [*index, *cols]
    # an ordered variable (bins, bands given as an ordered categorical) keeps its order; others sort as text
    orders = {k: [str(c) for c in df[k].cat.categories] for k in keys
              if k in df.columns and isinstance(df[k].dtype, pd.CategoricalDtype)}
    work = df.assign(_all="all") if not columns else df.copy()
    for k in keys:
        work[k] = work[k].astype("string").fillna("(missing)")
        if (work[k] == MARGIN).any() and margins:
            raise ValueError(f"{k} has a category named {MARGIN!r}, the margins' label")
    if values is not None:
        work[values] = pd.to_numeric(work[values], errors="coerce")
    frames = [work]
    if margins:
        blank = {k: "" for k in index[1:]}
        frames.append(work.assign(**{index[0]: MARGIN}, **blank))
        if columns:
            frames.append(work.assign(**{cols[0]: MARGIN}, **{k: "" for k in cols[1:]}))
            frames.append(work.assign(**{index[0]: MARGIN}, **blank, **{cols[0]: MARGIN},
                                      **{k: "" for k in cols[1:]}))
    every = pd.concat(frames, ignore_index=True)
    grouped = every.groupby(keys, sort=True, observed=True)
    counts = grouped[person].nunique()

    def ordered(labels, names: list[str]) -> list:
        def key(label):
            parts = label if isinstance(label, tuple) else (label,)
            return tuple((orders[n].index(v), v) if n in orders and v in orders[n] else (len(orders.get(n, ())), v)
                         for n, v in zip(names, parts, strict=False))
        return sorted(labels, key=key)

    def grid(series: pd.Series, fill: float | None = None) -> pd.DataFrame:
        out = series.unstack(cols)
        if len(index) == 1 and index[0] in orders:  # every bin or band is a row, the empty ones too
            every_level = [c for c in orders[index[0]] if c != "(outside)" or c in out.index]
            out = out.reindex([*every_level, *[r for r in out.index if r not in every_level]])
        body_rows = ordered([r for r in out.index if not _is_margin(r)], index)
        body_cols = ordered([c for c in out.columns if not _is_margin(c)], cols)
        out = out.reindex(index=[*body_rows, *[r for r in out.index if _is_margin(r)]],
                          columns=[*body_cols, *[c for c in out.columns if _is_margin(c)]])
        return out.astype(float) if fill is None else out.astype(float).fillna(fill)

    count_grid = grid(counts, 0.0)
    shape = count_grid.shape
    if aggfunc == "count":
        value_grid = count_grid.copy()
        statistic: str = "count"
        if normalize:
            statistic = "percent"
            body = count_grid.loc[[r for r in count_grid.index if not _is_margin(r)],
                                  [c for c in count_grid.columns if not _is_margin(c)]]
            if normalize in (True, "all"):
                value_grid = count_grid / body.to_numpy().sum()
            elif normalize == "index":
                value_grid = count_grid.div(count_grid.sum(axis=1) if not margins else
                                            count_grid[[c for c in count_grid.columns if _is_margin(c)][0]], axis=0)
            elif normalize == "columns":
                value_grid = count_grid.div(count_grid.sum(axis=0) if not margins else
                                            count_grid.loc[[r for r in count_grid.index if _is_margin(r)][0]], axis=1)
            else:
                raise ValueError("normalize: all, index or columns")
        return Table(value_grid, count_grid, statistic)
    value_grid = grid(_aggregate(grouped[values], aggfunc)).reindex_like(count_grid)
    per_person = every.groupby([*keys, person], observed=True)[values].sum()
    sums = grid(per_person.groupby(level=list(range(len(keys)))).sum()).reindex_like(count_grid)
    negatives = grid((per_person < 0).groupby(level=list(range(len(keys)))).sum(), 0.0).reindex_like(count_grid)
    top = per_person.groupby(level=list(range(len(keys))), group_keys=False).nlargest(top_m)
    largest = np.full((*shape, top_m), np.nan)
    rpos = {r: i for i, r in enumerate(count_grid.index)}
    cpos = {c: i for i, c in enumerate(count_grid.columns)}
    for key, grp in top.groupby(level=list(range(len(keys)))):
        key = key if isinstance(key, tuple) else (key,)
        r = key[:len(index)] if len(index) > 1 else key[0]
        c = key[len(index):] if len(cols) > 1 else key[len(index)]
        vals = np.sort(grp.to_numpy())[::-1]
        largest[rpos[r], cpos[c], :len(vals)] = vals
    return Table(value_grid, count_grid, aggfunc, largest, negatives=negatives.fillna(0.0), sums=sums)
