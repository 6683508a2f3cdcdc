"""CI must fail, not skip, when PostgreSQL cannot be started (issue 12, finding 19)."""

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pg-test-server.sh"


def _run(tmp_path, require: bool, bin_dir: Path):
    env = {**os.environ, "TOISIO_PG_BIN": str(bin_dir), "TOISIO_REQUIRE_POSTGRES": "1" if require else "0"}
    return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, cwd=tmp_path)


def test_missing_postgres_fails_when_required_and_only_warns_otherwise(tmp_path):
    missing = tmp_path / "nowhere"
    required = _run(tmp_path, True, missing)
    assert required.returncode == 1 and "not installed" in required.stderr and "export" not in required.stdout
    optional = _run(tmp_path, False, missing)
    assert optional.returncode == 0 and "SQLite only" in optional.stdout


def test_a_server_that_does_not_start_fails_when_required(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("initdb", "pg_ctl"):
        (fake / tool).write_text("#!/bin/sh\nexit 1\n")
        (fake / tool).chmod(0o755)
    r = _run(tmp_path, True, fake)
    assert r.returncode == 1 and "TOISIO_REQUIRE_POSTGRES" in r.stderr
    assert "TOISIO_TEST_POSTGRES_URL" not in r.stdout


def test_ci_run_itself_stops_before_the_tests_when_postgres_cannot_start(tmp_path):
    """The CI entry point, not only the helper: with a PostgreSQL that does not start it exits non-zero and
    never runs `make test` (so the suite can never pass on SQLite alone)."""
    root = SCRIPT.parents[1]
    fake_pg = tmp_path / "pg"
    fake_pg.mkdir()
    for tool in ("initdb", "pg_ctl"):
        (fake_pg / tool).write_text("#!/bin/sh\nexit 1\n")
        (fake_pg / tool).chmod(0o755)
    shims = tmp_path / "shims"
    shims.mkdir()
    calls = tmp_path / "calls.txt"
    for tool in ("make", "apt-get"):  # record instead of installing or testing anything
        (shims / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{calls}"\n')
        (shims / tool).chmod(0o755)
    env = {**os.environ, "TOISIO_PG_BIN": str(fake_pg), "PATH": f"{shims}:{os.environ['PATH']}"}
    env.pop("TOISIO_TEST_POSTGRES_URL", None)
    r = subprocess.run(["bash", str(root / ".ci" / "run")], capture_output=True, text=True, env=env, cwd=root)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "PostgreSQL could not be started: failing CI" in r.stderr
    ran = calls.read_text() if calls.exists() else ""
    assert "make test" not in ran and "make lint" not in ran
