"""A table's specification, how it is computed and released, and how the airlock verifies a file against it.

One code path computes a table in the analyst's kernel (:class:`secure_env.analyst.ACRO`) and again in the airlock,
outside the kernel, on the permit's delivered data: :func:`compute` builds the :class:`~disclosure.Table` with the
true persons and contributors behind every cell, :func:`release` applies the profile's checks, suppression and
rounding.  A helper writes the specification beside its output (``<file>.spec.json``); when the file is added to a
request, :func:`verify` runs the specification again and compares the numbers: *verified* when they match, so the
automatic verdict rests on the true counts (also for a mean, a quantile or a maximum); *unverified* otherwise, and
the reviewers judge it with the checks of what is visible.  Pure pandas: importable in a kernel.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from secure_env.airlock.disclosure import (
    AGGREGATORS,
    CheckReport,
    Table,
    build_table,
    check_table,
    round_counts,
    suppress,
)
from secure_env.airlock.profiles import DisclosureProfile
from secure_env.airlock.survival import SurvivalSpec

NAME = r"^[A-Za-z0-9_.-]{1,64}$"
SPEC_SUFFIX = ".spec.json"
FORMAT = "toisio-table-spec/1"


class TableSpec(BaseModel):
    """What a table is: the delivered dataset, the rows kept, the variables and the statistic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["toisio-table-spec/1"] = FORMAT
    dataset: str = Field(pattern=NAME)
    where: dict[str, str | int | float | bool] = Field({}, max_length=20)
    index: tuple[str, ...] = Field(min_length=1, max_length=4)
    columns: tuple[str, ...] = Field((), max_length=4)
    values: str | None = None
    aggfunc: str = "count"
    margins: bool = False
    normalize: Literal[False, "all", "index", "columns"] = False
    person: str = "pseudonym"
    suppress: bool = True
    profile: DisclosureProfile | None = Field(None, description="the profile the helper suppressed and rounded with")
    with_persons: bool = Field(False, description="add the persons dataset's columns to each row (by pseudonym)")
    period: Literal["year", "quarter", "month"] | None = None
    date: str | None = Field(None, description="the date column the period column (<date>_<period>) comes from")
    bins: dict[str, tuple[float, ...]] = Field({}, max_length=4, description="columns replaced by their bin, "
                                                                            "[low, high), from these edges")

    @model_validator(mode="after")
    def _check(self) -> TableSpec:
        if self.aggfunc not in AGGREGATORS:
            raise ValueError(f"aggfunc {self.aggfunc!r}: one of {', '.join(AGGREGATORS)}")
        if self.aggfunc != "count" and not self.values:
            raise ValueError(f"a {self.aggfunc} table needs values")
        for n in (*self.index, *self.columns, *self.where, self.person, *([self.values] if self.values else [])):
            if not re.match(NAME, n):
                raise ValueError(f"column name {n!r}: letters, digits, '_', '.', '-' only")
        return self


def rows_of(data_dir: Path, spec) -> pd.DataFrame:
    """The spec's rows: its dataset from the delivery, with ``where`` applied (equality on the text of a value), and
    for a table's spec the persons' columns, the period and the bins it asks for (a model's or a survival table's
    spec has dataset and where only)."""
    where = data_dir / spec.dataset
    if not where.exists():
        raise FileNotFoundError(f"dataset {spec.dataset!r} is not in the delivery")
    df = pd.read_parquet(where)
    persons = data_dir / "persons"
    if getattr(spec, "with_persons", False) and spec.dataset != "persons" and persons.exists():
        people = pd.read_parquet(persons)
        extra = [c for c in people.columns if c != spec.person and c not in df.columns]
        df = df.merge(people[[spec.person, *extra]], on=spec.person, how="left")
    for col, value in spec.where.items():
        if col not in df.columns:
            raise ValueError(f"{spec.dataset} has no column {col!r}")
        df = df[df[col].astype("string") == str(value)]
    if getattr(spec, "period", None):
        df = df.assign(**{period_column(spec.date, spec.period): period_of(df[spec.date], spec.period)})
    for col, edges in getattr(spec, "bins", {}).items():
        if col not in df.columns:
            raise ValueError(f"{spec.dataset} has no column {col!r}")
        df = df.assign(**{col: bin_of(df[col], edges)})
    return df


def bin_of(values: pd.Series, edges: tuple[float, ...]) -> pd.Categorical:
    """Each value's bin as text, ``[low, high)`` (the last bin closed); outside the edges: ``(outside)``."""
    edges = tuple(float(e) for e in edges)
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        raise ValueError("bin edges must increase")
    labels = [f"[{a:g}, {b:g})" for a, b in zip(edges, edges[1:], strict=False)]
    labels[-1] = labels[-1][:-1] + "]"
    cut = pd.cut(pd.to_numeric(values, errors="coerce"), bins=list(edges), labels=labels, right=False,
                 include_lowest=True)
    last = pd.to_numeric(values, errors="coerce") == edges[-1]
    out = cut.astype("string").fillna("(outside)").mask(last, labels[-1])
    return pd.Categorical(out, categories=[*labels, "(outside)"], ordered=True)


