"""The extraction pipeline: registry extracts in, a pseudonymised linked dataset out.

``run_extraction`` validates every row of every registry the scope needs
(quarantining rejected rows with their reason), selects the cohort, minimises
each registry to the scope's variables and periods, pseudonymises the identity
codes of what leaves with the permit's key, generalises, and delivers Parquet
datasets plus a manifest atomically.  The cohort's sources are validated first;
every other delivered registry is validated after the cohort is drawn, and the
same pass splits its valid rows into delivered and excluded ones.  Inside the run a person is keyed by the
normalised identity code; only the delivered rows (and the persons who can enter
the cohort, whose pseudonyms order the control draw) are hashed.  Every row read
is accounted for in the manifest:
``rows_in = quarantined + excluded_outside_period + excluded_not_in_cohort + delivered``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from sqlalchemy import select

from catalogue.registries import RegistrySchema, load_schema
from permits.scope import PermitScope
from pseudonymise import deliver, fhir
from pseudonymise.cohort import match_controls, one_row_per_person, select_cases
from pseudonymise.files import ExtractFileError, check_extract
from pseudonymise.generalise import age_band, coarsen_dates, municipality_to_wellbeing_county
from pseudonymise.keys import derive_permit_key
from pseudonymise.manifest import Manifest
from pseudonymise.pseudonym import PSEUDONYM_HEX_CHARS, key_frame, with_pseudonym
from pseudonymise.runs import finish_run, start_run
from pseudonymise.spark_session import apply_pipeline_conf, get_spark
from pseudonymise.validate import (
    REASONS,
    mark_duplicates,
    parse_and_validate,
    read_lines,
    validate_fields,
    with_repeated_flag,
)
from toisio import audit
from toisio.errors import ToisioError
from toisio.keystore import master_key
from toisio.service import Service

log = logging.getLogger(__name__)
PERSONS = "persons"
# Work files live for one run: dictionary encoding (tried per column, then mostly abandoned for
# identity codes and amounts) cost about a tenth of the validation pass and saved only disk space.
WORK_FILE_OPTIONS = {"parquet.enable.dictionary": "false"}
# Work parts: rejected rows, rows of repeated lines (resolved after the pass), and valid rows -
# ``valid`` or, for a registry flagged at validation, deliver / outside_period / not_in_cohort.
REJECTED, REPEATED, VALID = "rejected", "repeated", "valid"
DELIVER, OUTSIDE_PERIOD, NOT_IN_COHORT = "deliver", "outside_period", "not_in_cohort"


class ExtractionError(ToisioError, RuntimeError):
    """The extraction cannot run (missing input, bad scope, failed write)."""


@dataclass(frozen=True)
class ExtractionResult:
    """Where the delivery went and what its manifest says."""

    run_id: str
    output_dir: Path
    manifest: Manifest
    manifest_sha256: str
    quarantine_dir: Path
    seconds: dict[str, float]  # wall time per phase (not in the manifest, which must not vary)


def registries_needed(scope: PermitScope) -> list[str]:
    """Registries the pipeline must read for ``scope`` (delivered ones, cohort source, population)."""
    needed = set(scope.registries)
    if scope.cohort is not None:
        needed.add(scope.cohort.registry)
        if scope.cohort.controls_per_case > 0:
            needed.add("population")
    return sorted(needed)


def _internal_columns(registry: str, scope: PermitScope) -> list[str]:
    """Columns kept after validation: scope variables plus what cohort selection needs."""
    schema = load_schema(registry)
    keep = set(scope.registries[registry].variables) if registry in scope.registries else set()
    if schema.event_date:
        keep.add(schema.event_date)
    if scope.cohort and scope.cohort.registry == registry:
        keep.update(scope.cohort.code_columns)
    if registry == "population":
        keep.update({"birth_date", "sex"})
    return [c for c in schema.names if c in keep]


def flagged_at_validation(registry: str, scope: PermitScope) -> bool:
    """True if ``registry``'s delivery flags (period, cohort) can be set while it is validated.

    That is every delivered registry except the population (delivered as the person table) and the
    registry the cohort is drawn from, which must be validated before the cohort exists.
    """
    return (registry in scope.registries and registry != "population"
            and (scope.cohort is None or registry != scope.cohort.registry))


def _in_period(registry: str, scope: PermitScope) -> Column:
    """True where a row's event date is inside the scope's period for ``registry`` (false if null)."""
    period = scope.registries[registry].period
    if period is None:
        return F.lit(True)
    d = F.col(load_schema(registry).event_date)
    return F.coalesce((d >= F.lit(period.start)) & (d <= F.lit(period.end)), F.lit(False))


def _cohort_flags(members: DataFrame, *extra: str) -> DataFrame:
    """One row per cohort member: ``hetu``, the ``extra`` columns and ``_in_cohort`` (true), to left-join on."""
    return members.select("hetu", *extra).distinct().withColumn("_in_cohort", F.lit(True))


def _valid_part(registry: str, scope: PermitScope, flagged: bool, members: DataFrame | None) -> Column:
    """Which work part a valid row goes to: ``valid``, or for a flagged registry ``deliver``,
    ``outside_period`` or ``not_in_cohort`` (reads ``_in_cohort`` when there is a cohort)."""
    if not flagged:
        return F.lit(VALID)
    in_cohort = F.coalesce(F.col("_in_cohort"), F.lit(False)) if members is not None else F.lit(True)
    return (F.when(~_in_period(registry, scope), F.lit(OUTSIDE_PERIOD))
            .when(~in_cohort, F.lit(NOT_IN_COHORT)).otherwise(F.lit(DELIVER)))


def _validate_to_work(spark: SparkSession, scope: PermitScope, registry: str, in_dir: Path, work: Path, *,
                      flagged: bool = False, members: DataFrame | None = None) -> Path:
    """Parse and validate in one pass; write valid, rejected and repeated rows apart.

    Candidate duplicate lines are found first from a 64-bit hash of each raw line (a narrow sort of
    the keys); only the rows of repeated keys are then grouped by the line itself
    (:func:`_resolve_duplicates`), never the whole extract.

    With ``flagged`` (see :func:`flagged_at_validation`) valid rows are split at once into those to
    deliver and those outside the period or the cohort (``members``); of the excluded rows only the
    identity code is written, so most of a large registry is counted but never written in full.
    """
    schema = load_schema(registry)
    lines, checked = read_and_validate(spark, schema, in_dir, allow_temporary=scope.allow_temporary_ids)
    checked = with_repeated_flag(checked, lines)
    if flagged and members is not None:
        checked = checked.join(F.broadcast(_cohort_flags(members)), "hetu", "left")
    checked = checked.withColumn("_vpart", _valid_part(registry, scope, flagged, members))
    valid = F.col("_reason").isNull()
    repeated = valid & F.coalesce(F.col("_repeated"), F.lit(False))
    part = F.when(~valid, F.lit(REJECTED)).when(repeated, F.lit(REPEATED)).otherwise(F.col("_vpart"))
    keep = _internal_columns(registry, scope)
    raw_kept = ~valid | repeated
    full_row = raw_kept | F.col("_vpart").isin(VALID, DELIVER)
    out = checked.select(
        "hetu",
        *[F.when(full_row, F.col(c)).alias(c) for c in keep],
        "_reason", "_detail",
        F.when(raw_kept, F.col("_line")).alias("_line"),
        F.when(raw_kept, F.col("_file")).alias("_file"),
        F.when(repeated, F.col("_vpart")).alias("_vpart"),
        part.alias("_part"),
    )
    target = work / registry
    out.write.mode("overwrite").options(**WORK_FILE_OPTIONS).partitionBy("_part").parquet(str(target))
    if not any(target.glob("_part=*")):  # no rows at all: keep the columns, so that empty reads have a schema
        out.drop("_part").limit(0).write.mode("overwrite").parquet(str(_empty_dir(target)))
    _resolve_duplicates(spark, target)
    return target


def read_and_validate(spark: SparkSession, schema: RegistrySchema, in_dir: Path, *,
                       allow_temporary: bool) -> tuple[DataFrame, DataFrame]:
    """The raw lines of ``schema``'s extract (``_line``) and their verdicts (:func:`parse_and_validate`), for a CSV
    extract or a FHIR bulk export (:mod:`pseudonymise.fhir`); a file that cannot be read is refused first."""
    source = in_dir / schema.file
    registry = schema.registry
    if not source.exists():
        what = "FHIR bulk export" if schema.format == "fhir_ndjson" else "extract file"
        raise ExtractionError(f"registry {registry!r}: {what} {source} is missing")
    try:
        if schema.format == "fhir_ndjson":
            files, patient_files = fhir.linked_files(source, schema.resource)
            patients = None if schema.resource == "Patient" else fhir.patient_identity_codes(spark, patient_files)
        else:
            check_extract(source, schema)
    except ExtractFileError as exc:
        raise ExtractionError(f"registry {registry!r}: {exc}") from None
    if schema.format == "fhir_ndjson":
        parsed = fhir.read_resources(spark, files, schema, patients)
        lines = spark.read.text([str(f) for f in files]).select(F.col("value").alias("_line"))
        return lines, validate_fields(parsed, schema, fhir.structural_checks(schema), allow_temporary=allow_temporary)
    lines = read_lines(spark, str(source), schema)
    return lines, parse_and_validate(lines, schema, allow_temporary=allow_temporary)


def _empty_dir(dataset: Path) -> Path:
    return dataset.with_name(dataset.name + ".empty")


def _resolve_duplicates(spark: SparkSession, dataset: Path) -> None:
    """Keep one row of each repeated line (in the part it would have gone to) and mark the other
    copies ``duplicate`` (rejected)."""
    src = dataset / f"_part={REPEATED}"
    if not src.exists():
        return
    marked = mark_duplicates(spark.read.parquet(str(src)))
    rejected = F.col("_reason").isNotNull()
    marked.select(
        *[c for c in marked.columns if c not in ("_line", "_file")],
        F.when(rejected, F.col("_line")).alias("_line"),
        F.when(rejected, F.col("_file")).alias("_file"),
        F.when(rejected, F.lit(REJECTED)).otherwise(F.col("_vpart")).alias("_part"),
    ).write.mode("overwrite").partitionBy("_part").parquet(str(_dedup_dir(dataset)))


def _dedup_dir(dataset: Path) -> Path:
    return dataset.with_name(dataset.name + ".dedup")


def _parts(dataset: Path, kind: str) -> list[str]:
    paths = [dataset / f"_part={kind}", _dedup_dir(dataset) / f"_part={kind}"]
    return [str(p) for p in paths if p.exists()]


def _read_part(spark: SparkSession, dataset: Path, *kinds: str) -> DataFrame:
    """The rows of the given work parts (main pass and resolved duplicates), without ``_part``."""
    frames = [spark.read.parquet(p) for kind in kinds for p in _parts(dataset, kind)]
    if not frames:
        if _empty_dir(dataset).exists():
            return spark.read.parquet(str(_empty_dir(dataset)))
        return spark.read.parquet(str(dataset)).drop("_part").limit(0)
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f, allowMissingColumns=True)
    return out


def _valid_kinds(flagged: bool) -> tuple[str, ...]:
    return (DELIVER, OUTSIDE_PERIOD, NOT_IN_COHORT) if flagged else (VALID,)


def _read_valid(spark: SparkSession, work_dataset: Path, *kinds: str) -> DataFrame:
    return _read_part(spark, work_dataset, *kinds).drop("_reason", "_detail", "_line", "_file", "_vpart")


EXCLUSIONS = ("excluded_outside_period", "excluded_not_in_cohort", "excluded_duplicate_person",
              "excluded_not_in_scope")


def _check_accounting(registry: str, c: dict[str, Any]) -> None:
    """Every row read must be quarantined, excluded for a named reason, or delivered."""
    for k in EXCLUSIONS:
        c.setdefault(k, 0)
    total = c["quarantined_total"] + sum(c[k] for k in EXCLUSIONS) + c["delivered"]
    if total != c["rows_in"]:
        raise ExtractionError(f"registry {registry!r}: {c['rows_in']} rows read but {total} accounted for")


def _account_population(c: dict[str, Any], scope: PermitScope, valid_pop: DataFrame, persons: DataFrame) -> None:
    distinct = valid_pop.select("hetu").distinct()
    n_distinct = distinct.count()
    c["excluded_duplicate_person"] = c["valid"] - n_distinct
    if "population" in scope.registries:
        delivered = persons.select("hetu").join(distinct, "hetu", "inner").count()
        c.update(delivered=delivered, excluded_not_in_cohort=n_distinct - delivered)


def _validation_counts(spark: SparkSession, work_dataset: Path, flagged: bool) -> dict[str, Any]:
    per_part = {k: _read_part(spark, work_dataset, k).count() for k in _valid_kinds(flagged)}
    valid = sum(per_part.values())
    rows = _read_part(spark, work_dataset, REJECTED).groupBy("_reason").count().collect()
    quarantined = {r["_reason"]: r["count"] for r in rows}
    unknown = set(quarantined) - set(REASONS)
    if unknown:  # pragma: no cover - guards the reason table
        raise ExtractionError(f"unlisted quarantine reasons {unknown}")
    counts = {
        "rows_in": valid + sum(quarantined.values()),
        "valid": valid,
        "quarantined": dict(sorted(quarantined.items())),
        "quarantined_total": sum(quarantined.values()),
    }
    if flagged:
        counts.update(excluded_outside_period=per_part[OUTSIDE_PERIOD],
                      excluded_not_in_cohort=per_part[NOT_IN_COHORT], delivered=per_part[DELIVER])
    return counts


def _file_entries(files: list[Path], root: Path) -> list[dict[str, Any]]:
    return [
        {"path": str(f.relative_to(root)), "sha256": deliver.sha256_file(f), "bytes": f.stat().st_size,
         "rows": pq.read_metadata(f).num_rows}
        for f in files
    ]


def _schema_of(df: DataFrame) -> list[dict[str, str]]:
    return [{"name": f.name, "type": f.dataType.simpleString()} for f in df.schema.fields]


def _deliver_registry(registry: str, scope: PermitScope, rows: DataFrame, members: DataFrame | None,
                      keydf: DataFrame, staging: Path, counts: dict[str, Any], *, precounted: bool) -> dict[str, Any]:
    """Minimise, pseudonymise, generalise and write one registry.

    ``rows`` are the registry's valid rows; with ``precounted`` (flagged at validation) only those to
    deliver, and ``counts`` already holds the exclusions and the delivered count.
    """
    reg_scope = scope.registries[registry]
    df = rows.withColumn("_in_period", _in_period(registry, scope))
    if members is not None:
        df = df.join(F.broadcast(_cohort_flags(members, "pseudonym")), "hetu", "left").withColumn(
            "_in_cohort", F.coalesce(F.col("_in_cohort"), F.lit(False)))
    else:
        df = df.withColumn("_in_cohort", F.lit(True))
    if not precounted:
        buckets = {(r["_in_period"], r["_in_cohort"]): r["count"]
                   for r in df.groupBy("_in_period", "_in_cohort").count().collect()}
        counts["excluded_outside_period"] = sum(v for (p, _), v in buckets.items() if not p)
        counts["excluded_not_in_cohort"] = sum(v for (p, c), v in buckets.items() if p and not c)
        counts["delivered"] = buckets.get((True, True), 0)
    delivered = counts["delivered"]
    out = df.where(F.col("_in_period") & F.col("_in_cohort"))
    if members is None:
        out = with_pseudonym(out, keydf)
    out = out.select("pseudonym", *reg_scope.variables)
    schema = load_schema(registry)
    for c in reg_scope.variables:  # references between delivered datasets: keyed like the identity code
        if schema.column(c).type == "reference":
            out = with_pseudonym(out, keydf, hetu_col=c, out_col=c)
    out = coarsen_dates(out, scope.generalise)
    files = _file_entries(deliver.write_dataset(out, staging / registry, delivered), staging)
    written = sum(f["rows"] for f in files)
    if written != delivered:
        raise ExtractionError(f"registry {registry!r}: {delivered} rows to deliver but {written} written")
    return {"rows": delivered, "schema": _schema_of(out), "files": files}


def _person_table(scope: PermitScope, valid: dict[str, DataFrame], members: DataFrame | None,
                  keydf: DataFrame) -> DataFrame:
    """One row per delivered person: ``hetu`` (dropped before delivery), pseudonym, cohort role and
    the population variables in scope."""
    if members is not None:
        persons = members
    else:
        if "population" in scope.registries:
            persons = valid["population"].select("hetu").distinct()
        else:
            frames = [valid[r].select("hetu") for r in scope.registries]
            persons = frames[0]
            for f in frames[1:]:
                persons = persons.unionByName(f)
            persons = persons.distinct()
        persons = with_pseudonym(persons, keydf)
    if "population" not in scope.registries:
        return coarsen_dates(persons, scope.generalise)
    variables = list(scope.registries["population"].variables)
    pop = one_row_per_person(valid["population"])
    extra = ["birth_date"] if scope.generalise.age_bands and "birth_date" not in variables else []
    df = persons.join(pop.select("hetu", *variables, *extra), "hetu", "left")
    if scope.generalise.age_bands:
        at = F.col("index_date") if members is not None else F.lit(scope.generalise.age_reference_date)
        df = df.withColumn("age_band", age_band(F.col("birth_date"), at, scope.generalise.age_bands))
        df = df.drop(*extra)
    if scope.generalise.municipality == "wellbeing_county" and "municipality" in variables:
        df = municipality_to_wellbeing_county(df)
    return coarsen_dates(df, scope.generalise)


def _release(cached: list[DataFrame]) -> None:
    for df in cached:
        df.unpersist()


RUN_FILE = "run.json"
STALE_WITHOUT_WORK_SECONDS = 600


def _process_start(pid: int) -> str | None:
    """The start time (clock ticks since boot) of a live process, or None: with the pid it names one process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _private_work_dir(svc: Service, run_id: str) -> Path:
    """The run's work directory (mode 700 under a 700 parent), claimed by this process in ``run.json``."""
    root = svc.settings.home / "work"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(root, 0o700)
    work = root / run_id
    work.mkdir(mode=0o700)
    os.chmod(work, 0o700)
    claim = work / RUN_FILE
    fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"run_id": run_id, "pid": os.getpid(), "process_start": _process_start(os.getpid())}, fh)
    return work


