"""Differential privacy computed by the service, with signed receipts.

A workspace kernel never computes a "DP" result itself: it sends a :class:`DpQuery` (what to compute, on which
delivered dataset, with which bounds and epsilon; never data) to the service (:mod:`secure_env.airlock.dp_gateway`
over a Unix socket, or the REST API for a data request).  :func:`answer` then

1. checks the query against the permit's delivered data (the dataset and columns exist, bounds are given: a
   malformed query costs nothing),
2. charges the permit's ledger (:func:`secure_env.airlock.dp.charge_entry`; a query that would exceed the budget is
   refused before anything is computed),
3. computes the statistic with diffprivlib on the permit's data, outside the kernel, and
4. signs a receipt: HMAC-SHA256 with the service's receipt key over the query, the result, the permit and the ledger
   entry, which is stored on the ledger entry.

The airlock (:func:`verify`) gives the DP approval policy only to a file that *is* such an answer and whose receipt
verifies against the ledger: a forged receipt, an edited result, or an answer of another permit is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import Connection, select, update

from secure_env.airlock.dp import budget, charge_entry, check_can_dp
from secure_env.airlock.models import DpSpendRow
from toisio.errors import Invalid
from toisio.identity import Actor
from toisio.service import Service

FORMAT = "toisio-dp-answer/1"
STATISTICS = ("count", "sum", "mean", "var", "quantile", "histogram", "crosstab", "linear_regression",
              "logistic_regression")
#: what each statistic needs besides the dataset and epsilon (checked before the budget is charged)
NEEDS: dict[str, tuple[str, ...]] = {
    "count": (),
    "sum": ("column", "bounds"),
    "mean": ("column", "bounds"),
    "var": ("column", "bounds"),
    "quantile": ("column", "bounds", "q"),
    "histogram": ("column", "bounds"),
    "crosstab": ("rows",),
    "linear_regression": ("column", "bounds", "features", "bounds_features"),
    "logistic_regression": ("column", "features", "data_norm"),
}
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_EPSILON = 10.0


class BadQuery(Invalid):
    """A DP query that cannot be answered as asked (named what and where)."""

    code = "bad_dp_query"


class DpQuery(BaseModel):
    """What to compute: diffprivlib's parameters, explicit bounds, equality filters; never data."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    statistic: Literal["count", "sum", "mean", "var", "quantile", "histogram", "crosstab", "linear_regression",
                       "logistic_regression"]
    dataset: str = Field(pattern=NAME.pattern, description="a dataset of the permit's delivery (e.g. persons)")
    epsilon: float = Field(gt=0, le=MAX_EPSILON)
    column: str | None = Field(None, max_length=64, description="the value (or, for a model, the target) column")
    rows: str | None = Field(None, max_length=64, description="crosstab: the row variable")
    columns: str | None = Field(None, max_length=64, description="crosstab: the column variable")
    features: tuple[str, ...] = Field((), max_length=50, description="a model's explanatory columns")
    where: dict[str, str | int | float | bool] = Field({}, max_length=20,
                                                       description="keep rows whose columns equal these values")
    bounds: tuple[float, float] | None = Field(None, description="(lower, upper) of the column; never inferred")
    bounds_features: tuple[tuple[float, float], ...] = Field((), max_length=50)
    q: float | None = Field(None, ge=0, le=1, description="quantile: which one (0 to 1)")
    bins: int = Field(10, ge=1, le=1000, description="histogram: the number of bins over the bounds")
    data_norm: float | None = Field(None, gt=0, description="logistic regression: the largest L2 norm of a row")

    @model_validator(mode="after")
    def _complete(self) -> DpQuery:
        missing = [n for n in NEEDS[self.statistic] if getattr(self, n) in (None, ())]
        if missing:
            raise ValueError(f"{self.statistic} needs {', '.join(missing)} (bounds are never inferred from the data)")
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise ValueError(f"bounds must satisfy lower < upper, got {self.bounds}")
        if self.statistic == "linear_regression" and len(self.bounds_features) != len(self.features):
            raise ValueError("bounds_features needs one (lower, upper) per feature")
        for name in (self.column, self.rows, self.columns, *self.features, *self.where):
            if name is not None and not NAME.match(name):
                raise ValueError(f"column name {name!r}: letters, digits, '_', '.', '-' only")
        return self

    def canonical(self) -> str:
        """The query as the canonical JSON the ledger records and the receipt signs."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class DpAnswer(BaseModel):
    """A DP result with its receipt: what a notebook gets back, and what a DP output file holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["toisio-dp-answer/1"] = FORMAT
    permit_id: str
    query: DpQuery
    result: Any
    ledger_id: int
    epsilon: float
    delta: float
    at: str
    receipt: str = Field(pattern=r"^[0-9a-f]{64}$")

    def signed_part(self) -> bytes:
        body = self.model_dump(mode="json", exclude={"receipt"})
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Verification:
    """Whether a file is a DP answer whose receipt verifies; why not otherwise."""

    verified: bool
    reason: str
    ledger_id: int | None = None
    epsilon: float | None = None


