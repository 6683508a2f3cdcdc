"""The flow that follows one application from submission to its decision.

At each state it logs what the case waits for and whom; at a person's step it waits
(:func:`flows.pauses.wait_for_person`: suspended in the worker's deployment, paused in-process) until the step is
recorded through the portal, the API or the CLI, which resume it (:mod:`flows.follow`).  The database stays the
system of record: after every resume, and on a re-run after a crash, the flow reads the case's state and
continues from there.  The reminders and lateness flags of each step come from the worker's schedules (the
handlers' deadline digest, the controllers' estimate reminders); the messages to each person from the notifier.
On approval the flow starts the worker's ``advance`` job, which takes the permit to in force (extraction,
delivery, workspace or statistics, activation).
"""

from __future__ import annotations

from prefect import flow, tags, task
from prefect.context import FlowRunContext
from prefect.logging import get_run_logger

from flows.pauses import resume_tagged, tagged_runs, wait_for_person
from permits.lifecycle import DECIDED, TERMINAL, State
from permits.service import permit_access
from toisio.service import service

# Who the flow is waiting for in each state before the decision.
WAITING_FOR: dict[State, str] = {
    State.DRAFT: "applicant: submit the application",
    State.SUBMITTED: "handler: confirm completeness or return for more information",
    State.RETURNED: "applicant: resubmit with the information asked for",
    State.COMPLETE: "handler: request the controllers' estimates (or present an amendment)",
    State.ESTIMATES_REQUESTED: "controllers: record their estimates (15 working days)",
    State.ESTIMATES_RECEIVED: "handler: send the estimate and extraction description",
    State.ESTIMATE_SENT: "applicant: accept the estimate and extraction description",
    State.ACCEPTED: "handler: present the case",
    State.PRESENTED: "decider: decide",
}
ADVANCE = "toisio-advance/advance"


@task(persist_result=False)
def case_state(case_id: str) -> str:
    return permit_access(service(), case_id).state.value


def _in_deployment() -> bool:
    ctx = FlowRunContext.get()
    return ctx is not None and ctx.flow_run is not None and ctx.flow_run.deployment_id is not None


def _start_delivery(case_id: str) -> None:
    """Start the worker's ``advance`` job now (it takes every approved permit further, one run each)."""
    from prefect.deployments import run_deployment

    run = run_deployment(ADVANCE, timeout=0, tags=[f"case:{case_id}"])
    get_run_logger().info("%s approved: the service's delivery started (flow run %s)", case_id, run.id)


@flow(name="toisio-permit-application", flow_run_name="case {case_id}", persist_result=False)
def application_flow(case_id: str, step_timeout_seconds: int = 30 * 24 * 3600, max_steps: int = 100) -> str:
    """Follow the case until it is decided, withdrawn or deleted; returns the final state."""
    log = get_run_logger()
    for step in range(max_steps):
        state = State(case_state(case_id))
        if state in DECIDED or state in TERMINAL:
            log.info("%s: %s", case_id, state.value)
            if state is State.APPROVED and _in_deployment():
                _start_delivery(case_id)
            return state.value
        log.info("%s: %s; waiting for %s", case_id, state.value, WAITING_FOR.get(state, "a person"))
        wait_for_person(state.value, step, step_timeout_seconds)
    return State(case_state(case_id)).value


def start_application_flow(case_id: str, **kwargs) -> str:
    """Run the flow for a case in this process, tagged so that :func:`resume_case_flows` finds it."""
    with tags(f"case:{case_id}"):
        return application_flow(case_id, **kwargs)


def case_flow_runs(case_id: str) -> list:
    """All flow runs tagged with a case (newest first)."""
    return tagged_runs(f"case:{case_id}")


def resume_case_flows(case_id: str) -> int:
    """Resume the paused flow runs of a case after a step was recorded; returns how many."""
    return resume_tagged(f"case:{case_id}")
