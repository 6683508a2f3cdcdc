"""The DP query service and the airlock's verification, measured:

* accuracy: ``BENCH_DP_QUERIES`` answers of a count and of a mean through the service (the receipts signed and
  the ledger charged, as in a workspace), their mean absolute error against the true value, beside the error the
  mechanism makes (diffprivlib's own function drawn 4,000 times in-process on the same data: the baseline, in the
  same run); the goal is a ratio within 10% of 1;
* latency of one query through the workspace's Unix socket (the gateway on a thread, the client as in a kernel),
  median and 95th percentile, beside the same query answered in-process (the baseline);
* time to verify an output by running its specification again, for a count table and a model, beside building the
  table in the kernel (the baseline).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tests.factories import make_case, make_service, make_staff

QUERIES = int(os.environ.get("BENCH_DP_QUERIES", "1000"))
PERSONS = int(os.environ.get("BENCH_DP_PERSONS", "20000"))


def _pcts(times: list[float]) -> dict:
    s = sorted(times)
    return {"median_ms": round(statistics.median(s) * 1000, 2), "p95_ms": round(s[int(0.95 * (len(s) - 1))] * 1000, 2),
            "n": len(s)}


def run(work: Path) -> dict:
    from secure_env.airlock import dp_service as D
    from secure_env.airlock import regression as R
    from secure_env.airlock import tables as T
    from secure_env.airlock.dp import set_budget
    from secure_env.airlock.dp_gateway import Gateway
    from secure_env.airlock.profiles import profile
    from secure_env.analyst import ACRO
    from secure_env.workspace import dp_client
    from toisio.identity import Actor

    svc = make_service(work / "home")
    staff = make_staff(svc)
    permit = make_case(svc, staff).case_id
    data = svc.settings.home / "workspaces" / permit / "data"
    (data / "persons").mkdir(parents=True)
    rng = np.random.default_rng(11)
    persons = pd.DataFrame({"pseudonym": [f"p{i}" for i in range(PERSONS)], "age": rng.integers(18, 100, PERSONS),
                            "sex": rng.choice(["1", "2"], PERSONS), "band": rng.choice(["0-39", "40-59", "60+"],
                                                                                         PERSONS)})
    persons["y"] = 0.05 * persons.age + rng.normal(0, 1, PERSONS)
    persons.to_parquet(data / "persons" / "p.parquet")
    set_budget(svc, staff["dora"], permit, 1e6, 0.0)
    bob = Actor("bob")
    eps, bounds = 0.5, (0.0, 120.0)

    def ask(stat, **kw):
        return D.answer(svc, bob, permit, D.DpQuery(statistic=stat, dataset="persons", epsilon=eps, **kw))

    count_err = [abs(ask("count").result - PERSONS) for _ in range(QUERIES)]
    mean_err = [abs(ask("mean", column="age", bounds=bounds).result - persons.age.mean()) for _ in range(QUERIES)]
    # the mechanism's expectation: diffprivlib's own functions drawn many times in-process on the same data (the
    # analytic Laplace and geometric errors are kept beside, for reference)
    from diffprivlib import tools

    draws = 4000
    ones, ages = np.ones(PERSONS), persons.age.to_numpy(dtype=float)
    mech_count = statistics.mean(abs(tools.count_nonzero(ones, epsilon=eps) - PERSONS) for _ in range(draws))
    true_mean = float(ages.mean())
    mech_mean = statistics.mean(abs(tools.mean(ages, epsilon=eps, bounds=bounds) - true_mean) for _ in range(draws))
    p = math.exp(-eps)
    accuracy = {
        "count": {"epsilon": eps, "mae_through_the_service": round(statistics.mean(count_err), 4),
                  "mechanism_mae": round(mech_count, 4), "ratio": round(statistics.mean(count_err) / mech_count, 3),
                  "analytic_two_sided_geometric_mae": round(2 * p / (1 - p * p), 4)},
        "mean": {"epsilon": eps, "bounds": bounds, "mae_through_the_service": round(statistics.mean(mean_err), 6),
                 "mechanism_mae": round(mech_mean, 6), "ratio": round(statistics.mean(mean_err) / mech_mean, 3),
                 "analytic_laplace_mae": round((bounds[1] - bounds[0]) / (PERSONS * eps), 6)},
        "queries_through_the_service": QUERIES, "mechanism_draws": draws}

    sock = work / "dp.sock"
    gw = Gateway(svc, permit, sock).start()
    os.environ["TOISIO_DP_SOCKET"] = str(sock)
    try:
        through_socket, in_process = [], []
        for _ in range(min(QUERIES, 100)):
            t = time.perf_counter()
            dp_client.count("persons", epsilon=0.01)
            through_socket.append(time.perf_counter() - t)
            t = time.perf_counter()
            ask("count")
            in_process.append(time.perf_counter() - t)
    finally:
        gw.close()
        os.environ.pop("TOISIO_DP_SOCKET", None)

    os.environ["TOISIO_DATA"] = str(data)
    acro = ACRO(suppress=True)
    df = acro.read("persons")
    t = time.perf_counter()
    acro.crosstab(df.sex, df.band, margins=True)
    build_s = time.perf_counter() - t
    acro.olsr("y ~ age + C(sex)", data=df)
    out = acro.finalise(work / "outputs")
    prof = profile("toisio-default")
    verify_table, verify_model = [], []
    for _ in range(5):
        t = time.perf_counter()
        vt = T.verify(out / "output_0.csv", T.spec_beside(out / "output_0.csv"), data, prof)
        verify_table.append(time.perf_counter() - t)
        t = time.perf_counter()
        vm = R.verify(out / "output_1.csv", T.spec_beside(out / "output_1.csv"), data, prof)
        verify_model.append(time.perf_counter() - t)
    assert vt.verified and vm.verified, (vt.reason, vm.reason)
    return {"persons": PERSONS, "accuracy_through_the_service": accuracy,
            "query_latency_through_the_socket": _pcts(through_socket), "query_latency_in_process": _pcts(in_process),
            "verify_count_table_median_s": round(statistics.median(verify_table), 3),
            "verify_model_median_s": round(statistics.median(verify_model), 3),
            "build_the_table_in_the_kernel_s": round(build_s, 3)}