def _sign(svc: Service, data: bytes) -> str:
    return hmac.new(svc.receipt_key.value, b"toisio-dp-receipt\x00" + data, hashlib.sha256).hexdigest()


def _load(data_dir: Path, q: DpQuery) -> pd.DataFrame:
    where = data_dir / q.dataset
    if not where.exists():
        have = sorted(p.name for p in data_dir.iterdir() if p.is_dir()) if data_dir.exists() else []
        raise BadQuery(f"dataset {q.dataset!r} is not in the permit's delivery; datasets: "
                       f"{', '.join(have) or 'none (not delivered yet)'}")
    df = pd.read_parquet(where)
    needed = [c for c in (q.column, q.rows, q.columns, *q.features, *q.where) if c]
    unknown = [c for c in needed if c not in df.columns]
    if unknown:
        raise BadQuery(f"{q.dataset} has no column {unknown[0]!r}; columns: {', '.join(map(str, df.columns))}")
    for col, value in q.where.items():
        df = df[df[col].astype(str) == str(value)]
    return df


def _numbers(df: pd.DataFrame, col: str, bounds: tuple[float, float]) -> np.ndarray:
    values = pd.to_numeric(df[col], errors="coerce").dropna().to_numpy(dtype=float)
    return np.clip(values, *bounds)


def _compute(q: DpQuery, df: pd.DataFrame, random_state: int | None) -> Any:
    from diffprivlib import tools

    rs = random_state
    if q.statistic == "count":
        return int(tools.count_nonzero(np.ones(len(df)), epsilon=q.epsilon, random_state=rs))
    if q.statistic in ("sum", "mean", "var"):
        fn = {"sum": tools.sum, "mean": tools.mean, "var": tools.var}[q.statistic]
        return float(fn(_numbers(df, q.column, q.bounds), epsilon=q.epsilon, bounds=q.bounds, random_state=rs))
    if q.statistic == "quantile":
        return float(tools.quantile(_numbers(df, q.column, q.bounds), q.q, epsilon=q.epsilon, bounds=q.bounds,
                                    random_state=rs))
    if q.statistic == "histogram":
        counts, edges = tools.histogram(_numbers(df, q.column, q.bounds), epsilon=q.epsilon, bins=q.bins,
                                        range=q.bounds, random_state=rs)
        return {"counts": [int(c) for c in counts], "edges": [float(e) for e in edges]}
    if q.statistic == "crosstab":
        return _crosstab(q, df, rs)
    x = df[list(q.features)].apply(pd.to_numeric, errors="coerce")
    y = pd.to_numeric(df[q.column], errors="coerce")
    keep = x.notna().all(axis=1) & y.notna()
    x, y = x[keep].to_numpy(dtype=float), y[keep].to_numpy()
    if q.statistic == "linear_regression":
        from diffprivlib.models import LinearRegression

        lo = tuple(b[0] for b in q.bounds_features)
        hi = tuple(b[1] for b in q.bounds_features)
        x = np.clip(x, lo, hi)
        model = LinearRegression(epsilon=q.epsilon, bounds_X=(lo, hi), bounds_y=q.bounds, random_state=rs)
        model.fit(x, np.clip(y.astype(float), *q.bounds))
    else:
        from diffprivlib.models import LogisticRegression

        norms = np.linalg.norm(x, axis=1)
        x = x * np.minimum(1.0, q.data_norm / np.where(norms > 0, norms, 1.0))[:, None]  # clip rows to data_norm
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning,
                                    message=r"scipy\.optimize: The `disp` and `iprint` options")
            model = LogisticRegression(epsilon=q.epsilon, data_norm=q.data_norm, random_state=rs).fit(x, y)
    return {"coef": [float(c) for c in np.ravel(model.coef_)], "intercept": float(np.ravel(model.intercept_)[0]),
            "features": list(q.features)}


