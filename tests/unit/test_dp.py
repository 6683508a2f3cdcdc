"""Differential privacy: explicit bounds, the budget ledger never exceeded, outputs marked."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secure_env.airlock.dp import BudgetExceeded, DpSession, MissingBounds, NoBudget, budget, charge, set_budget
from tests.factories import make_service
from toisio import audit
from toisio.identity import SYSTEM, Actor, Role

#: the decider who grants budgets; the queries run as the service (the DP query service computes them, issue 16)
DECIDER = Actor("dora", frozenset({Role.DECIDER}))


def test_queries_need_bounds(svc):
    set_budget(svc, DECIDER, "TOISIO-2026-1", 5.0, 1e-6)
    s = DpSession(svc, SYSTEM, "TOISIO-2026-1", random_state=1)
    for call in (lambda: s.mean([1, 2, 3], epsilon=0.1), lambda: s.sum([1], epsilon=0.1),
                 lambda: s.var([1], epsilon=0.1), lambda: s.quantile([1], 0.5, epsilon=0.1),
                 lambda: s.histogram([1], epsilon=0.1), lambda: s.linear_regression([[1]], [1], epsilon=0.1),
                 lambda: s.logistic_regression([[1]], [1], epsilon=0.1)):
        with pytest.raises(MissingBounds, match="never inferred|needs"):
            call()
    assert budget(svc, SYSTEM, "TOISIO-2026-1").spent_epsilon == 0  # refused before anything was charged


def test_each_statistic_runs_and_is_marked(svc):
    set_budget(svc, DECIDER, "TOISIO-2026-1", 10.0, 0.0)
    s = DpSession(svc, SYSTEM, "TOISIO-2026-1", random_state=3)
    rng = np.random.default_rng(0)
    ages = rng.integers(20, 90, 2000)
    assert abs(s.mean(ages, epsilon=1.0, bounds=(0, 100)).value - ages.mean()) < 5
    assert abs(s.count(ages > 50, epsilon=1.0).value - (ages > 50).sum()) < 50
    assert s.sum(ages, epsilon=0.5, bounds=(0, 100)).differentially_private
    assert s.var(ages, epsilon=0.5, bounds=(0, 100)).statistic == "variance"
    assert 20 <= s.quantile(ages, 0.5, epsilon=0.5, bounds=(0, 100)).value <= 90
    h = s.histogram(ages, epsilon=1.0, bins=7, range=(20, 90)).value
    assert len(h["counts"]) == 7
    X = rng.normal(size=(500, 2))
    y = X @ [1.0, -1.0] + rng.normal(scale=0.1, size=500)
    lin = s.linear_regression(np.clip(X, -3, 3), np.clip(y, -6, 6), epsilon=1.0, bounds_X=(-3, 3),
                              bounds_y=(-6, 6))
    assert len(lin.value["coef"]) == 2
    logit = s.logistic_regression(X / 5, (y > 0).astype(int), epsilon=1.0, data_norm=1.0)
    assert len(logit.value["coef"]) == 2
    b = budget(svc, SYSTEM, "TOISIO-2026-1")
    assert b.spent_epsilon == pytest.approx(6.5)
    with svc.engine.connect() as conn:
        assert sum(e.action == "dp.query_charged" for e in audit.events(conn)) == 8


def test_exhausted_budget_refused_before_running(svc):
    set_budget(svc, DECIDER, "TOISIO-2026-1", 1.0, 0.0)
    s = DpSession(svc, SYSTEM, "TOISIO-2026-1")
    s.mean([1, 2], epsilon=0.6, bounds=(0, 10))
    with pytest.raises(BudgetExceeded, match="needs epsilon 0.5, delta 0 but permit TOISIO-2026-1's privacy "
                                             "budget has epsilon 0.4"):
        s.mean([1, 2], epsilon=0.5, bounds=(0, 10))
    assert budget(svc, SYSTEM, "TOISIO-2026-1").spent_epsilon == pytest.approx(0.6)


def test_no_budget_no_queries(svc):
    with pytest.raises(NoBudget):
        DpSession(svc, SYSTEM, "TOISIO-2026-9").count([1], epsilon=0.1)


@given(st.lists(st.tuples(st.floats(0.01, 2.0), st.floats(0, 1e-6)), min_size=1, max_size=30),
       st.floats(0.5, 10.0), st.floats(0.0, 5e-6))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_budget_never_exceeded(tmp_path_factory, queries, eps_total, delta_total):
    svc = make_service(tmp_path_factory.mktemp("dp"))
    set_budget(svc, DECIDER, "P-2026-1", eps_total, delta_total)
    accepted_eps = accepted_delta = 0.0
    for eps, delta in queries:
        try:
            charge(svc, SYSTEM, "P-2026-1", query="q", epsilon=eps, delta=delta)
            accepted_eps += eps
            accepted_delta += delta
        except BudgetExceeded:
            assert accepted_eps + eps > eps_total - 1e-9 or accepted_delta + delta > delta_total - 1e-12
    b = budget(svc, SYSTEM, "P-2026-1")
    assert b.spent_epsilon <= eps_total + 1e-9 and b.spent_delta <= delta_total + 1e-12
    assert b.spent_epsilon == pytest.approx(accepted_eps)


def test_dp_crosstab_and_describe(svc):
    import pandas as pd

    from secure_env.airlock.dp import dp_crosstab, dp_describe

    set_budget(svc, DECIDER, "TOISIO-2026-1", 3.0, 0.0)
    s = DpSession(svc, SYSTEM, "TOISIO-2026-1", random_state=5)
    df = pd.DataFrame({"pseudonym": [f"p{i}" for i in range(1000)], "sex": ["1", "2"] * 500,
                       "band": ["young"] * 600 + ["old"] * 400})
    t = dp_crosstab(s, df, "band", "sex", epsilon=1.0)
    assert t.attrs["differentially_private"] and abs(int(t.loc["young", "1"]) - 300) < 30
    d = dp_describe(s, range(100), epsilon=1.5, bounds=(0, 100))
    assert d["differentially_private"] and abs(d["mean"] - 49.5) < 20
    assert budget(svc, SYSTEM, "TOISIO-2026-1").spent_epsilon == pytest.approx(2.5)
    with pytest.raises(ValueError, match="one row per person"):
        dp_crosstab(s, pd.concat([df, df]), "band", "sex", epsilon=0.1)
