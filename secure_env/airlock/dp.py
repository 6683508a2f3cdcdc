"""Differentially private statistics with diffprivlib, charged to a per-permit budget ledger.

Every function takes explicit bounds (never inferred from the data: that would leak it) and an
epsilon; :func:`charge` records the query against the permit's (epsilon, delta) budget in the
database *before* the computation runs, and refuses a query that would exceed what remains.
Budgets compose by simple addition (sequential composition), which is conservative.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import func, select, text

from secure_env.airlock.models import DpBudgetRow, DpSpendRow
from toisio import audit
from toisio.authz import Table, rule
from toisio.errors import Conflict, Invalid
from toisio.identity import Actor, Role
from toisio.service import Service


class MissingBounds(Invalid):
    """A DP query was asked without the bounds it needs."""

    code = "missing_bounds"


class BudgetExceeded(Conflict, RuntimeError):
    """A DP query would spend more privacy budget than the permit has left."""

    code = "budget_exceeded"


class NoBudget(Conflict, RuntimeError):
    """The permit has no privacy budget set."""

    code = "no_budget"


@dataclass(frozen=True)
class Budget:
    permit_id: str
    epsilon: float
    delta: float
    spent_epsilon: float
    spent_delta: float

    @property
    def remaining_epsilon(self) -> float:
        return max(0.0, self.epsilon - self.spent_epsilon)

    @property
    def remaining_delta(self) -> float:
        return max(0.0, self.delta - self.spent_delta)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


NAMED = "named"
DP = Table("dp", {
    "set_budget": rule("set a permit's privacy budget", {Role.DECIDER, Role.SYSTEM}),
    "spend": rule("spend this permit's privacy budget", {NAMED, Role.SYSTEM}),
    "view_budget": rule("see this permit's privacy budget",
                        {NAMED, Role.HANDLER, Role.DECIDER, Role.OUTPUT_CHECKER, Role.AUDITOR, Role.SYSTEM}),
}, {NAMED: "an analyst named on the permit"})


def check_can_dp(svc: Service, actor: Actor, permit_id: str, action: str) -> str:
    """Raise :class:`~toisio.authz.PermissionDenied` unless ``actor`` may take the DP ``action`` on the permit
    (a role that grants it is enough; otherwise the permit is asked whether the actor is named on it)."""
    if DP.can(action, actor):
        return DP.check_can(action, actor)
    from permits.service import permit_access

    named = actor.user_id in permit_access(svc, permit_id).users
    return DP.check_can(action, actor, {NAMED} if named else ())


def set_budget(svc: Service, actor: Actor, permit_id: str, epsilon: float, delta: float) -> None:
    """Grant (or change) a permit's total budget; audited."""
    check_can_dp(svc, actor, permit_id, "set_budget")
    if epsilon <= 0 or delta < 0:
        raise ValueError("epsilon must be positive and delta non-negative")
    with svc.engine.begin() as conn:
        conn.execute(DpBudgetRow.__table__.delete().where(DpBudgetRow.permit_id == permit_id))
        conn.execute(DpBudgetRow.__table__.insert().values(permit_id=permit_id, epsilon=epsilon, delta=delta,
                                                           set_by=actor.user_id, set_at=_now()))
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="dp.budget_set", subject=f"permit:{permit_id}",
                     payload={"epsilon": epsilon, "delta": delta})


def _budget(conn, permit_id: str) -> Budget:
    row = conn.execute(select(DpBudgetRow).where(DpBudgetRow.permit_id == permit_id)).first()
    if row is None:
        raise NoBudget(f"permit {permit_id} has no differential-privacy budget; a data steward sets one")
    spent = conn.execute(select(func.coalesce(func.sum(DpSpendRow.epsilon), 0.0),
                                func.coalesce(func.sum(DpSpendRow.delta), 0.0))
                         .where(DpSpendRow.permit_id == permit_id)).one()
    return Budget(permit_id, row.epsilon, row.delta, float(spent[0]), float(spent[1]))


def budget(svc: Service, actor: Actor, permit_id: str) -> Budget:
    """The permit's budget and what has been spent."""
    check_can_dp(svc, actor, permit_id, "view_budget")
    with svc.engine.connect() as conn:
        return _budget(conn, permit_id)


def charge(svc: Service, actor: Actor, permit_id: str, *, query: str, epsilon: float, delta: float = 0.0) -> Budget:
    """Record a query against the budget, or raise :class:`BudgetExceeded` without recording it."""
    return charge_entry(svc, actor, permit_id, query=query, epsilon=epsilon, delta=delta)[0]


