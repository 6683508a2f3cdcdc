"""Every disclosure rule at its boundary for every output kind an ACRO user makes: a table of counts, of a
statistic (mean, median, sum, std, var, min, max, mode), a histogram's bins, a model's categorical levels and
residual degrees of freedom, and a survival table's steps.  Just at the threshold passes, one below fails.

Tables are built from rows with :func:`build_table`, as the helper and the airlock build them, so the boundary
is the persons behind each cell, not a number typed into a cell."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from secure_env.airlock.disclosure import build_table, check_table
from secure_env.airlock.profiles import profile

ACRO = profile("acro")  # min_count 10, min_residual_df 10, N-K 2/0.9, p 10%
INDIVIDUAL = ACRO.model_copy(update={"individual_values": True})
WIDE = 60  # persons in the other cell: never the one that decides


def _rows(n: int, *, value=lambda i: 100.0 + i) -> pd.DataFrame:
    """``n`` persons in group a, WIDE in group b, one row each, values spread (no dominance)."""
    people = [("a", i) for i in range(n)] + [("b", i) for i in range(WIDE)]
    return pd.DataFrame({"pseudonym": [f"{g}{i}" for g, i in people], "g": [g for g, _ in people],
                         "v": [float(value(i)) for _, i in people]})


def _status_of_a(table, prof) -> str:
    report = check_table(table, prof)
    cells = {str(c.row): c.status for c in report.cells}
    return cells.get("a", "pass")


@pytest.mark.parametrize("aggfunc, at, prof", [
    ("count", 10, ACRO), ("mean", 10, ACRO), ("median", 10, ACRO), ("sum", 10, ACRO), ("q25", 10, ACRO),
    # std and var: the persons behind the cell less one reach the minimum degrees of freedom (10)
    ("std", 11, ACRO), ("var", 11, ACRO),
    # min, max and mode are individual values: allowed only by a profile that permits them, from min_count up
    ("min", 10, INDIVIDUAL), ("max", 10, INDIVIDUAL), ("mode", 10, INDIVIDUAL),
])
def test_each_statistic_passes_at_its_threshold_and_fails_one_below(aggfunc, at, prof):
    values = None if aggfunc == "count" else "v"
    assert _status_of_a(build_table(_rows(at), ["g"], aggfunc=aggfunc, values=values), prof) == "pass"
    assert _status_of_a(build_table(_rows(at - 1), ["g"], aggfunc=aggfunc, values=values), prof) == "fail"


@pytest.mark.parametrize("aggfunc", ["min", "max", "mode"])
def test_an_individual_value_fails_at_any_count_unless_the_profile_allows_it(aggfunc):
    assert _status_of_a(build_table(_rows(500), ["g"], aggfunc=aggfunc, values="v"), ACRO) == "fail"


def test_dominance_at_its_boundary_in_a_table_built_from_rows():
    """N-K (2 largest >= 90% fails): two persons holding exactly 90% fail, just under passes."""
    def dominated(top: float):
        # 10 persons: two hold `top` each, eight share the rest equally
        rest = (2 * top / 0.9 - 2 * top) / 8
        return _rows(10, value=lambda i: top if i < 2 else rest)

    assert _status_of_a(build_table(dominated(450.0), ["g"], aggfunc="sum", values="v"), ACRO) == "fail"
    under = _rows(10, value=lambda i: 449.0 if i < 2 else (1000.0 - 2 * 450.0) / 8 + 0.2)
    assert _status_of_a(build_table(under, ["g"], aggfunc="sum", values="v"), ACRO) == "pass"


def test_a_negative_contribution_sends_the_cell_to_review():
    refunds = _rows(20, value=lambda i: -50.0 if i == 0 else 100.0)
    assert _status_of_a(build_table(refunds, ["g"], aggfunc="sum", values="v"), ACRO) == "review"


def test_a_histogram_bin_passes_at_the_minimum_and_fails_one_below():
    from secure_env.airlock.tables import bin_of

    edges = (0.0, 100.0, 200.0)
    for n, status in ((10, "pass"), (9, "fail")):
        df = pd.DataFrame({"pseudonym": [f"p{i}" for i in range(n + WIDE)],
                           "v": [50.0] * n + [150.0] * WIDE})
        df["bin"] = bin_of(df["v"], edges)
        report = check_table(build_table(df, ["bin"]), ACRO)
        first = {str(c.row): c.status for c in report.cells}.get("[0, 100)", "pass")
        assert first == status, report.to_dict()


@pytest.mark.parametrize("kind", ["ols", "logit", "probit"])
def test_a_models_level_passes_with_min_count_records_and_fails_one_below(kind):
    from secure_env.airlock import regression as R

    rng = np.random.default_rng(3)
    for rare, status in ((10, "pass"), (9, "fail")):
        n = 200
        df = pd.DataFrame({"x": rng.normal(size=n), "g": ["rare"] * rare + ["a", "b"] * ((n - rare) // 2)
                           + ["a"] * ((n - rare) % 2)})
        df["y"] = df.x + rng.normal(size=n)
        df["event"] = (df.y > 0).astype(int)
        results = R.fit(kind, f"{'y' if kind == 'ols' else 'event'} ~ x + C(g)", df)
        assert R.check_model(results, ACRO).status == status


def test_a_models_residual_degrees_of_freedom_at_the_boundary():
    from secure_env.airlock import regression as R

    rng = np.random.default_rng(1)
    for n, status in ((12, "pass"), (11, "fail")):  # y ~ x: 2 parameters, df = n - 2
        df = pd.DataFrame({"x": rng.normal(size=n), "y": rng.normal(size=n)})
        assert R.check_model(R.fit("ols", "y ~ x", df), ACRO).status == status


def test_a_survival_step_passes_when_it_stands_for_min_count_persons_and_fails_one_below():
    from secure_env.airlock.survival import check

    def table(left: int) -> pd.DataFrame:
        return pd.DataFrame({"time": [1.0, 2.0], "at_risk": [100, 100 - left], "events": [left, 20],
                             "left": [left, 20], "survival": [1 - left / 100, (1 - left / 100) * 0.75]})

    assert check(table(10), ACRO).status == "pass"
    assert check(table(9), ACRO).status == "fail"