def period_column(date: str, period: str) -> str:
    return f"{date}_{period}"


def period_of(dates: pd.Series, period: str) -> pd.Series:
    """Each date's period as text: ``2021``, ``2021Q3`` or ``2021-07`` (empty dates stay empty)."""
    d = pd.to_datetime(dates, errors="coerce")
    out = {"year": d.dt.year.astype("Int64").astype("string"),
           "quarter": d.dt.year.astype("Int64").astype("string") + "Q" + d.dt.quarter.astype("Int64").astype("string"),
           "month": d.dt.strftime("%Y-%m")}[period]
    return out.astype("string")


def compute(spec: TableSpec, rows: pd.DataFrame, top_m: int = 3) -> Table:
    return build_table(rows, spec.index, spec.columns, aggfunc=spec.aggfunc, values=spec.values, person=spec.person,
                       margins=spec.margins, normalize=spec.normalize, top_m=top_m)


def release(spec: TableSpec, table: Table, prof: DisclosureProfile) -> tuple[pd.DataFrame, CheckReport]:
    """The table as it may leave: failing cells suppressed (primary and secondary, when the spec asks for it),
    counts rounded where the profile says."""
    report = check_table(table, prof)
    out = table.values
    if spec.suppress:
        out, _, _ = suppress(table, report)
    if table.statistic == "count":
        out = round_counts(out, prof.rounding_base)
    return out, report


def write(path: Path, released: pd.DataFrame, spec: TableSpec) -> Path:
    """The released table as CSV (its row labels as columns) and its specification beside it."""
    path = Path(path)
    released.to_csv(path)
    Path(str(path) + SPEC_SUFFIX).write_text(spec.model_dump_json(indent=2) + "\n")
    return path


def spec_beside(path: Path):
    """The specification a helper wrote beside ``path`` (a :class:`TableSpec`, a :class:`FigureSpec`, a
    :class:`~secure_env.airlock.regression.ModelSpec` or a :class:`~secure_env.airlock.survival.SurvivalSpec`), or
    None."""
    side = Path(str(path) + SPEC_SUFFIX)
    if not side.is_file():
        return None
    raw = json.loads(side.read_text())
    if isinstance(raw, dict) and raw.get("format") == "toisio-model-spec/1":
        from secure_env.airlock.regression import ModelSpec

        return ModelSpec.model_validate(raw)
    if isinstance(raw, dict) and raw.get("format") == FIGURE_FORMAT:
        return FigureSpec.model_validate(raw)
    if isinstance(raw, dict) and raw.get("format") == "toisio-survival-spec/1":
        from secure_env.airlock.survival import SurvivalSpec

        return SurvivalSpec.model_validate(raw)
    return TableSpec.model_validate(raw)


def _label(v) -> str:
    return "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)


def read_released(path: Path, spec: TableSpec) -> pd.DataFrame:
    """A released CSV read back as its spec shapes it: the row variables as the index, text labels."""
    n_rows, n_cols = len(spec.index), max(len(spec.columns), 1)
    df = pd.read_csv(path, index_col=list(range(n_rows)), header=list(range(n_cols)), dtype=str,
                     keep_default_na=False)
    return df


def matches(path: Path, spec: TableSpec, expected: pd.DataFrame) -> tuple[bool, str]:
    """Whether the file holds ``expected``: the same row and column labels, and the same numbers (empty where
    suppressed), to nine significant digits."""
    try:
        got = read_released(path, spec)
    except (ValueError, IndexError) as e:
        return False, f"the file does not read as the specified table ({e})"
    exp_rows = [tuple(map(_label, r)) if isinstance(r, tuple) else (_label(r),) for r in expected.index]
    got_rows = [tuple(map(_label, r)) if isinstance(r, tuple) else (_label(r),) for r in got.index]
    exp_cols = [tuple(map(_label, c)) if isinstance(c, tuple) else (_label(c),) for c in expected.columns]
    got_cols = [tuple(map(_label, c)) if isinstance(c, tuple) else (_label(c),) for c in got.columns]
    if exp_rows != got_rows or exp_cols != got_cols:
        return False, "its rows or columns differ from the specified table's"
    want = expected.to_numpy(dtype=float)
    have = got.apply(lambda col: pd.to_numeric(col.where(col.str.strip() != ""), errors="coerce")).to_numpy(
        dtype=float)
    if not np.array_equal(np.isnan(want), np.isnan(have)):
        return False, "its suppressed (empty) cells differ from the specified table's"
    ok = np.isclose(want, have, rtol=1e-9, atol=1e-9, equal_nan=True)
    if not ok.all():
        i, j = (int(x[0]) for x in np.nonzero(~ok))
        return False, f"cell ({got_rows[i]}, {got_cols[j]}) is {have[i, j]:g} here, {want[i, j]:g} when run again"
    return True, "the numbers match the specification run again on the delivered data"


