"""The toisio command line, through typer's runner (no Spark needed)."""

import json

from typer.testing import CliRunner

from toisio.cli import app

runner = CliRunner()


def test_scope_schema_and_check(tmp_path, monkeypatch):
    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    r = runner.invoke(app, ["scope", "schema"])
    assert r.exit_code == 0 and json.loads(r.stdout)["title"] == "PermitScope"
    r = runner.invoke(app, ["scope", "check", "examples/scope-diabetes.yaml"])
    assert r.exit_code == 0 and "valid scope for TOISIO-2026-1" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("permit_id: X\n")
    r = runner.invoke(app, ["scope", "check", str(bad)])
    assert r.exit_code == 1 and "invalid permit scope" in r.output


def test_audit_head_and_verify(tmp_path, monkeypatch):
    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    from toisio.service import service

    service().record(actor="a", action="b.c", subject="s")
    r = runner.invoke(app, ["audit", "head"])
    assert r.exit_code == 0 and r.stdout.startswith("1:")
    anchor = r.stdout.strip()
    r = runner.invoke(app, ["audit", "verify", "--anchor", anchor])
    assert r.exit_code == 0 and "1 entries verified" in r.stdout
    r = runner.invoke(app, ["audit", "verify", "--anchor", "1:" + "0" * 64])
    assert r.exit_code == 1 and "differs from the anchored head" in r.output


def test_synth_command(tmp_path):
    r = runner.invoke(app, ["synth", "--persons", "50", "--out", str(tmp_path / "x"), "--seed", "2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "x" / "population.csv").exists()
