"""The flow that follows one output request until it is released, rejected or withdrawn.

It waits while the request waits for people (the analyst to submit, each output checker to review, a checker to
decide and release) and is resumed when the step is recorded (:mod:`flows.follow`); its automatic checks ran when
each file was added.  The database is the system of record: after every resume, or a re-run after a crash, the
flow reads the request's state again.  The requester hears of the decision and the release from the notifier.
"""

from __future__ import annotations

from prefect import flow, tags, task
from prefect.logging import get_run_logger

from flows.pauses import resume_tagged, tagged_runs, wait_for_person
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


@task(persist_result=False)
def current_state(request_id: str) -> str:
    return request_state(service(), request_id).value


@flow(name="toisio-output-review", flow_run_name="output {request_id}", persist_result=False)
def output_review_flow(request_id: str, step_timeout_seconds: int = 14 * 24 * 3600, max_steps: int = 200) -> str:
    """Follow the request until it is final; returns the final state."""
    log = get_run_logger()
    for step in range(max_steps):
        state = RequestState(current_state(request_id))
        if state in FINAL:
            log.info("%s: %s", request_id, state.value)
            return state.value
        log.info("%s: %s; waiting for %s", request_id, state.value, WAITING_FOR[state])
        wait_for_person(state.value, step, step_timeout_seconds)
    return current_state(request_id)


def start_output_flow(request_id: str, **kwargs) -> str:
    with tags(f"output:{request_id}"):
        return output_review_flow(request_id, **kwargs)


def output_flow_runs(request_id: str) -> list:
    return tagged_runs(f"output:{request_id}")


def resume_output_flows(request_id: str) -> int:
    """Resume the paused flow of a request after an action was recorded; returns how many."""
    return resume_tagged(f"output:{request_id}")