def _what(query: str) -> str:
    """A query named in plain words for an error (a DP query service's query is canonical JSON)."""
    try:
        q = json.loads(query)
    except ValueError:
        return query
    if not isinstance(q, dict) or "statistic" not in q:
        return query
    of = q.get("column") or " by ".join(v for v in (q.get("rows"), q.get("columns")) if v) or "rows"
    return f"the query ({q['statistic']} of {of} in {q.get('dataset', '?')})"


def charge_entry(svc: Service, actor: Actor, permit_id: str, *, query: str, epsilon: float,
                 delta: float = 0.0) -> tuple[Budget, int]:
    """:func:`charge`, also returning the ledger entry's id (the DP query service signs it into its receipt)."""
    check_can_dp(svc, actor, permit_id, "spend")
    if epsilon <= 0 or delta < 0:
        raise ValueError("a query needs a positive epsilon and a non-negative delta")
    with svc.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(7410002)"))
        b = _budget(conn, permit_id)
        # No tolerance: rounding may refuse a last query that would exactly exhaust the budget, never the
        # other way round.
        if b.spent_epsilon + epsilon > b.epsilon or b.spent_delta + delta > b.delta:
            raise BudgetExceeded(
                f"{_what(query)} needs epsilon {epsilon:g}, delta {delta:g} but permit {permit_id}'s privacy budget "
                f"has epsilon {b.remaining_epsilon:g}, delta {b.remaining_delta:g} left of {b.epsilon:g}, "
                f"{b.delta:g}")
        res = conn.execute(DpSpendRow.__table__.insert().values(permit_id=permit_id, query=query, epsilon=epsilon,
                                                                delta=delta, actor=actor.user_id, ts=_now()))
        entry = int(res.inserted_primary_key[0])
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="dp.query_charged", subject=f"permit:{permit_id}",
                     payload={"query": query, "epsilon": epsilon, "delta": delta, "ledger_id": entry})
        return Budget(permit_id, b.epsilon, b.delta, b.spent_epsilon + epsilon, b.spent_delta + delta), entry


def _bounds(bounds: Any, what: str) -> tuple[float, float]:
    if bounds is None:
        raise MissingBounds(f"{what} needs explicit bounds=(lower, upper); they are never inferred from the data")
    lo, hi = bounds
    if not lo < hi:
        raise MissingBounds(f"{what}: bounds must satisfy lower < upper, got {bounds}")
    return float(lo), float(hi)


@dataclass(frozen=True)
class DpResult:
    """A differentially private output, marked as such."""

    statistic: str
    value: Any
    epsilon: float
    delta: float
    bounds: Any
    differentially_private: bool = True