def _make_private(tree: Path) -> None:
    """Files 600 and directories 700 under ``tree`` (work files hold plaintext identity codes)."""
    for dirpath, _dirnames, filenames in os.walk(tree):
        os.chmod(dirpath, 0o700)
        for f in filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chmod(Path(dirpath) / f, 0o600)


def _tree_size(tree: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, _d, filenames in os.walk(tree):
        for f in filenames:
            with contextlib.suppress(OSError):
                size += (Path(dirpath) / f).stat().st_size
                files += 1
    return files, size


def cleanup_stale_runs(svc: Service, *, actor: str = "pipeline") -> list[str]:
    """Find runs whose process died (killed, machine lost) and clean up after them: their work files (which
    hold plaintext identity codes) are removed and each run is recorded as failed, audited.  Runs by live
    processes are left alone.  Called at the start of every extraction and by ``toisio extract --cleanup``."""
    from pseudonymise.runs import LinkageRun

    root = svc.settings.home / "work"
    cleaned: list[str] = []
    found: dict[str, Path] = {}
    if root.is_dir():
        for d in sorted(root.iterdir()):
            claim = d / RUN_FILE
            try:
                info = json.loads(claim.read_text())
            except (OSError, ValueError):
                info = {}
                if time.time() - d.stat().st_mtime < 60:
                    continue  # being created by a run that has not written its claim yet
            if info and _process_start(int(info["pid"])) == info.get("process_start") and info.get("process_start"):
                continue  # its process still runs
            found[info.get("run_id") or d.name] = d
    with svc.engine.begin() as conn:
        running = {r.run_id: r for r in conn.execute(select(LinkageRun).where(LinkageRun.status == "running"))}
    now = datetime.now(UTC)
    for run_id, row in running.items():
        started = datetime.fromisoformat(row.started_at.replace("Z", "+00:00"))
        if run_id not in found and not (root / run_id).exists() and \
                (now - started).total_seconds() > STALE_WITHOUT_WORK_SECONDS:
            found[run_id] = root / run_id
    for run_id, d in found.items():
        files, size = _tree_size(d) if d.exists() else (0, 0)
        shutil.rmtree(d, ignore_errors=True)
        with svc.engine.begin() as conn:
            if run_id in running:
                finish_run(conn, svc.audit_key, run_id=run_id, actor=actor, manifest_sha256=None,
                           error="stale: the run's process is gone (killed or crashed); its work files were "
                                 "removed", summary={})
            subject = f"permit:{running[run_id].permit_id}" if run_id in running else "extraction:work"
            audit.append(conn, svc.audit_key, actor=actor, action="extraction.stale_cleaned", subject=subject,
                         payload={"run_id": run_id, "files_removed": files, "bytes_removed": size})
        cleaned.append(run_id)
    return cleaned


def check_quality(registry: str, c: dict[str, Any], *, max_share: float, allow_empty: bool) -> None:
    """Fail the run for an extract that is empty or mostly quarantined (wrong delimiter, encoding, columns),
    naming the file and the reasons, unless the threshold is explicitly raised."""
    schema = load_schema(registry)
    file = f"{schema.file}/ ({schema.resource} resources)" if schema.resource else schema.file
    if c["rows_in"] == 0:
        if not allow_empty:
            empty = f"{schema.file}/ has no {schema.resource} resources" if schema.resource \
                else f"{file} has a header but no rows"
            raise ExtractionError(f"registry {registry!r}: {empty}; if that is right, run again with "
                                  f"--allow-empty-extracts")
        return
    share = c["quarantined_total"] / c["rows_in"]
    if share > max_share:
        top = sorted(c["quarantined"].items(), key=lambda kv: -kv[1])[:3]
        reasons = ", ".join(f"{r} ({n:,})" for r, n in top)
        raise ExtractionError(
            f"registry {registry!r}: {c['quarantined_total']:,} of {c['rows_in']:,} rows of {file} ({share:.0%}) "
            f"were quarantined, over the limit of {max_share:.0%} (reasons: {reasons}); the file is probably not "
            f"this registry's extract. Nothing was delivered; fix the file, or publish anyway with "
            f"--max-quarantined-share {min(1.0, round(share + 0.005, 2))}")


def run_extraction(scope: PermitScope, in_dir: str | Path, out_dir: str | Path, svc: Service, *,
                   actor: str = "pipeline", spark: SparkSession | None = None,
                   quarantine_dir: str | Path | None = None, max_quarantined_share: float | None = None,
                   allow_empty_extracts: bool | None = None) -> ExtractionResult:
    """Run the whole pipeline for ``scope`` and deliver atomically to ``out_dir``.

    A registry with more than ``max_quarantined_share`` of its rows quarantined, or with no rows,
    fails the run before anything is published (defaults from the settings).
    """
    max_share = svc.settings.pipeline_max_quarantined_share if max_quarantined_share is None \
        else max_quarantined_share
    allow_empty = svc.settings.pipeline_allow_empty_extracts if allow_empty_extracts is None \
        else allow_empty_extracts
    in_dir, out_dir = Path(in_dir), Path(out_dir).resolve()
    if not in_dir.is_dir():
        raise ExtractionError(f"input directory {in_dir} does not exist")
    run_id = f"{scope.permit_id}-{uuid.uuid4().hex[:12]}"
    cleanup_stale_runs(svc, actor=actor)
    work = _private_work_dir(svc, run_id)
    key = derive_permit_key(master_key(svc.settings.keys), scope.permit_id, scope.key_version)
    with svc.engine.begin() as conn:
        start_run(conn, svc.audit_key, run_id=run_id, permit_id=scope.permit_id, scope_sha256=scope.sha256,
                  key_id=key.key_id, output_dir=str(out_dir), actor=actor)
    spark = spark or get_spark(svc.settings)
    apply_pipeline_conf(spark)
    quarantine = Path(quarantine_dir) if quarantine_dir else svc.settings.quarantine_dir / scope.permit_id / run_id
    staging = deliver.new_staging(out_dir)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[phase] = round(now - clock, 2)
        clock = now

    cached: list[DataFrame] = []  # released when the run ends, however it ends

    def keep(df: DataFrame) -> DataFrame:
        cached.append(df.cache())
        return cached[-1]

    try:
        keydf = key_frame(spark, key)
        counts: dict[str, dict[str, Any]] = {}
        valid: dict[str, DataFrame] = {}
        needed = registries_needed(scope)
        flagged = {r for r in needed if flagged_at_validation(r, scope)}

        def validate(registry: str, members: DataFrame | None) -> None:
            log.info("validating %s", registry)
            dataset = _validate_to_work(spark, scope, registry, in_dir, work, flagged=registry in flagged,
                                        members=members)
            _make_private(work)
            counts[registry] = _validation_counts(spark, dataset, registry in flagged)
            check_quality(registry, counts[registry], max_share=max_share, allow_empty=allow_empty)
            valid[registry] = _read_valid(spark, dataset, *_valid_kinds(registry in flagged))
            lap(f"validate {registry}")

        for registry in needed:  # the cohort's sources first
            if registry not in flagged:
                validate(registry, None)
        members = None
        cohort_summary: dict[str, Any] | None = None
        if scope.cohort is not None:
            cases = with_pseudonym(select_cases(valid[scope.cohort.registry], scope.cohort), keydf)
            population = valid.get("population")
            if population is not None:
                population = with_pseudonym(population, keydf)
            members = keep(match_controls(cases, population, scope.cohort))
            roles = {r["cohort_role"]: r["count"] for r in members.groupBy("cohort_role").count().collect()}
            short = 0
            if scope.cohort.controls_per_case:
                per_case = members.where(F.col("cohort_role") == "control").groupBy("match_set").count()
                short = roles.get("case", 0) - per_case.where(
                    F.col("count") >= scope.cohort.controls_per_case).count()
            cohort_summary = {"cases": roles.get("case", 0), "controls": roles.get("control", 0),
                              "cases_short_of_controls": short}
            lap("cohort")
        for registry in needed:  # then the registries whose rows are flagged while validated
            if registry in flagged:
                validate(registry, members)
        datasets: dict[str, Any] = {}
        for registry in sorted(scope.registries):
            if registry == "population":
                continue
            precounted = registry in flagged
            rows = _read_valid(spark, work / registry, DELIVER) if precounted else valid[registry]
            datasets[registry] = _deliver_registry(registry, scope, rows, members, keydf, staging,
                                                   counts[registry], precounted=precounted)
            lap(f"deliver {registry}")
        # cached: counted, written and joined for the accounting, but built (a join and an
        # aggregation over the whole population) once
        persons = keep(_person_table(scope, valid, members, keydf))
        n_persons = persons.count()
        person_rows = persons.drop("hetu")
        files = deliver.write_dataset(person_rows, staging / PERSONS, n_persons)
        datasets[PERSONS] = {"rows": n_persons, "schema": _schema_of(person_rows),
                             "files": _file_entries(files, staging)}
        if "population" in counts:
            _account_population(counts["population"], scope, valid["population"], persons)
        lap("deliver persons")
        for registry, c in counts.items():
            if registry not in scope.registries:
                c.update(excluded_not_in_scope=c["valid"], delivered=0)
            _check_accounting(registry, c)
        scope_sha = deliver.write_json(staging / "scope.json", scope.model_dump(mode="json"))
        manifest = Manifest.model_validate({
            "manifest_version": 1,
            "permit_id": scope.permit_id,
            "delivery": scope.delivery,
            "scope_sha256": scope.sha256,
            "scope_file_sha256": scope_sha,
            "key": {"key_id": key.key_id, "version": key.version,
                    "pseudonym": f"HMAC-SHA256(permit key, normalised HETU), first {PSEUDONYM_HEX_CHARS} hex"},
            "software": {"toisio": version("toisio"), "pyspark": version("pyspark")},
            "generalisation": scope.generalise.model_dump(mode="json"),
            "cohort": cohort_summary,
            "counts": dict(sorted(counts.items())),
            "datasets": dict(sorted(datasets.items())),
        })
        manifest_sha = deliver.write_json(staging / "manifest.json", manifest.to_json())
        if quarantine.exists():
            shutil.rmtree(quarantine)
        quarantine.mkdir(parents=True, exist_ok=True)
        for registry in counts:
            rejected = _read_part(spark, work / registry, REJECTED).drop("_vpart")
            rejected.coalesce(1).write.mode("overwrite").parquet(str(quarantine / registry))
        deliver.write_json(quarantine / "summary.json",
                           {r: c["quarantined"] for r, c in sorted(counts.items())})
        deliver.publish(staging, out_dir)
        lap("quarantine and publish")
    except BaseException as exc:
        _release(cached)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        with svc.engine.begin() as conn:
            finish_run(conn, svc.audit_key, run_id=run_id, actor=actor, manifest_sha256=None,
                       error=f"{type(exc).__name__}: {exc}"[:2000], summary={})
        raise
    _release(cached)
    shutil.rmtree(work, ignore_errors=True)
    summary = {"rows_in": sum(c["rows_in"] for c in counts.values()),
               "quarantined": sum(c["quarantined_total"] for c in counts.values()),
               "delivered_rows": {k: v["rows"] for k, v in datasets.items()}}
    with svc.engine.begin() as conn:
        finish_run(conn, svc.audit_key, run_id=run_id, actor=actor, manifest_sha256=manifest_sha,
                   error=None, summary=summary)
    return ExtractionResult(run_id, out_dir, manifest, manifest_sha, quarantine, seconds)
