"""Prefect flow that follows one output request until it is released, rejected or withdrawn.

It pauses while the request waits for people (the analyst to submit, each output checker to
review, a checker to decide and release) and is resumed by :func:`resume_output_flows` when
an action is recorded through ``toisio outputs``.  The database is the system of record: after
every resume, or a re-run after a crash, the flow reads the request's state again.
"""

from __future__ import annotations

from prefect import flow, tags, task
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from flows.pauses import pause_key, resume_tagged, tagged_runs
from secure_env.airlock.lifecycle import RequestState
from secure_env.airlock.outputs import request_state
from toisio.service import service

FINAL = {RequestState.RELEASED, RequestState.REJECTED, RequestState.WITHDRAWN}
WAITING_FOR: dict[RequestState, str] = {
    RequestState.PENDING: "analyst: add files and submit",
    RequestState.SUBMITTED: "two output checkers: review every file",
    RequestState.PARTIALLY_REVIEWED: "a second, independent output checker",
    RequestState.REVIEWED: "an output checker: approve, reject or return (a third settles conflicts)",
    RequestState.RETURNED: "analyst: revise and resubmit",
    RequestState.APPROVED: "an output checker: release",
}


class ReviewRecorded(RunInput):
    action: str
    actor: str


@task(persist_result=False)
def current_state(request_id: str) -> str:
    return request_state(service(), request_id).value


@flow(name="toisio-output-review", persist_result=False)
def output_review_flow(request_id: str, step_timeout_seconds: int = 14 * 24 * 3600, max_steps: int = 200) -> str:
    """Wait for each human step until the request is final; returns the final state."""
    for step in range(max_steps):
        state = RequestState(current_state(request_id))
        if state in FINAL:
            return state.value
        pause_flow_run(wait_for_input=ReviewRecorded, timeout=step_timeout_seconds, poll_interval=1,
                       key=pause_key(request_id, state.value, step))
    return current_state(request_id)


def start_output_flow(request_id: str, **kwargs) -> str:
    with tags(f"output:{request_id}"):
        return output_review_flow(request_id, **kwargs)


def output_flow_runs(request_id: str) -> list:
    return tagged_runs(f"output:{request_id}")


def resume_output_flows(request_id: str, action: str, actor: str) -> int:
    """Resume the paused flow of a request after an action was recorded; returns how many."""
    return resume_tagged(f"output:{request_id}", {"action": action, "actor": actor})
