"""`make bench`: run the benchmarks and write JSON under bench/results/.

Environment: BENCH_SIZES (comma-separated persons, default "200000,1000000"),
BENCH_PANDAS_MAX (largest size the pandas reference runs at, default 1000000).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from bench import pipeline_bench

RESULTS = Path(__file__).parent / "results"


def environment() -> dict:
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(__import__("psutil").virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: version(p) for p in ("toisio", "pyspark", "pandas", "pyarrow", "prefect", "diffprivlib")},
    }


def main() -> None:
    sizes = [int(s) for s in os.environ.get("BENCH_SIZES", "200000,1000000").split(",")]
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="toisio-bench-") as tmp:
        report = {"benchmark": "pipeline", "when": stamp, "environment": environment(),
                  **pipeline_bench.run(sizes, Path(tmp))}
    path = RESULTS / f"pipeline-{stamp}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
