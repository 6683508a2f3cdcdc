"""From the decider's approval to an active permit with a ready workspace, done by the service
(:func:`flows.delivery.deliver`), for the demo's 20,000-person extract (``BENCH_DELIVERY_PERSONS``).

Measured in the same run: the pipeline alone on the same scope and extracts (the baseline), so the JSON shows
what the rest costs (recording the delivery, the workspace's read-only copy, activation).  ``BENCH_REPEATS``
(default 3) runs of each, on fresh permits; medians and the spread are reported.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from tests.factories import make_case, make_service, make_staff

PERSONS = int(os.environ.get("BENCH_DELIVERY_PERSONS", "20000"))
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))


def _summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 2), "min_s": round(min(times), 2),
            "max_s": round(max(times), 2), "runs": [round(t, 2) for t in times]}


def run(work: Path) -> dict:
    from flows.delivery import deliver
    from permits.service import frozen_scope
    from pseudonymise.pipeline import run_extraction
    from pseudonymise.spark_session import get_spark
    from pseudonymise.synthetic import generate
    from toisio.config import load_settings

    extracts = work / "extracts"
    generate(extracts, persons=PERSONS, seed=7, defect_rate=0.002)
    svc = make_service(work / "home", extracts_dir=extracts)
    staff = make_staff(svc)
    spark = get_spark(load_settings(home=work / "home"))
    deliver_times, pipeline_times, steps = [], [], []
    warm = make_case(svc, staff, state="accepted").case_id  # the JVM's first run (not counted)
    t = time.perf_counter()
    run_extraction(frozen_scope(svc, warm), extracts, work / "warm-up", svc, actor="bench", spark=spark)
    warm_up = time.perf_counter() - t
    for i in range(REPEATS):
        baseline = make_case(svc, staff, state="accepted").case_id  # a frozen scope, never delivered
        permit = make_case(svc, staff, state="approved").case_id
        t = time.perf_counter()
        run_extraction(frozen_scope(svc, baseline), extracts, work / f"baseline-{i}", svc, actor="bench", spark=spark)
        pipeline_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        report = deliver(svc, permit, spark=spark)
        deliver_times.append(time.perf_counter() - t)
        steps.append(report.steps)
        assert report.state == "active", report
    d, p = _summary(deliver_times), _summary(pipeline_times)
    return {"persons": PERSONS, "repeats": REPEATS, "warm_up_pipeline_not_counted_s": round(warm_up, 2),
            "approval_to_active_with_workspace": d,
            "pipeline_alone": p, "overhead_median_s": round(d["median_s"] - p["median_s"], 2),
            "steps_of_last_run": steps[-1]}
