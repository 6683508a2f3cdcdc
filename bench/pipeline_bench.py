"""Pipeline benchmark: end-to-end time, rows/s, baseline ratios, memory, scaling.

For each size it generates synthetic extracts (cached under bench/data/), then measures in the
same run:

* **baseline**: Spark reads the same CSV files and writes them as Parquet, with no validation,
  minimisation or hashing;
* **pipeline**: :func:`run_extraction` with ``bench/scope-bench.yaml``;
* **checks only**: every line parsed and checked as the pipeline does, into a sink that writes
  nothing (no duplicates search, cohort, minimisation, hashing or delivery): the floor under the
  pipeline's validation;
* **pandas**: the plain pandas + hashlib reference (``bench/pandas_reference.py``), skipped above
  ``BENCH_PANDAS_MAX`` persons because it needs the whole extract in memory.

Peak memory is sampled every 0.2 s: the driver JVM (Spark) and this Python process.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import psutil

from catalogue.registries import REGISTRIES, load_schema
from permits.scope import load_scope
from pseudonymise.keys import derive_permit_key
from pseudonymise.pipeline import run_extraction
from pseudonymise.spark_session import get_spark
from pseudonymise.synthetic import generate
from pseudonymise.validate import parse_and_validate, read_lines
from toisio.config import load_settings
from toisio.keystore import master_key
from toisio.service import Service

ROOT = Path(__file__).parent
DATA = ROOT / "data"


class PeakMemory:
    """Samples the RSS of this process and of its Java children."""

    def __init__(self) -> None:
        self.python = 0
        self.jvm = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            self.python = max(self.python, me.memory_info().rss)
            jvm = 0
            for child in me.children(recursive=True):
                try:
                    if "java" in child.name():
                        jvm += child.memory_info().rss
                except psutil.Error:
                    pass
            self.jvm = max(self.jvm, jvm)
            time.sleep(0.2)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _extracts(persons: int) -> tuple[Path, dict]:
    target = DATA / f"persons-{persons}"
    summary_file = target / "synth_summary.json"
    if summary_file.exists():
        return target, {"cached": True, **json.loads(summary_file.read_text())}
    start = time.perf_counter()
    generate(target, persons=persons, seed=2026, defect_rate=0.001)
    return target, {"cached": False, "seconds": round(time.perf_counter() - start, 1),
                    **json.loads(summary_file.read_text())}


def _baseline(spark, in_dir: Path, out: Path) -> float:
    start = time.perf_counter()
    for registry in REGISTRIES:
        schema = load_schema(registry)
        df = spark.read.option("header", True).option("sep", schema.delimiter).csv(str(in_dir / schema.file))
        df.write.mode("overwrite").parquet(str(out / registry))
    return time.perf_counter() - start


def _checks_only(spark, in_dir: Path, scope) -> float:
    """Parse and check every line of every extract, writing nothing: the floor under validation."""
    start = time.perf_counter()
    for registry in REGISTRIES:
        schema = load_schema(registry)
        lines = read_lines(spark, str(in_dir / schema.file), schema)
        checked = parse_and_validate(lines, schema, allow_temporary=scope.allow_temporary_ids)
        checked.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def bench_size(persons: int, work: Path, pandas_max: int) -> dict:
    in_dir, synth = _extracts(persons)
    rows_in = sum(synth["rows"].values())
    settings = load_settings(home=work / "home")
    svc = Service(settings)
    spark = get_spark(settings)
    scope = load_scope(ROOT / "scope-bench.yaml")
    result: dict = {"persons": persons, "rows_in": rows_in, "synth": synth}
    baseline = _baseline(spark, in_dir, work / "baseline")
    checks_only = _checks_only(spark, in_dir, scope)
    with PeakMemory() as mem:
        start = time.perf_counter()
        extraction = run_extraction(scope, in_dir, work / "delivery", svc, spark=spark, actor="bench")
        pipeline = time.perf_counter() - start
    result.update({
        "baseline_seconds": round(baseline, 2),
        "pipeline_seconds": round(pipeline, 2),
        "pipeline_rows_per_second": round(rows_in / pipeline),
        "ratio_to_baseline": round(baseline / pipeline, 3),
        "checks_only_seconds": round(checks_only, 2),
        "checks_only_ratio_to_baseline": round(baseline / checks_only, 3),
        "peak_rss_driver_jvm_mb": round(mem.jvm / 2**20),
        "peak_rss_python_mb": round(mem.python / 2**20),
        "delivered_rows": {k: v.rows for k, v in extraction.manifest.datasets.items()},
        "quarantined_rows": sum(c.quarantined_total for c in extraction.manifest.counts.values()),
        "pipeline_phase_seconds": extraction.seconds,
    })
    if persons <= pandas_max:
        from bench.pandas_reference import run as pandas_run

        key = derive_permit_key(master_key(settings.keys), scope.permit_id, scope.key_version)
        with PeakMemory() as pmem:
            start = time.perf_counter()
            pandas_run(scope, in_dir, work / "pandas", key.secret.value)
            pandas_seconds = time.perf_counter() - start
        result.update({
            "pandas_seconds": round(pandas_seconds, 2),
            "speedup_vs_pandas": round(pandas_seconds / pipeline, 2),
            "pandas_peak_rss_mb": round(pmem.python / 2**20),
        })
    else:
        result["pandas_seconds"] = None
        result["pandas_skipped"] = f"above BENCH_PANDAS_MAX={pandas_max} persons"
    shutil.rmtree(work, ignore_errors=True)
    return result


def run(sizes: list[int], work_root: Path) -> dict:
    """Benchmark every size and add the 200k -> 1M scaling figure."""
    pandas_max = int(os.environ.get("BENCH_PANDAS_MAX", "1000000"))
    results = [bench_size(n, work_root / f"run-{n}", pandas_max) for n in sizes]
    out = {"sizes": results}
    if len(results) >= 2:
        a, b = results[0], results[-1]
        out["scaling"] = {
            "persons_ratio": b["persons"] / a["persons"],
            "time_ratio": round(b["pipeline_seconds"] / a["pipeline_seconds"], 2),
            "note": "near linear if time_ratio is close to persons_ratio",
        }
    return out
