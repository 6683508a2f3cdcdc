"""From a decision to a permit in force, by the service: extraction, delivery recorded, workspace, activation; a
run killed in between continues without doing a step twice.  (A data request's way, statistics instead of a
workspace, is in test_data_requests.py.)"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from flows.delivery import deliver, delivery_dir, waiting_for_service
from permits.application import Kind
from permits.lifecycle import State
from permits.service import act, frozen_scope, permit_access
from pseudonymise.pipeline import run_extraction
from pseudonymise.runs import LinkageRun
from secure_env.workspace import provision
from tests.factories import make_case, make_service, make_staff
from toisio.identity import SYSTEM

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def _runs(svc, permit):
    with svc.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(LinkageRun).where(LinkageRun.permit_id == permit)).scalar()


def test_a_crashed_delivery_is_continued_to_in_force_without_a_second_extraction(spark, extracts, tmp_path):
    """The pipeline delivered, then the process died before the delivery was recorded on the permit: the next
    run records it (no second extraction), makes the workspace and activates; a run after that does nothing.
    (The extraction branch itself runs in test_data_requests.py and test_flow.py.)"""
    svc = make_service(tmp_path / "home", extracts_dir=extracts)
    staff = make_staff(svc)
    permit = make_case(svc, staff, state="approved").case_id
    assert waiting_for_service(svc) == [permit]
    act(svc, SYSTEM, permit, "start_extraction")
    out = delivery_dir(svc, permit, Kind.DATA_PERMIT)
    run_extraction(frozen_scope(svc, permit), extracts, out, svc, actor="system", spark=spark)
    report = deliver(svc, permit, spark=spark)
    assert _runs(svc, permit) == 1  # the finished run's delivery was recorded, not extracted again
    assert [s.split(" ")[0] for s in report.steps] == ["delivery", "workspace", "activated"]
    assert report.state == "active" and permit_access(svc, permit).state is State.ACTIVE
    assert (provision.paths(svc, permit).data / "manifest.json").exists()
    assert waiting_for_service(svc) == []
    assert deliver(svc, permit, spark=spark).steps == []  # nothing left to do, nothing done twice


def test_a_permit_whose_extractions_keep_failing_waits_longer_each_time(tmp_path):
    """Failed runs since the last delivery put the permit's next attempt off (1, 2, 4 ... minutes); a delivered
    run resets the count."""
    from datetime import UTC, datetime, timedelta

    from pseudonymise.runs import finish_run, start_run

    svc = make_service(tmp_path / "home")
    staff = make_staff(svc)
    permit = make_case(svc, staff, state="approved").case_id
    t0 = datetime.now(UTC)

    def attempt(i: int, error: str | None):
        with svc.engine.begin() as conn:
            start_run(conn, svc.audit_key, run_id=f"run-{i}", permit_id=permit, scope_sha256="0" * 64, key_id="k",
                      output_dir=str(tmp_path / "out"), actor="system")
            finish_run(conn, svc.audit_key, run_id=f"run-{i}", actor="system", manifest_sha256=None if error else
                       "1" * 64, error=error, summary={})

    attempt(1, "extract missing: hilmo.csv")
    assert waiting_for_service(svc, now=t0) == []
    assert waiting_for_service(svc, now=t0 + timedelta(minutes=2)) == [permit]
    attempt(2, "extract missing: hilmo.csv")
    attempt(3, "extract missing: hilmo.csv")
    assert waiting_for_service(svc, now=t0 + timedelta(minutes=3)) == []  # third failure: 4 minutes
    assert waiting_for_service(svc, now=t0 + timedelta(minutes=5)) == [permit]
    attempt(4, None)
    attempt(5, "a later failure")
    assert waiting_for_service(svc, now=t0 + timedelta(minutes=2)) == [permit]  # counted from the delivery on
