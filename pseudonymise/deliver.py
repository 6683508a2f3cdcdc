"""Deterministic, atomic delivery: Parquet datasets plus a manifest.

Each dataset is hash-partitioned on the pseudonym into a fixed number of files
and sorted within each file on every column, then the part files get stable
names, so the same input, scope and key version give the same rows in the same
order.  Spark's Parquet writer lists each column chunk's encodings in hash-set
order, which changes from one JVM to the next, so every file is then rewritten
with pyarrow (row group by row group, bounded memory): the bytes depend only on
the rows and the library versions, and a re-extraction in another process is
byte-identical.
Everything is written into a staging directory beside the target and moved
into place with one ``rename``; a failed or interrupted run leaves the previous
delivery (or nothing) in place, never a partial one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import DataFrame

ROWS_PER_FILE = 1_000_000  # one writing task per file: several files keep several cores busy
ROWS_PER_GROUP = 1_000_000
COMPRESSION = "zstd"
INTERMEDIATE_OPTIONS = {"compression": "none", "parquet.enable.dictionary": "false"}


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_dataset(df: DataFrame, target: Path, rows: int) -> list[Path]:
    """Write ``df`` as deterministic Parquet files under ``target``; returns the files."""
    n_files = max(1, math.ceil(rows / ROWS_PER_FILE))
    ordered = df.repartition(n_files, "pseudonym").sortWithinPartitions(*df.columns)
    # Spark writes plain and uncompressed; the pyarrow rewrite encodes and compresses.
    ordered.write.mode("overwrite").options(**INTERMEDIATE_OPTIONS).parquet(str(target))
    parts = sorted(target.glob("part-*.parquet"))
    files = [target / f"part-{i:05d}.parquet" for i in range(len(parts))]
    with ThreadPoolExecutor(max_workers=max(1, min(len(parts), os.cpu_count() or 1))) as pool:
        list(pool.map(rewrite_deterministic, parts, files))  # pyarrow releases the GIL
    for part in parts:
        part.unlink()
    for leftover in list(target.iterdir()):
        if leftover not in files:
            leftover.unlink()
    return files


def rewrite_deterministic(source: Path, target: Path) -> None:
    """Copy Parquet ``source`` to ``target`` with pyarrow: same rows, schema and Spark metadata,
    fixed row groups and compression, and a footer that does not depend on the writing JVM."""
    reader = pq.ParquetFile(source)
    schema = reader.schema_arrow
    with pq.ParquetWriter(target, schema, compression=COMPRESSION, write_statistics=True) as writer:
        for batch in reader.iter_batches(batch_size=ROWS_PER_GROUP):
            writer.write_batch(batch, row_group_size=ROWS_PER_GROUP)


def new_staging(target: Path) -> Path:
    """A fresh staging directory beside ``target`` (same file system, so the final move is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    return staging


def publish(staging: Path, target: Path) -> None:
    """Atomically replace ``target`` with ``staging``."""
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(target, old)
        try:
            os.rename(staging, target)
        except OSError:
            os.rename(old, target)
            raise
        shutil.rmtree(old)
    else:
        os.rename(staging, target)


def write_json(path: Path, obj: object) -> str:
    """Write canonical, human-readable JSON and return its SHA-256."""
    data = (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()
