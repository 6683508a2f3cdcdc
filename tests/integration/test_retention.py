"""Data at a permit's end: what is held and until when; its deletion by each stage with proof in the audit chain;
released outputs and the key kept; quarantines (raw identity codes) purged by age."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from flows.retention import delete_ended, retention
from permits.permissions import PermissionDenied
from permits.service import expire_due
from pseudonymise import retention as extracted
from pseudonymise.runs import finish_run, start_run
from secure_env.airlock import outputs as A
from tests.factories import make_output_request, make_service, make_staff, who
from toisio import audit
from toisio.identity import SYSTEM

pytestmark = pytest.mark.integration


def _run(svc, permit: str, out: Path, run_id: str) -> None:
    """A finished extraction run with its delivery and quarantine on disk (as the pipeline leaves them)."""
    (out / "persons").mkdir(parents=True)
    (out / "persons" / "part-0.parquet").write_bytes(b"x" * 1000)
    (out / "manifest.json").write_text("{}")
    q = extracted.quarantine_of(svc, permit, run_id)
    q.mkdir(parents=True)
    (q / "population.csv").write_text("hetu,reason\n131052-308T,impossible_date\n")
    with svc.engine.begin() as conn:
        start_run(conn, svc.audit_key, run_id=run_id, permit_id=permit, scope_sha256="s" * 64, key_id="k",
                  output_dir=str(out), actor="hanna")
        finish_run(conn, svc.audit_key, run_id=run_id, actor="hanna", manifest_sha256="m" * 64, error=None,
                   summary={})


def test_at_a_permits_end_each_stage_deletes_what_it_holds_with_proof(tmp_path):
    svc = make_service(tmp_path / "home")
    staff = make_staff(svc)
    released, permit = make_output_request(svc, staff, state="released")
    staff["olga"] = who(svc, "olga")
    pending, _ = make_output_request(svc, staff, state="submitted", permit=permit)
    _run(svc, permit, tmp_path / "delivery", "run-1")

    r = retention(svc, staff["hanna"], permit)
    assert r.ended_on is None and r.delete_after is None  # in force: nothing is due
    assert {(h.stage, h.kind) for h in r.held} == {("workspace", "workspace"), ("pseudonymise", "delivery"),
                                                   ("pseudonymise", "quarantine"), ("airlock", "unreleased_output")}
    assert all(h.bytes > 0 for h in r.held)
    with pytest.raises(PermissionDenied, match="only a handler, an auditor"):
        retention(svc, staff["alice"], permit)
    assert delete_ended(svc, today=date.today()) == {}

    end = date.today() + timedelta(days=3650)
    expire_due(svc, today=end)
    r = retention(svc, staff["aud"], permit)
    assert r.state == "expired" and r.delete_after == r.ended_on == date.today()
    done = delete_ended(svc, today=date.today())
    assert {(h.stage, h.kind) for h in done[permit]} == {(h.stage, h.kind) for h in r.held}
    for h in r.held:
        assert not Path(h.path).exists()
    assert retention(svc, staff["hanna"], permit).held == ()
    # released outputs stay, and the request whose copy went is withdrawn
    assert A.released_file(svc, who(svc, "alice"), released, "table.csv").startswith(b"k,n")
    assert A.request_state(svc, pending).value == "withdrawn"
    with pytest.raises(A.AirlockError, match="deleted when its permit ended"):
        A.read_file(svc, who(svc, "oscar"), pending, "table.csv")
    # the proof: one entry per thing deleted (the workspace's own), with paths, sizes and the manifest's hash
    with svc.engine.connect() as conn:
        proof = [e.payload for e in audit.events(conn, subject=f"permit:{permit}") if e.action == "data.deleted"]
        destroyed = [e.payload for e in audit.events(conn, subject=f"permit:{permit}")
                     if e.action == "workspace.destroyed"]
    assert {p["kind"] for p in proof} == {"delivery", "quarantine", "unreleased_output"}
    delivery = next(p for p in proof if p["kind"] == "delivery")
    assert delivery["manifest_sha256"] == "m" * 64 and delivery["bytes"] > 1000 and delivery["key_retained"]
    assert destroyed and destroyed[0]["key_retained"]
    assert (svc.settings.keys).exists() and any(svc.settings.keys.iterdir())  # the keys are kept
    assert delete_ended(svc, today=date.today()) == {}  # nothing twice


def test_quarantines_are_purged_by_age_whatever_the_permits_state(tmp_path):
    svc = make_service(tmp_path / "home", quarantine_retention_days=30)
    staff = make_staff(svc)
    _released, permit = make_output_request(svc, staff, state="pending")
    _run(svc, permit, tmp_path / "delivery", "run-1")
    assert extracted.purge_quarantine(svc, SYSTEM) == []  # a fresh quarantine stays
    later = datetime.now(UTC) + timedelta(days=31)
    purged = extracted.purge_quarantine(svc, SYSTEM, now=later)
    assert [h.kind for h in purged] == ["quarantine"]
    kinds = {h.kind for h in retention(svc, staff["hanna"], permit).held}
    assert "quarantine" not in kinds and "delivery" in kinds  # the permit is in force: its delivery stays
    with pytest.raises(Exception, match="only the service or an operator"):
        extracted.purge_quarantine(svc, staff["hanna"])


def test_what_is_held_through_the_api_and_the_command_line(tmp_path, monkeypatch):
    import json

    from tests.factories import invoke_as, make_token, serve_in_thread
    from toisio.app.api import create_app

    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    from toisio.service import service

    svc = service()
    staff = make_staff(svc)
    _rid, permit = make_output_request(svc, staff, state="pending")
    import httpx

    with serve_in_thread(create_app(svc)) as root:
        for user, status in (("hanna", 200), ("aud", 200), ("alice", 403)):
            r = httpx.get(f"{root}/api/v1/permits/{permit}/retention",
                          headers={"Authorization": f"Bearer {make_token(svc, user)}"})
            assert r.status_code == status
    r = invoke_as(svc, "hanna", ["permits", "retention", permit, "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.output)
    assert got["delete_after"] is None and {h["kind"] for h in got["held"]} == {"workspace", "unreleased_output"}
