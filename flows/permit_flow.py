"""Prefect flow that carries one application from submission to decision.

At each human step the flow pauses (``pause_flow_run``) and waits; the step is
recorded through the API or CLI as usual, and :func:`resume_case_flows` then
resumes the paused run.  The database stays the system of record: on every
resume, and on a re-run after a crash, the flow reads the case's state from the
database and continues from there.
"""

from __future__ import annotations

from prefect import flow, tags, task
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from flows.pauses import pause_key, resume_tagged, tagged_runs
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


class StepRecorded(RunInput):
    """Sent when a step was recorded for the case (the flow re-reads the database)."""

    action: str
    actor: str


@task(persist_result=False)
def case_state(case_id: str) -> str:
    return permit_access(service(), case_id).state.value


@flow(name="toisio-permit-application", persist_result=False)
def application_flow(case_id: str, step_timeout_seconds: int = 30 * 24 * 3600, max_steps: int = 100) -> str:
    """Wait at each human step until the case is decided, withdrawn or deleted; returns the final state."""
    for step in range(max_steps):
        state = State(case_state(case_id))
        if state in DECIDED or state in TERMINAL:
            return state.value
        pause_flow_run(wait_for_input=StepRecorded, timeout=step_timeout_seconds, poll_interval=1,
                       key=pause_key(case_id, state.value, step))
    return State(case_state(case_id)).value


def start_application_flow(case_id: str, **kwargs) -> str:
    """Run the flow for a case, tagged so that :func:`resume_case_flows` can find it."""
    with tags(f"case:{case_id}"):
        return application_flow(case_id, **kwargs)


def case_flow_runs(case_id: str) -> list:
    """All flow runs tagged with a case (newest first)."""
    return tagged_runs(f"case:{case_id}")


def resume_case_flows(case_id: str, action: str, actor: str) -> int:
    """Resume the paused flow runs of a case after a step was recorded; returns how many."""
    return resume_tagged(f"case:{case_id}", {"action": action, "actor": actor})
