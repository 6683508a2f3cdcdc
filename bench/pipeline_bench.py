"""Pipeline benchmark: end-to-end time, rows/s, peer ratios, memory, scaling.

For each size it generates synthetic extracts with Kanta's FHIR export of the same persons (cached under
bench/data/), then measures in the same run, ``BENCH_REPEATS`` times each (default 3; reported as the median,
with the minimum, maximum and every run):

* **baseline**: Spark reads the same CSV files and writes them as Parquet, with no validation,
  minimisation or hashing;
* **pipeline**: :func:`run_extraction` with ``bench/scope-bench.yaml``;
* **checks only**: every line parsed and checked as the pipeline does, into a sink that writes
  nothing (no duplicates search, cohort, minimisation, hashing or delivery): the floor under the
  pipeline's validation;
* **DuckDB** (``bench/duckdb_reference.py``): its plain copy, its checks only, and the whole work (checks,
  quarantine, HMAC-SHA256 pseudonyms, cohort, minimisation, Parquet); its quarantine counts per registry
  and reason are compared with the pipeline's;
* **FHIR**: the Kanta export's four resource types checked (checks only) and delivered by the pipeline
  (a scope of the four), for their throughput; up to ``BENCH_FHIR_MAX`` persons (default 1,000,000: the
  export of the whole population alone would take about 25 minutes to generate);
* **pandas**: the plain pandas + hashlib reference (``bench/pandas_reference.py``), once per size
  (``BENCH_PANDAS_REPEATS``), skipped above ``BENCH_PANDAS_MAX`` persons because it needs the whole extract in
  memory.

Peak memory is sampled every 0.2 s: the driver JVM (Spark) and this Python process (DuckDB runs in it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import threading
import time
from pathlib import Path

import psutil

from catalogue.registries import CSV_REGISTRIES, FHIR_REGISTRIES, load_schema
from permits.scope import PermitScope, load_scope
from pseudonymise.keys import derive_permit_key
from pseudonymise.pipeline import read_and_validate, run_extraction
from pseudonymise.spark_session import get_spark
from pseudonymise.synthetic import generate
from toisio.config import load_settings
from toisio.keystore import master_key
from toisio.service import Service

ROOT = Path(__file__).parent
DATA = ROOT / "data"
POPULATION = 5_600_000
FHIR_MAX = 1_000_000  # BENCH_FHIR_MAX's default
log = logging.getLogger(__name__)


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


def _extracts(persons: int, fhir: bool) -> tuple[Path, dict]:
    target = DATA / f"persons-{persons}"
    summary_file = target / "synth_summary.json"
    if summary_file.exists() and (not fhir or (target / "kanta" / "manifest.json").exists()):
        return target, {"cached": True, **json.loads(summary_file.read_text())}
    start = time.perf_counter()
    generate(target, persons=persons, seed=2026, defect_rate=0.001, fhir=fhir)
    return target, {"cached": False, "seconds": round(time.perf_counter() - start, 1),
                    **json.loads(summary_file.read_text())}


def _baseline(spark, in_dir: Path, out: Path) -> float:
    start = time.perf_counter()
    for registry in CSV_REGISTRIES:
        schema = load_schema(registry)
        df = spark.read.option("header", True).option("sep", schema.delimiter).csv(str(in_dir / schema.file))
        df.write.mode("overwrite").parquet(str(out / registry))
    return time.perf_counter() - start


def _checks_only(spark, in_dir: Path, scope, registries=CSV_REGISTRIES) -> float:
    """Parse and check every line of every extract, writing nothing: the floor under validation."""
    start = time.perf_counter()
    for registry in registries:
        _lines, checked = read_and_validate(spark, load_schema(registry), in_dir,
                                             allow_temporary=scope.allow_temporary_ids)
        checked.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - start


def _stats(values: list[float]) -> dict:
    """Median with the spread of repeated runs."""
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "runs": [round(v, 2) for v in values]}


def _fhir_scope(scope: PermitScope) -> PermitScope:
    """The four Kanta datasets, every variable, no cohort: the FHIR adapter's throughput through the pipeline."""
    return PermitScope.model_validate({
        "permit_id": scope.permit_id, "delivery": "pseudonymised", "generalise": {"dates": "month"},
        "registries": {r: {"variables": [c.name for c in load_schema(r).columns[1:]]} for r in FHIR_REGISTRIES}})


