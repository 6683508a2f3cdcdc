"""Broken inputs the pipeline must refuse, and runs that die (issue 12, findings 15-17)."""

import gzip
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from catalogue.registries import load_schema
from pseudonymise.files import ExtractFileError, check_extract, header_problem
from pseudonymise.pipeline import ExtractionError, cleanup_stale_runs, run_extraction
from pseudonymise.runs import runs_for
from tests.factories import extraction_subprocess_code, make_scope, make_service
from toisio import audit

HILMO = load_schema("hilmo")


# ---------------------------------------------------------------- unit: the header contract

def test_the_contract_header_passes_with_or_without_a_bom(tmp_path):
    f = tmp_path / "hilmo.csv"
    f.write_text("\ufeff" + HILMO.header + "\r\nrow\n", encoding="utf-8")
    assert check_extract(f, HILMO) == [f]
    assert header_problem(HILMO.header, HILMO) is None


@pytest.mark.parametrize("mutate,expect", [
    (lambda cols: _swap(cols, "main_dg", "secondary_dg"), "wrong order: secondary_dg"),
    (lambda cols: cols[:-1], "missing column"),
    (lambda cols: [*cols, "extra"], r"unknown column\(s\) extra"),
    (lambda cols: [c.upper() for c in cols], "missing column"),
])
def test_a_header_that_breaks_the_contract_is_named(tmp_path, mutate, expect):
    f = tmp_path / "hilmo.csv"
    f.write_text(",".join(mutate(list(HILMO.names))) + "\n1,2\n")
    with pytest.raises(ExtractFileError, match=expect) as exc:
        check_extract(f, HILMO)
    assert str(f) in str(exc.value)


def _swap(cols, a, b):
    i, j = cols.index(a), cols.index(b)
    cols[i], cols[j] = cols[j], cols[i]
    return cols


def test_empty_compressed_binary_and_wrongly_delimited_files_are_named(tmp_path):
    cases = {
        "empty.csv": (b"", "is empty"),
        "gz.csv": (gzip.compress((HILMO.header + "\n").encode()), "gzip-compressed"),
        "bin.csv": (b"PAR1\0\0\0", "binary"),
        "semi.csv": (HILMO.header.replace(",", ";").encode() + b"\n", "delimited by ';'"),
        "latin.csv": ("päivä".encode("latin-1") + b"\n", "not UTF-8"),
    }
    for name, (content, expect) in cases.items():
        f = tmp_path / name
        f.write_bytes(content)
        with pytest.raises(ExtractFileError, match=expect):
            check_extract(f, HILMO)
    (tmp_path / "dir").mkdir()
    with pytest.raises(ExtractFileError, match="no extract file"):
        check_extract(tmp_path / "dir", HILMO)


# ---------------------------------------------------------------- the pipeline refuses them

def _copy(extracts: Path, tmp_path: Path) -> Path:
    d = tmp_path / "in"
    shutil.copytree(extracts, d)
    return d


@pytest.mark.slow
@pytest.mark.integration
def test_swapped_columns_in_the_header_deliver_nothing(spark, extracts, tmp_path):
    src = _copy(extracts, tmp_path)
    lines = (src / "hilmo.csv").read_text(encoding="utf-8").split("\n", 1)
    (src / "hilmo.csv").write_text(",".join(_swap(lines[0].split(","), "main_dg", "secondary_dg")) + "\n"
                                   + lines[1], encoding="utf-8")
    svc = make_service(tmp_path / "home")
    with pytest.raises(ExtractionError, match=r"hilmo.csv: columns in the wrong order: secondary_dg .*main_dg"):
        run_extraction(make_scope(), src, tmp_path / "out", svc, spark=spark)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_an_empty_file_is_an_error_naming_it_not_a_traceback(spark, extracts, tmp_path):
    src = _copy(extracts, tmp_path)
    (src / "kela_purchases.csv").write_bytes(b"")
    with pytest.raises(ExtractionError, match="kela_purchases.csv: the file is empty"):
        run_extraction(make_scope(), src, tmp_path / "out", make_service(tmp_path / "home"), spark=spark)