@dataclass(frozen=True)
class Verification:
    verified: bool
    reason: str
    report: CheckReport | None = None  # the checks on the true table, when verified


def _run_again(spec: TableSpec, data_dir: Path, prof: DisclosureProfile) -> tuple[pd.DataFrame, Table]:
    """``spec``'s table computed again on the delivered data, and what of it may be shown (raises
    FileNotFoundError or ValueError when it cannot be computed)."""
    table = compute(spec, rows_of(data_dir, spec), top_m=max(prof.nk_n, 2))
    expected, _ = release(spec, table, spec.profile or prof)
    return expected, table


def _verdict(expected: pd.DataFrame, table: Table, prof: DisclosureProfile) -> CheckReport:
    """The permit's profile on the true persons and contributors behind every cell that is shown."""
    return check_table(Table(expected, table.counts, table.statistic, table.largest, table.structural_zeros,
                             table.name, table.negatives, table.sums), prof)


def verify(path: Path, spec: TableSpec, data_dir: Path, prof: DisclosureProfile) -> Verification:
    """Run ``spec`` again on the delivered data and compare with the file."""
    try:
        expected, table = _run_again(spec, data_dir, prof)
    except (FileNotFoundError, ValueError) as e:
        return Verification(False, f"the specification cannot be run again: {e}")
    ok, why = matches(path, spec, expected)
    if not ok:
        return Verification(False, why)
    return Verification(True, why, _verdict(expected, table, prof))


def spec_json(spec: TableSpec) -> dict:
    return json.loads(spec.model_dump_json())


# ---------------------------------------------------------------- figures drawn from a table

FIGURE_FORMAT = "toisio-figure-spec/1"


class FigureSpec(BaseModel):
    """A figure drawn by the helper from a checked table: the table's specification and how it is drawn.  The
    airlock computes the table again and draws it again (:func:`draw_histogram`, or
    :func:`secure_env.airlock.survival.draw_curve` for a Kaplan-Meier curve); the same numbers give the same bytes
    (matplotlib's Agg renderer with the font it ships, no timestamp), so the figure itself is verified."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["toisio-figure-spec/1"] = FIGURE_FORMAT
    kind: Literal["histogram", "kaplan_meier"] = "histogram"
    column: str = Field(max_length=64)
    table: TableSpec | None = None
    survival: SurvivalSpec | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FigureSpec:
        if (self.kind == "histogram") != (self.table is not None) or (self.kind == "kaplan_meier") != (
                self.survival is not None):
            raise ValueError("a histogram is drawn from a table spec, a Kaplan-Meier curve from a survival spec")
        return self


def figure_png(draw) -> bytes:
    """The PNG of a figure ``draw(axes)`` draws, the same bytes for the same drawing: no pyplot state, no backend
    of the notebook's, matplotlib's Agg renderer, no metadata but the image."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    FigureCanvasAgg(fig)
    draw(fig.add_subplot())
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def draw_histogram(shown: pd.Series, column: str) -> bytes:
    """The PNG of a histogram of persons per bin (a suppressed bin drawn empty)."""
    def draw(ax) -> None:
        labels = [str(x) for x in shown.index]
        positions = np.arange(len(labels))
        ax.bar(positions, pd.to_numeric(shown, errors="coerce").fillna(0).to_numpy(), color="#4a6fa5")
        ax.set_xticks(positions, labels, rotation=45, ha="right")
        ax.set_xlabel(column)
        ax.set_ylabel("persons")

    return figure_png(draw)


def verify_figure(path: Path, spec: FigureSpec, data_dir: Path, prof: DisclosureProfile) -> Verification:
    """Compute the figure's table again on the delivered data, draw it again and compare the bytes; the verdict is
    the checks on the true table behind it."""
    if spec.survival is not None:
        from secure_env.airlock import survival as S

        try:
            expected = S.compute(spec.survival, rows_of(data_dir, spec.survival))  # type: ignore[arg-type]
        except (FileNotFoundError, ValueError) as e:
            return Verification(False, f"the specification cannot be run again: {e}")
        if S.draw_curve(expected, spec.column) != Path(path).read_bytes():
            return Verification(False, "the curve differs from the one drawn again from the delivered data")
        return Verification(True, "drawn again from the delivered data: the same curve", S.check(expected, prof))
    assert spec.table is not None
    try:
        expected, table = _run_again(spec.table, data_dir, prof)
    except (FileNotFoundError, ValueError) as e:
        return Verification(False, f"the specification cannot be run again: {e}")
    if draw_histogram(expected.iloc[:, 0], spec.column) != Path(path).read_bytes():
        return Verification(False, "the figure differs from the one drawn again from the delivered data (edited, "
                                   "or drawn from other numbers)")
    return Verification(True, "drawn again from the delivered data: the same figure", _verdict(expected, table, prof))