class DpSession:
    """DP queries for one permit and analyst, each charged before it runs."""

    def __init__(self, svc: Service, actor: Actor, permit_id: str, *, random_state: int | None = None):
        check_can_dp(svc, actor, permit_id, "spend")
        self.svc, self.permit_id, self.actor = svc, permit_id, actor
        self.random_state = random_state

    def _charge(self, query: str, epsilon: float, delta: float = 0.0) -> None:
        charge(self.svc, self.actor, self.permit_id, query=query, epsilon=epsilon, delta=delta)

    def count(self, values, *, epsilon: float) -> DpResult:
        """Number of non-zero (true) entries."""
        from diffprivlib import tools

        self._charge("count", epsilon)
        v = tools.count_nonzero(np.asarray(values), epsilon=epsilon, random_state=self.random_state)
        return DpResult("count", int(v), epsilon, 0.0, None)

    def _bounded(self, name: str, fn, values, epsilon: float, bounds) -> DpResult:
        b = _bounds(bounds, name)
        self._charge(name, epsilon)
        arr = np.clip(np.asarray(values, dtype=float), *b)
        return DpResult(name, float(fn(arr, epsilon=epsilon, bounds=b, random_state=self.random_state)), epsilon,
                        0.0, b)

    def sum(self, values, *, epsilon: float, bounds=None) -> DpResult:
        from diffprivlib import tools

        return self._bounded("sum", tools.sum, values, epsilon, bounds)

    def mean(self, values, *, epsilon: float, bounds=None) -> DpResult:
        from diffprivlib import tools

        return self._bounded("mean", tools.mean, values, epsilon, bounds)

    def var(self, values, *, epsilon: float, bounds=None) -> DpResult:
        from diffprivlib import tools

        return self._bounded("variance", tools.var, values, epsilon, bounds)

    def quantile(self, values, q: float, *, epsilon: float, bounds=None) -> DpResult:
        from diffprivlib import tools

        b = _bounds(bounds, "quantile")
        self._charge(f"quantile {q}", epsilon)
        arr = np.clip(np.asarray(values, dtype=float), *b)
        return DpResult(f"quantile {q}", float(tools.quantile(arr, q, epsilon=epsilon, bounds=b,
                                                             random_state=self.random_state)), epsilon, 0.0, b)

    def histogram(self, values, *, epsilon: float, bins: int = 10, range=None) -> DpResult:  # noqa: A002
        from diffprivlib import tools

        r = _bounds(range, "histogram")
        self._charge(f"histogram {bins} bins", epsilon)
        counts, edges = tools.histogram(np.clip(np.asarray(values, dtype=float), *r), epsilon=epsilon, bins=bins,
                                        range=r, random_state=self.random_state)
        return DpResult("histogram", {"counts": counts.tolist(), "edges": edges.tolist()}, epsilon, 0.0, r)

    def linear_regression(self, X, y, *, epsilon: float, bounds_X=None, bounds_y=None) -> DpResult:
        from diffprivlib.models import LinearRegression

        if bounds_X is None or bounds_y is None:
            raise MissingBounds("linear regression needs bounds_X and bounds_y")
        self._charge("linear regression", epsilon)
        model = LinearRegression(epsilon=epsilon, bounds_X=bounds_X, bounds_y=bounds_y,
                                 random_state=self.random_state).fit(np.asarray(X, dtype=float), np.asarray(y))
        return DpResult("linear regression", {"coef": np.ravel(model.coef_).tolist(),
                                              "intercept": float(np.ravel(model.intercept_)[0])}, epsilon, 0.0,
                        {"X": bounds_X, "y": bounds_y})

    def logistic_regression(self, X, y, *, epsilon: float, data_norm: float | None = None) -> DpResult:
        from diffprivlib.models import LogisticRegression

        if data_norm is None:
            raise MissingBounds("logistic regression needs data_norm (the largest L2 norm of a row of X)")
        self._charge("logistic regression", epsilon)
        with warnings.catch_warnings():
            # diffprivlib 0.6.6 passes L-BFGS-B options SciPy 1.17 deprecates; harmless, filtered narrowly
            warnings.filterwarnings("ignore", category=DeprecationWarning,
                                    message=r"scipy\.optimize: The `disp` and `iprint` options")
            model = LogisticRegression(epsilon=epsilon, data_norm=data_norm,
                                       random_state=self.random_state).fit(np.asarray(X, dtype=float), np.asarray(y))
        return DpResult("logistic regression", {"coef": np.ravel(model.coef_).tolist(),
                                                "intercept": float(np.ravel(model.intercept_)[0])}, epsilon, 0.0,
                        {"data_norm": data_norm})


def dp_crosstab(session: DpSession, df, rows: str, columns: str | None = None, *, epsilon: float,
                person: str = "pseudonym"):
    """Counts of persons by ``rows`` x ``columns`` with geometric noise; one charge of ``epsilon``.

    Each person must fall in exactly one cell (one row per person), so the cells are disjoint and the
    whole table costs ``epsilon`` once (parallel composition).  Returns a DataFrame marked DP.
    """
    import pandas as pd
    from diffprivlib.mechanisms import GeometricTruncated

    if df[person].duplicated().any():
        raise ValueError(f"dp_crosstab needs one row per person ({person} repeats); aggregate first")
    session._charge(f"crosstab {rows} x {columns or '-'}", epsilon)
    counts = pd.crosstab(df[rows], df[columns]) if columns else df[rows].value_counts().to_frame("count")
    mech = GeometricTruncated(epsilon=epsilon, sensitivity=1, lower=0, upper=max(int(len(df)), 1),
                              random_state=session.random_state)
    noisy = counts.map(lambda v: mech.randomise(int(v)))
    noisy.attrs["differentially_private"] = True
    noisy.attrs["epsilon"] = epsilon
    return noisy


def dp_describe(session: DpSession, values, *, epsilon: float, bounds) -> dict:
    """DP count, mean and variance of ``values`` within ``bounds``; the epsilon is split in three."""
    import numpy as np

    third = epsilon / 3
    arr = np.asarray(values, dtype=float)
    return {"count": session.count(np.ones_like(arr), epsilon=third).value,
            "mean": session.mean(arr, epsilon=third, bounds=bounds).value,
            "variance": session.var(arr, epsilon=third, bounds=bounds).value,
            "epsilon": epsilon, "differentially_private": True}


@dataclass(frozen=True)
class Charge:
    """One query charged to a permit's budget."""

    query: str
    epsilon: float
    delta: float
    actor: str
    at: str


def ledger(svc: Service, actor: Actor, permit_id: str) -> list[Charge]:
    """Every query charged to the permit's budget, oldest first (who may see the budget may see this)."""
    check_can_dp(svc, actor, permit_id, "view_budget")
    with svc.engine.connect() as conn:
        rows = conn.execute(select(DpSpendRow).where(DpSpendRow.permit_id == permit_id).order_by(DpSpendRow.id))
        return [Charge(r.query, r.epsilon, r.delta, r.actor, r.ts) for r in rows]
