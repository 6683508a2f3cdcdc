"""`make bench`: run the benchmarks and write one JSON file per benchmark under bench/results/.

Environment: BENCH_ONLY (comma-separated: airlock, permits, pipeline, workspace, portal, delivery, flows, dp;
default all),
BENCH_SIZES
(comma-separated persons for the pipeline, default "200000,1000000"), BENCH_POPULATION=1 (adds the whole
population, 5,600,000 persons), BENCH_REPEATS (runs of each pipeline measurement, default 3; medians
reported), BENCH_POPULATION_REPEATS (the same at the whole population, default 1), BENCH_FHIR_MAX (largest
size the FHIR export is generated and measured at, default 1000000), BENCH_PANDAS_REPEATS (default 1),
BENCH_PANDAS_MAX (largest size the pandas reference runs at, default 1000000), BENCH_API_CLIENTS, BENCH_API_SECONDS.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bench import (
    acro_compare,
    airlock_bench,
    delivery_bench,
    dp_bench,
    flows_bench,
    permits_bench,
    pipeline_bench,
    portal_bench,
    workspace_bench,
)

RESULTS = Path(__file__).parent / "results"


def environment() -> dict:
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(__import__("psutil").virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: version(p) for p in ("toisio", "pyspark", "pandas", "pyarrow", "prefect", "diffprivlib",
                                             "jupyterlab", "jupyter_server")},
    }


def _pipeline(tmp: Path) -> dict:
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "200000,1000000").split(",")]
    return pipeline_bench.run(sizes, tmp)


def _airlock(tmp: Path) -> dict:
    return {**airlock_bench.run(tmp), "acro_comparison": acro_compare.compare(),
            "acro_comparison_other_outputs": acro_compare.compare_outputs()}


BENCHMARKS = {"airlock": _airlock, "permits": permits_bench.run, "pipeline": _pipeline,
              "workspace": workspace_bench.run, "portal": portal_bench.run, "delivery": delivery_bench.run,
              "flows": flows_bench.run, "dp": dp_bench.run}


def main() -> None:
    only = os.environ.get("BENCH_ONLY", ",".join(BENCHMARKS)).split(",")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in only:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        with tempfile.TemporaryDirectory(prefix=f"toisio-bench-{name}-") as tmp:
            report = {"benchmark": name, "when": stamp, "environment": environment(), **BENCHMARKS[name](Path(tmp))}
        path = RESULTS / f"{name}-{stamp}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        print(f"written to {path}")


if __name__ == "__main__":
    main()
