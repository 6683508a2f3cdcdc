"""``toisio_dp``: differentially private statistics from a workspace notebook, computed by the service.

In a workspace kernel this module is already imported as ``toisio_dp``.  Each function sends the query's
specification (never data) to the DP query service over ``$TOISIO_DP_SOCKET``; the service computes it on the
permit's delivered data with diffprivlib, charges the permit's budget *before* computing (a query that would
exceed it is refused), and returns an :class:`Answer` with a receipt it signed.  Save an answer with
:meth:`Answer.save` and add the file to an output request: the airlock verifies the receipt against the ledger,
and only such a file may use the DP approval policy.  Bounds are always explicit (never inferred from the data).

>>> a = toisio_dp.mean("persons", "age", epsilon=0.5, bounds=(0, 110))   # doctest: +SKIP
>>> a.result, a.epsilon                                                    # doctest: +SKIP
>>> a.save("scratch/dp_mean_age.json")                                    # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

TIMEOUT = 600.0


class DpQueryError(Exception):
    """The service refused or could not answer a query (``code`` says why)."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{message} [{code}]")
        self.code = code


class Answer:
    """A DP result with its receipt, exactly as the service signed it."""

    def __init__(self, raw: dict[str, Any]):
        self.raw = raw
        self.result = raw["result"]
        self.epsilon = raw["epsilon"]
        self.ledger_id = raw["ledger_id"]
        self.query = raw["query"]

    def save(self, path: str | Path) -> Path:
        """Write the answer (with its receipt) as JSON, for an output request."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.raw, indent=2, sort_keys=True) + "\n")
        return path

    def __repr__(self) -> str:
        return f"Answer({self.query['statistic']}: {self.result!r}, epsilon={self.epsilon:g}, ledger #{self.ledger_id})"


def _ask(request: dict[str, Any]) -> dict[str, Any]:
    where = os.environ.get("TOISIO_DP_SOCKET")
    if not where:
        raise DpQueryError("no_dp_service", "no DP query service here (TOISIO_DP_SOCKET is not set: run this in a "
                                            "workspace)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT)
        try:
            s.connect(where)
        except OSError as e:
            raise DpQueryError("no_dp_service", f"the DP query service does not answer ({e}); restart the "
                                                f"workspace") from e
        s.sendall(json.dumps(request).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    out = json.loads(reply)
    if not out.get("ok"):
        raise DpQueryError(out.get("code", "error"), out.get("message", "refused"))
    return out


def _query(statistic: str, dataset: str, epsilon: float, where: dict | None = None, **spec: Any) -> Answer:
    q = {"statistic": statistic, "dataset": dataset, "epsilon": epsilon, "where": where or {},
         **{k: v for k, v in spec.items() if v is not None}}
    return Answer(_ask({"op": "query", "query": q})["answer"])


def budget() -> dict[str, float]:
    """The permit's privacy budget: total, spent and left (epsilon)."""
    return _ask({"op": "budget"})["budget"]


def count(dataset: str, *, epsilon: float, where: dict | None = None) -> Answer:
    """Number of rows (of ``where``'s subset)."""
    return _query("count", dataset, epsilon, where)


def sum(dataset: str, column: str, *, epsilon: float, bounds: tuple[float, float], where: dict | None = None  # noqa: A001
        ) -> Answer:
    return _query("sum", dataset, epsilon, where, column=column, bounds=bounds)


def mean(dataset: str, column: str, *, epsilon: float, bounds: tuple[float, float], where: dict | None = None
         ) -> Answer:
    return _query("mean", dataset, epsilon, where, column=column, bounds=bounds)


def var(dataset: str, column: str, *, epsilon: float, bounds: tuple[float, float], where: dict | None = None
        ) -> Answer:
    return _query("var", dataset, epsilon, where, column=column, bounds=bounds)


def quantile(dataset: str, column: str, q: float, *, epsilon: float, bounds: tuple[float, float],
             where: dict | None = None) -> Answer:
    return _query("quantile", dataset, epsilon, where, column=column, bounds=bounds, q=q)


def histogram(dataset: str, column: str, *, epsilon: float, bins: int = 10, range: tuple[float, float],  # noqa: A002
              where: dict | None = None) -> Answer:
    """Counts in ``bins`` equal bins over ``range`` (diffprivlib's signature)."""
    return _query("histogram", dataset, epsilon, where, column=column, bounds=range, bins=bins)


def crosstab(dataset: str, rows: str, columns: str | None = None, *, epsilon: float, where: dict | None = None
             ) -> Answer:
    """Persons by ``rows`` x ``columns`` (each person counted once)."""
    return _query("crosstab", dataset, epsilon, where, rows=rows, columns=columns)


def linear_regression(dataset: str, target: str, features: list[str], *, epsilon: float,
                      bounds_X: list[tuple[float, float]], bounds_y: tuple[float, float],  # noqa: N803
                      where: dict | None = None) -> Answer:
    return _query("linear_regression", dataset, epsilon, where, column=target, features=list(features),
                  bounds=bounds_y, bounds_features=[list(b) for b in bounds_X])


def logistic_regression(dataset: str, target: str, features: list[str], *, epsilon: float, data_norm: float,
                        where: dict | None = None) -> Answer:
    return _query("logistic_regression", dataset, epsilon, where, column=target, features=list(features),
                  data_norm=data_norm)