@pytest.mark.slow
@pytest.mark.integration
def test_a_file_whose_every_row_is_quarantined_fails_unless_explicitly_allowed(spark, extracts, tmp_path):
    src = _copy(extracts, tmp_path)
    text = (src / "hilmo.csv").read_text(encoding="utf-8").splitlines()
    (src / "hilmo.csv").write_text("\n".join([text[0], *(line + ",surplus" for line in text[1:])]) + "\n",
                                   encoding="utf-8")
    svc = make_service(tmp_path / "home")
    scope = make_scope(permit_id="TOISIO-2026-2", cohort=None, generalise={},
                       registries={"hilmo": {"variables": ["main_dg"]}})
    with pytest.raises(ExtractionError, match=r"registry 'hilmo': .* rows of hilmo.csv \(100%\) were quarantined"):
        run_extraction(scope, src, tmp_path / "out", svc, spark=spark)
    assert not (tmp_path / "out").exists()
    with svc.engine.connect() as conn:
        assert runs_for(conn, "TOISIO-2026-2")[-1].status == "failed"
    result = run_extraction(scope, src, tmp_path / "out", svc, spark=spark, max_quarantined_share=1.0)
    assert result.manifest.counts["hilmo"].delivered == 0  # published only because it was asked for


@pytest.mark.slow
@pytest.mark.integration
def test_a_header_only_file_fails_unless_empty_extracts_are_allowed(spark, extracts, tmp_path):
    src = _copy(extracts, tmp_path)
    (src / "hilmo.csv").write_text(HILMO.header + "\n", encoding="utf-8")
    scope = make_scope(permit_id="TOISIO-2026-3", cohort=None, generalise={},
                       registries={"hilmo": {"variables": ["main_dg"]}})
    svc = make_service(tmp_path / "home")
    with pytest.raises(ExtractionError, match="hilmo.csv has a header but no rows"):
        run_extraction(scope, src, tmp_path / "out", svc, spark=spark)
    run_extraction(scope, src, tmp_path / "out", svc, spark=spark, allow_empty_extracts=True)


# ---------------------------------------------------------------- a run killed with SIGKILL

@pytest.mark.slow
@pytest.mark.integration
def test_a_killed_run_leaves_private_work_files_that_the_next_start_removes(extracts, tmp_path):
    home = tmp_path / "home"
    # the first registry's work files are written; then the run waits to be killed
    code = extraction_subprocess_code(extracts, tmp_path / "out", home,
                                      prelude="import time; P.check_quality = lambda *a, **k: time.sleep(600);")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOISIO_")}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    work_root = home / "work"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if work_root.is_dir() and any(work_root.rglob("*.parquet")):
                break
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("no work files appeared")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    (work,) = list(work_root.iterdir())
    assert stat.S_IMODE(work_root.stat().st_mode) == 0o700 and stat.S_IMODE(work.stat().st_mode) == 0o700
    time.sleep(1)
    files = [p for p in work.rglob("*") if p.is_file()]
    assert files and all(stat.S_IMODE(p.stat().st_mode) & 0o077 == 0 for p in files), \
        [(p.name, oct(p.stat().st_mode)) for p in files if p.stat().st_mode & 0o077]
    svc = make_service(home)
    with svc.engine.connect() as conn:
        assert runs_for(conn, "TOISIO-2026-1")[-1].status == "running"
    run_id = json.loads((work / "run.json").read_text())["run_id"]
    assert cleanup_stale_runs(svc, actor="tester") == [run_id]
    assert not work.exists()
    with svc.engine.connect() as conn:
        run = runs_for(conn, "TOISIO-2026-1")[-1]
        events = [e.action for e in audit.events(conn, subject="permit:TOISIO-2026-1")]
    assert run.status == "failed" and "stale" in run.error
    assert events[-2:] == ["extraction.failed", "extraction.stale_cleaned"]
    assert cleanup_stale_runs(svc) == []  # nothing left; a live run is never touched (its claim names a live pid)
