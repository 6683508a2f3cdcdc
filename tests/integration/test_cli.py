"""The toisio command line, through typer's runner (no Spark needed)."""

import json

from typer.testing import CliRunner

from tests.factories import invoke_as
from toisio.app.cli import app

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

    service().record(actor="a", action="case.viewed", subject="s")
    r = runner.invoke(app, ["audit", "head"])
    assert r.exit_code == 0 and r.stdout.startswith("1:")
    anchor = r.stdout.strip()
    r = runner.invoke(app, ["audit", "verify", "--anchor", anchor])
    assert r.exit_code == 0 and "1 entries verified" in r.stdout
    r = runner.invoke(app, ["audit", "verify", "--anchor", "1:" + "0" * 64])
    assert r.exit_code == 1 and "differs from the anchored head" in r.output


def test_after_a_crash_audit_verify_names_the_recovery_and_reanchor_applies_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    from toisio import audit
    from toisio.service import service

    svc = service()
    svc.record(actor="a", action="case.viewed", subject="s")
    audit._write_head(svc.audit_key, 2, "ab" * 32)  # the head of a commit that never landed
    r = runner.invoke(app, ["audit", "verify"])
    assert r.exit_code == 1 and "toisio audit reanchor --recorded 2" in r.output, r.output
    r = runner.invoke(app, ["audit", "reanchor", "--recorded", "1", "--reason", "power cut"])
    assert r.exit_code == 1 and "is entry 2, not 1" in str(r.exception)  # `toisio` prints it as one line
    r = runner.invoke(app, ["audit", "reanchor", "--recorded", "2", "--reason", "power cut during a commit"])
    assert r.exit_code == 0 and "ended at entry 1" in r.output and "as entry 2" in r.output, r.output
    r = runner.invoke(app, ["audit", "verify"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["audit", "show", "--json"])
    assert "audit.head_reanchored" in r.output and "operator:" in r.output


def test_synth_command(tmp_path):
    r = runner.invoke(app, ["synth", "--persons", "50", "--out", str(tmp_path / "x"), "--seed", "2"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "x" / "population.csv").exists()


def test_workspace_commands_check_who_may_and_show_the_session_audit(tmp_path, monkeypatch):
    from datetime import date, timedelta

    from tests.factories import make_case, make_delivery, make_staff
    from toisio.service import service

    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    svc = service()
    staff = make_staff(svc)
    permit = make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id
    delivery = make_delivery(tmp_path / "delivery", permit)
    tokens = tmp_path / "tokens.json"
    r = invoke_as(svc, "alice", ["workspace", "create", "--permit", permit, "--delivery", str(delivery)])
    assert r.exit_code == 1 and "only a handler or the service may" in " ".join(r.output.split())
    r = invoke_as(svc, "hanna", ["workspace", "create", "--permit", permit, "--delivery", str(delivery),
                            "--tokens-out", str(tokens)])
    assert r.exit_code == 0, r.output
    assert set(json.loads(tokens.read_text())) == {"bob"} and (tokens.stat().st_mode & 0o777) == 0o600
    r = invoke_as(svc, "bob", ["workspace", "status", "--permit", permit, "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["running"] is False
    r = invoke_as(svc, "bob", ["workspace", "audit", "--permit", permit])
    assert r.exit_code == 1 and "refused" in r.output
    r = invoke_as(svc, "hanna", ["workspace", "audit", "--permit", permit, "--json"])
    assert r.exit_code == 0 and [e["action"] for e in json.loads(r.output)] == ["workspace.created"]


def test_markup_in_user_text_is_printed_as_plain_text(tmp_path, monkeypatch):
    """A title with Rich markup crashed `permits list` for every handler (issue 12, finding 5)."""
    from permits.service import submit_form
    from tests.factories import make_form, make_staff
    from toisio.service import service

    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    svc = service()
    staff = make_staff(svc)
    submit_form(svc, staff["alice"], make_form(title="Diabetes [/bold] and [red]kidneys[/red] :smile:"))
    for args in (["permits", "list"], ["permits", "show", "TOISIO-2026-1"]):
        r = invoke_as(svc, "hanna", args)
        assert r.exit_code == 0, r.output
        assert "[/bold]" in r.output and "[red]kidneys[/red]" in r.output and ":smile:" in r.output


def test_output_groups_comments_and_data_request_statistics_from_the_cli(tmp_path, monkeypatch):
    from secure_env.airlock import outputs as A
    from secure_env.workspace.provision import paths
    from tests.factories import make_case, make_output_request, make_staff
    from toisio.service import service

    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    svc = service()
    staff = make_staff(svc)
    rid, permit = make_output_request(svc, staff, state="pending")
    (paths(svc, permit).root / "scratch" / "raw.csv").write_text("k,n\na,3\n")
    r = invoke_as(svc, "bob", ["outputs", "add", rid, "scratch/raw.csv", "--description", "raw counts",
                               "--supporting"])
    assert r.exit_code == 0, r.output
    r = invoke_as(svc, "bob", ["outputs", "describe-group", rid, "default", "--context", "paper table 1",
                               "--controls", "none"])
    assert r.exit_code == 0, r.output
    assert invoke_as(svc, "bob", ["outputs", "submit", rid]).exit_code == 0
    r = invoke_as(svc, "oscar", ["outputs", "comment", rid, "looks fine", "--private"])
    assert r.exit_code == 0, r.output
    r = invoke_as(svc, "oscar", ["outputs", "show", rid])
    assert "paper table 1" in r.output and "looks fine" in r.output and "supporting" in r.output
    assert [c["visibility"] for c in A.view(svc, staff["oscar"], rid)["groups"][0]["comments"]] == ["private"]
    r = invoke_as(svc, "bob", ["outputs", "show", rid])
    assert "looks fine" not in r.output  # private to the checkers

    case = make_case(svc, staff, state="active", kind="data_request", processors=[],
                     pseudonymised_data_justification="",
                     tabulation_plan=[{"registry": "population", "rows": ["sex"], "statistic": "count"}]).case_id
    r = invoke_as(svc, "hanna", ["permits", "statistics", case, "--produce"])
    assert r.exit_code == 1 and "run its extraction first" in " ".join(r.output.split())
    r = invoke_as(svc, "alice", ["permits", "statistics", case, "--json"])
    assert r.exit_code == 0 and json.loads(r.output) == []