def _quarantine_agrees(pipeline_counts, duck_counts: dict[str, dict[str, int]]) -> dict:
    differences = {}
    for registry, counts in duck_counts.items():
        ours = dict(pipeline_counts[registry].quarantined)
        if ours != counts:
            differences[registry] = {"pipeline": ours, "duckdb": counts}
    return {"identical": not differences, "registries_compared": sorted(duck_counts), "differences": differences}


def bench_size(persons: int, work: Path, pandas_max: int, repeats: int, pandas_repeats: int,
               fhir_max: int = FHIR_MAX) -> dict:
    from bench import duckdb_reference as duck

    with_fhir = persons <= fhir_max
    in_dir, synth = _extracts(persons, with_fhir)
    csv_rows = sum(n for r, n in synth["rows"].items() if r in CSV_REGISTRIES)
    fhir_rows = sum(n for r, n in synth["rows"].items() if r in FHIR_REGISTRIES)
    settings = load_settings(home=work / "home")
    svc = Service(settings)
    spark = get_spark(settings)
    scope = load_scope(ROOT / "scope-bench.yaml")
    key = derive_permit_key(master_key(settings.keys), scope.permit_id, scope.key_version)
    threads = os.cpu_count() or 2
    times: dict[str, list[float]] = {k: [] for k in ("baseline", "checks_only", "pipeline", "duckdb_copy",
                                                      "duckdb_checks_only", "duckdb", "fhir_checks_only",
                                                      "fhir_pipeline")}
    peaks = {"jvm": 0, "python": 0, "duckdb_python": 0}
    extraction = duck_result = None
    for i in range(repeats):
        times["baseline"].append(_baseline(spark, in_dir, work / "baseline"))
        times["checks_only"].append(_checks_only(spark, in_dir, scope))
        shutil.rmtree(work / "delivery", ignore_errors=True)
        with PeakMemory() as mem:
            start = time.perf_counter()
            extraction = run_extraction(scope, in_dir, work / "delivery", svc, spark=spark, actor="bench")
            times["pipeline"].append(time.perf_counter() - start)
        peaks["jvm"], peaks["python"] = max(peaks["jvm"], mem.jvm), max(peaks["python"], mem.python)
        times["duckdb_copy"].append(duck.copy_only(in_dir, work / "duck-copy", list(CSV_REGISTRIES),
                                                   threads=threads, temp=work / "duck-tmp"))
        seconds, _counts = duck.checks_only(in_dir, list(CSV_REGISTRIES), allow_temporary=scope.allow_temporary_ids,
                                            threads=threads, temp=work / "duck-tmp")
        times["duckdb_checks_only"].append(seconds)
        shutil.rmtree(work / "duck", ignore_errors=True)
        with PeakMemory() as dmem:
            start = time.perf_counter()
            duck_result = duck.run(scope, in_dir, work / "duck", key.secret.value, threads=threads,
                                   temp=work / "duck-tmp")
            times["duckdb"].append(time.perf_counter() - start)
        peaks["duckdb_python"] = max(peaks["duckdb_python"], dmem.python)
        if with_fhir:
            times["fhir_checks_only"].append(_checks_only(spark, in_dir, scope, FHIR_REGISTRIES))
            shutil.rmtree(work / "fhir-delivery", ignore_errors=True)
            start = time.perf_counter()
            run_extraction(_fhir_scope(scope), in_dir, work / "fhir-delivery", svc, spark=spark, actor="bench")
            times["fhir_pipeline"].append(time.perf_counter() - start)
        log.info("size %s: repeat %s of %s done", persons, i + 1, repeats)
    times = {k: v for k, v in times.items() if v}
    med = {k: statistics.median(v) for k, v in times.items()}
    result: dict = {
        "persons": persons, "rows_in": csv_rows, "fhir_resources_in": fhir_rows, "synth": synth,
        "repeats": repeats, "seconds": {k: _stats(v) for k, v in times.items()},
        "pipeline_rows_per_second": round(csv_rows / med["pipeline"]),
        "pipeline_microseconds_per_row": round(1e6 * med["pipeline"] / csv_rows, 3),
        "ratios": {
            "pipeline_vs_spark_copy": round(med["baseline"] / med["pipeline"], 3),
            "pipeline_vs_duckdb": round(med["pipeline"] / med["duckdb"], 2),
            "checks_vs_duckdb_checks": round(med["checks_only"] / med["duckdb_checks_only"], 2),
            "spark_copy_vs_duckdb_copy": round(med["baseline"] / med["duckdb_copy"], 2),
            "note": "pipeline_vs_spark_copy: higher is better (goal >= 0.4); pipeline_vs_duckdb and the other "
                    "two: times slower than DuckDB (goal for the pipeline <= 2)",
        },
        "duckdb_quarantine_agreement": _quarantine_agrees(extraction.manifest.counts, duck_result["quarantined"]),
        "duckdb_delivered_rows": duck_result["delivered"],
        "fhir": {"resources_per_second_checks_only": round(fhir_rows / med["fhir_checks_only"]),
                 "resources_per_second_pipeline": round(fhir_rows / med["fhir_pipeline"]),
                 "csv_rows_per_second_checks_only": round(csv_rows / med["checks_only"])} if with_fhir
        else {"skipped": f"above BENCH_FHIR_MAX={fhir_max} persons"},
        "peak_rss_driver_jvm_mb": round(peaks["jvm"] / 2**20),
        "peak_rss_python_mb": round(peaks["python"] / 2**20),
        "peak_rss_duckdb_process_mb": round(peaks["duckdb_python"] / 2**20),
        "delivered_rows": {k: v.rows for k, v in extraction.manifest.datasets.items()},
        "quarantined_rows": sum(c.quarantined_total for c in extraction.manifest.counts.values()),
        "pipeline_phase_seconds": extraction.seconds,
    }
    if persons <= pandas_max:
        from bench.pandas_reference import run as pandas_run

        pandas_times = []
        pandas_peak = 0
        for _ in range(pandas_repeats):
            with PeakMemory() as pmem:
                start = time.perf_counter()
                pandas_run(scope, in_dir, work / "pandas", key.secret.value)
                pandas_times.append(time.perf_counter() - start)
            pandas_peak = max(pandas_peak, pmem.python)
        result["seconds"]["pandas"] = _stats(pandas_times)
        result["ratios"]["speedup_vs_pandas"] = round(statistics.median(pandas_times) / med["pipeline"], 2)
        result["pandas_peak_rss_mb"] = round(pandas_peak / 2**20)
    else:
        result["pandas_skipped"] = f"above BENCH_PANDAS_MAX={pandas_max} persons"
    shutil.rmtree(work, ignore_errors=True)
    return result