def _crosstab(q: DpQuery, df: pd.DataFrame, rs: int | None) -> dict:
    """Persons by rows x columns with geometric noise; each person counted once (parallel composition)."""
    from diffprivlib.mechanisms import GeometricTruncated

    if "pseudonym" in df.columns:
        df = df.drop_duplicates("pseudonym")  # one row per person: the cells are disjoint
    cols = df[q.columns].astype(str) if q.columns else pd.Series("all", index=df.index)
    counts = pd.crosstab(df[q.rows].astype(str), cols)
    mech = GeometricTruncated(epsilon=q.epsilon, sensitivity=1, lower=0, upper=max(int(len(df)), 1),
                              random_state=rs)
    return {"rows": [str(r) for r in counts.index], "columns": [str(c) for c in counts.columns],
            "counts": [[int(mech.randomise(int(v))) for v in row] for row in counts.to_numpy()]}


def answer(svc: Service, actor: Actor, permit_id: str, query: DpQuery, *, data_dir: Path | None = None,
           random_state: int | None = None) -> DpAnswer:
    """Answer a DP query on the permit's delivered data, charged to its ledger before it runs, with a receipt."""
    from permits.service import permit_access
    from secure_env.workspace.areas import analysis_data

    check_can_dp(svc, actor, permit_id, "spend")
    access = permit_access(svc, permit_id)
    if not access.in_force:
        raise Invalid(f"permit {permit_id} is not in force ({access.reason}): no DP queries", code="not_in_force")
    df = _load(data_dir or analysis_data(svc, permit_id), query)  # a malformed query costs nothing
    _, entry = charge_entry(svc, actor, permit_id, query=query.canonical(), epsilon=query.epsilon)
    result = _compute(query, df, random_state)
    if isinstance(result, float) and not math.isfinite(result):
        result = None
    unsigned = DpAnswer(permit_id=permit_id, query=query, result=result, ledger_id=entry, epsilon=query.epsilon,
                        delta=0.0, at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), receipt="0" * 64)
    signed = unsigned.model_copy(update={"receipt": _sign(svc, unsigned.signed_part())})
    with svc.engine.begin() as conn:
        conn.execute(update(DpSpendRow).where(DpSpendRow.id == entry).values(receipt=signed.receipt))
    return signed


def verify(svc: Service, permit_id: str, data: bytes, conn: Connection | None = None) -> Verification:
    """Whether ``data`` (a file's bytes) is a DP answer for ``permit_id`` whose receipt verifies against the
    ledger (read in ``conn`` when the caller is in a transaction)."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return Verification(False, "not a DP answer of the service (not JSON)")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        return Verification(False, "not a DP answer of the service (no receipt)")
    try:
        ans = DpAnswer.model_validate(doc)
    except ValidationError as e:
        return Verification(False, f"a malformed DP answer: {e.errors()[0]['msg']}")
    if ans.permit_id != permit_id:
        return Verification(False, f"the receipt is for permit {ans.permit_id}, not {permit_id}")
    if not hmac.compare_digest(_sign(svc, ans.signed_part()), ans.receipt):
        return Verification(False, "the receipt does not match the answer (forged, or the result was edited)")
    if conn is None:
        with svc.engine.connect() as own:
            return verify(svc, permit_id, data, own)
    row = conn.execute(select(DpSpendRow).where(DpSpendRow.id == ans.ledger_id)).first()
    if row is None or row.permit_id != permit_id or row.receipt != ans.receipt or row.query != ans.query.canonical():
        return Verification(False, f"ledger entry {ans.ledger_id} of {permit_id} does not record this answer")
    return Verification(True, f"computed by the service; ledger entry {ans.ledger_id}, epsilon {ans.epsilon:g}",
                        ans.ledger_id, ans.epsilon)


def remaining(svc: Service, actor: Actor, permit_id: str) -> dict[str, float]:
    """The budget left, for the workspace's banner and the notebook helper."""
    b = budget(svc, actor, permit_id)
    return {"epsilon": b.epsilon, "spent_epsilon": b.spent_epsilon, "remaining_epsilon": b.remaining_epsilon}


__all__ = ["BadQuery", "DpAnswer", "DpQuery", "Verification", "answer", "remaining", "verify"]
