"""Prefect flow that runs one permit's extraction (validate, pseudonymise, link, deliver).

The flow is a thin layer over :func:`pseudonymise.pipeline.run_extraction`: it
adds retries for transient failures (a lost executor, a full disk that was
cleared) and a run history in Prefect.  Permanent errors - an invalid scope, a
missing extract file - are not retried.  The database stays the system of
record: each attempt is a linkage run with its own audit events.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.logging import get_run_logger

from permits.scope import ScopeError, load_scope
from pseudonymise.pipeline import ExtractionError, run_extraction
from toisio.service import service

PERMANENT = (ScopeError, ExtractionError, FileNotFoundError, PermissionError)


def _transient(task, task_run, state) -> bool:
    """Retry unless the failure is one that a retry cannot fix."""
    exc = state.result(raise_on_failure=False)
    return not isinstance(exc, PERMANENT)


@task(retries=2, retry_delay_seconds=[1, 10], retry_condition_fn=_transient, persist_result=False)
def extract_task(scope_path: str, in_dir: str, out_dir: str, actor: str) -> dict:
    """Run the pipeline; returns a small summary (the manifest stays with the delivery)."""
    scope = load_scope(scope_path)
    result = run_extraction(scope, in_dir, out_dir, service(), actor=actor)
    return {"run_id": result.run_id, "output_dir": str(result.output_dir),
            "manifest_sha256": result.manifest_sha256,
            "delivered": {k: v["rows"] for k, v in result.manifest["datasets"].items()}}


@flow(name="toisio-extraction", persist_result=False)
def extraction_flow(scope_path: str, in_dir: str, out_dir: str, actor: str = "pipeline") -> dict:
    """Extract and deliver the data of the permit whose scope is at ``scope_path``."""
    summary = extract_task(str(Path(scope_path)), str(in_dir), str(out_dir), actor)
    get_run_logger().info("delivered %s", summary["delivered"])
    return summary