def run(sizes: list[int], work_root: Path) -> dict:
    """Benchmark every size and the scaling of time per row between the smallest and the largest."""
    pandas_max = int(os.environ.get("BENCH_PANDAS_MAX", "1000000"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    pandas_repeats = int(os.environ.get("BENCH_PANDAS_REPEATS", "1"))
    population_repeats = int(os.environ.get("BENCH_POPULATION_REPEATS", "1"))
    fhir_max = int(os.environ.get("BENCH_FHIR_MAX", str(FHIR_MAX)))
    if os.environ.get("BENCH_POPULATION") == "1" and POPULATION not in sizes:
        sizes = [*sizes, POPULATION]
    results = [bench_size(n, work_root / f"run-{n}", pandas_max,
                          population_repeats if n >= POPULATION else repeats, pandas_repeats, fhir_max)
               for n in sizes]
    out: dict = {"sizes": results}
    if len(results) >= 2:
        a, b = results[0], results[-1]
        out["scaling"] = {
            "persons_ratio": round(b["persons"] / a["persons"], 2),
            "time_ratio": round(b["seconds"]["pipeline"]["median"] / a["seconds"]["pipeline"]["median"], 2),
            "time_per_row_ratio": round(b["pipeline_microseconds_per_row"] / a["pipeline_microseconds_per_row"], 3),
            "note": "near constant time per row if time_per_row_ratio is close to 1",
        }
    return out
