"""The extraction as a Prefect flow (ephemeral server via prefect_test_harness)."""

import os
import tempfile
from types import SimpleNamespace

import pytest

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="toisio-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from flows.extraction import _transient, extraction_flow  # noqa: E402
from permits.scope import ScopeError  # noqa: E402
from pseudonymise.pipeline import ExtractionError  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _state(exc):
    return SimpleNamespace(result=lambda raise_on_failure=False: exc)


def test_retry_only_transient_failures():
    assert _transient(None, None, _state(ConnectionError("executor lost")))
    assert not _transient(None, None, _state(ScopeError("bad scope")))
    assert not _transient(None, None, _state(ExtractionError("missing file")))


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def test_flow_delivers(harness, spark, extracts, tmp_path, monkeypatch):
    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TOISIO_SPARK_MASTER", "local[2]")
    scope = tmp_path / "scope.yaml"
    scope.write_text("""
permit_id: TOISIO-2026-5
delivery: pseudonymised
registries:
  hilmo: {variables: [admission_date, main_dg]}
  cancer: {variables: [diagnosis_date, topography, morphology]}
""")
    summary = extraction_flow(str(scope), str(extracts), str(tmp_path / "out"), "flow-test")
    assert (tmp_path / "out" / "manifest.json").exists()
    assert summary["delivered"]["hilmo"] > 0 and "persons" in summary["delivered"]


def test_rerun_after_crash_continues_from_recorded_state(harness, tmp_path, monkeypatch):
    from flows.permit_flow import start_application_flow
    from permits.service import act, submit_form
    from tests.factories import make_form, make_staff
    from toisio.service import service

    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    svc = service()
    staff = make_staff(svc)
    case = submit_form(svc, staff["alice"], make_form()).case_id
    act(svc, staff["hanna"], case, "confirm_complete")
    act(svc, staff["hanna"], case, "return", reason="more detail")
    act(svc, staff["alice"], case, "withdraw")
    # A flow started (or restarted) now reads the recorded state and ends at once.
    assert start_application_flow(case) == "withdrawn"


def test_output_review_flow_waits_for_the_reviewers(harness, tmp_path, monkeypatch):
    import threading
    import time

    from flows.output_flow import output_flow_runs, resume_output_flows, start_output_flow
    from secure_env.airlock import outputs as A
    from tests.factories import make_case, make_staff, make_user
    from toisio.identity import Actor
    from toisio.service import service

    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    svc = service()
    staff = make_staff(svc)
    permit = make_case(svc, staff).case_id
    olga = make_user(svc, "olga", ("output_checker",))
    bob = Actor("bob")
    table = tmp_path / "t.csv"
    table.write_text("k,n\na,50\nb,60\n")
    rid = A.create_request(svc, bob, permit)
    A.add_file(svc, bob, rid, table, {"description": "d", "method": "m", "index": "k"})
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("state", start_output_flow(rid)))
    runner.start()

    def wait_paused():
        deadline = time.time() + 60
        while time.time() < deadline:
            runs = output_flow_runs(rid)
            if runs and all(r.state and r.state.is_paused() for r in runs):
                return
            time.sleep(0.3)
        raise AssertionError("flow did not pause")

    steps = [(bob, lambda: A.submit(svc, bob, rid))]
    for checker in (staff["oscar"], olga):
        steps.append((checker, lambda c=checker: (A.vote(svc, c, rid, "t.csv", "approve"),
                                                  A.submit_review(svc, c, rid))))
    steps.append((olga, lambda: A.decide(svc, olga, rid, "approve")))
    steps.append((olga, lambda: A.release(svc, olga, rid)))
    for _actor, step in steps:
        wait_paused()
        step()
        resume_output_flows(rid)
    runner.join(timeout=60)
    assert result["state"] == "released"


def test_extract_for_permit_records_the_start_and_the_delivery_on_the_permit(spark, extracts, tmp_path):
    """`toisio extract --permit` is one sequence in flows/: the permit's own table decides who may, the frozen
    scope is handed over typed, and the delivery is recorded on the permit with its manifest's SHA-256; a retry
    of a started extraction continues from the permit's state."""
    import hashlib

    from flows.extraction import extract_for_permit
    from permits.lifecycle import State
    from permits.permissions import PermissionDenied
    from permits.service import act, permit_access, show
    from tests.factories import make_case, make_service, make_staff

    svc = make_service(tmp_path / "home")
    staff = make_staff(svc)
    case = make_case(svc, staff, state="approved").case_id
    with pytest.raises(PermissionDenied, match="only"):
        extract_for_permit(svc, staff["alice"], case, extracts, tmp_path / "out")
    assert permit_access(svc, case).state is State.APPROVED  # refused before anything ran
    act(svc, staff["hanna"], case, "start_extraction")  # as if an earlier attempt had started and died
    result = extract_for_permit(svc, staff["hanna"], case, extracts, tmp_path / "out")
    view = show(svc, staff["hanna"], case)
    assert view.state is State.DELIVERED
    delivered = [e for e in view.history if e.event == "delivered"][-1]
    assert delivered.payload["manifest_sha256"] == result.manifest_sha256
    assert hashlib.sha256((tmp_path / "out" / "manifest.json").read_bytes()).hexdigest() == result.manifest_sha256
    assert result.manifest.permit_id == case and result.manifest.counts["hilmo"].delivered > 0
