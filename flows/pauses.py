"""Waiting for a person, and finding and resuming the runs that wait (shared by the application and output flows).

A flow waits at a human step with a pause key that names the state it waits in (:func:`step_key`), so that the
flows that follow a case resume only the runs whose subject has moved on (:func:`flows.follow.plan`).  In a run of
one of the worker's deployments it *suspends*: the run's process ends, nothing is held for the weeks a step may
take, and on resume Prefect starts the flow again from the beginning, where it reads the state from the database
(every step is idempotent against it).  Run in-process (tests, the CLI), it pauses.
"""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run, resume_flow_run, suspend_flow_run


def tagged_runs(tag: str, *, paused_only: bool = False) -> list:
    """Flow runs carrying ``tag`` (newest first)."""
    state = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])) if paused_only else None
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag]), state=state),
                                     sort=FlowRunSort.START_TIME_DESC, limit=50)


def resume_tagged(tag: str) -> int:
    """Resume every paused run carrying ``tag``; returns how many."""
    runs = tagged_runs(tag, paused_only=True)
    for run in runs:
        resume_flow_run(run.id)
    return len(runs)


def _normal(state: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in state.lower())


def step_key(state: str, step: int) -> str:
    """The pause key of a wait in ``state`` (lower-case letters, digits and dashes, as Prefect accepts)."""
    return f"at-{_normal(state)}--{step}"


def state_of_key(key: str) -> str | None:
    """The state a pause key waits in (as the subject's state value), or None for another key."""
    if not key.startswith("at-") or "--" not in key:
        return None
    return key[3:].rsplit("--", 1)[0].replace("-", "_")


def wait_for_person(state: str, step: int, timeout_seconds: int) -> None:
    """Wait until a person's step is recorded: suspend in a deployment's run, pause in-process."""
    ctx = FlowRunContext.get()
    key = step_key(state, step)
    if ctx is not None and ctx.flow_run is not None and ctx.flow_run.deployment_id is not None:
        suspend_flow_run(timeout=timeout_seconds, key=key)
    else:
        pause_flow_run(timeout=timeout_seconds, poll_interval=1, key=key)
