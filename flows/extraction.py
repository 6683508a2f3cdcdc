"""Extraction: from a permit's frozen scope to a delivery recorded on the permit.

:func:`extract_for_permit` is the stage-to-stage sequence, in one place: the permit stage records
that the extraction starts (its permission table decides who may), the permit's frozen scope is
handed over as a typed :class:`~permits.scope.PermitScope` (never a file written and read back),
the pseudonymisation stage runs, and the delivery (with its manifest's SHA-256) is recorded on the
permit itself.  A retried or externally started run does the same: a permit already marked as
extracting continues where it was.

The Prefect flows are thin wrappers: retries for transient failures (a lost executor, a full disk
that was cleared), a run history in Prefect.  Permanent errors - an invalid scope, a missing extract
file, a refusal - are not retried.  The database stays the system of record.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.logging import get_run_logger

from permits.lifecycle import State
from permits.scope import ScopeError, load_scope
from permits.service import act, check_can_act, frozen_scope, permit_access
from pseudonymise.pipeline import ExtractionError, ExtractionResult, run_extraction
from toisio.errors import ToisioError
from toisio.identity import Actor, actor_for
from toisio.service import Service, service

PERMANENT = (ScopeError, ExtractionError, FileNotFoundError, PermissionError, ToisioError)


def extract_for_permit(svc: Service, actor: Actor, permit_id: str, in_dir: str | Path, out_dir: str | Path,
                       **pipeline_options) -> ExtractionResult:
    """Run the extraction of an approved permit and record its delivery on the permit.

    ``actor`` must be allowed to start the extraction and to record the delivery (the permit stage's
    table: a handler or the service).  ``pipeline_options`` go to
    :func:`pseudonymise.pipeline.run_extraction`.
    """
    state = permit_access(svc, permit_id).state
    if state is State.APPROVED:
        act(svc, actor, permit_id, "start_extraction")
    else:
        check_can_act(svc, actor, permit_id, "mark_delivered")  # a retry of a started extraction
    scope = frozen_scope(svc, permit_id)
    result = run_extraction(scope, in_dir, out_dir, svc, actor=actor.user_id, **pipeline_options)
    act(svc, actor, permit_id, "mark_delivered", manifest_sha256=result.manifest_sha256)
    return result


def _transient(task, task_run, state) -> bool:
    """Retry unless the failure is one that a retry cannot fix."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, PERMANENT)


def _summary(result: ExtractionResult) -> dict:
    return {"run_id": result.run_id, "output_dir": str(result.output_dir),
            "manifest_sha256": result.manifest_sha256,
            "delivered": {k: v.rows for k, v in result.manifest.datasets.items()}}


@task(retries=2, retry_delay_seconds=[1, 10], retry_condition_fn=_transient, persist_result=False)
def extract_task(scope_path: str, in_dir: str, out_dir: str, actor: str) -> dict:
    """Run the pipeline on a scope file (no permit recorded); returns a small summary."""
    scope = load_scope(scope_path)
    return _summary(run_extraction(scope, in_dir, out_dir, service(), actor=actor))


@task(retries=2, retry_delay_seconds=[1, 10], retry_condition_fn=_transient, persist_result=False)
def permit_extract_task(permit_id: str, in_dir: str, out_dir: str, user_id: str) -> dict:
    """Run :func:`extract_for_permit` as the user who started the flow (authenticated at the entry point)."""
    svc = service()
    with svc.engine.connect() as conn:
        actor = actor_for(conn, user_id)
    return _summary(extract_for_permit(svc, actor, permit_id, in_dir, out_dir))


@flow(name="toisio-extraction", persist_result=False)
def extraction_flow(scope_path: str, in_dir: str, out_dir: str, actor: str = "pipeline") -> dict:
    """Extract and deliver the data of the scope at ``scope_path`` (a scope file, no permit recorded)."""
    summary = extract_task(str(Path(scope_path)), str(in_dir), str(out_dir), actor)
    get_run_logger().info("delivered %s", summary["delivered"])
    return summary


@flow(name="toisio-permit-extraction", flow_run_name="extract {permit_id}", persist_result=False)
def permit_extraction_flow(permit_id: str, in_dir: str, out_dir: str, user_id: str) -> dict:
    """Extract an approved permit's data and record the delivery on the permit."""
    summary = permit_extract_task(permit_id, str(in_dir), str(out_dir), user_id)
    get_run_logger().info("%s delivered %s", permit_id, summary["delivered"])
    return summary
