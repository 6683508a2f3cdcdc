"""The flow runs that follow each application and each output request: started and resumed by what users do.

Every step a person records (through the portal, the REST API or the CLI, which goes through the API) is
published by its stage after its commit (``permit.<event>``, ``output.<event>``).  The service's web process
subscribes :class:`Follower` when it knows the Prefect server (``PREFECT_API_URL``): for the case or request of
the event it resumes the run that waits for that step, or starts one from the worker's deployment when none
follows it yet.  This is done in the background, so a user's action never waits for Prefect, and never fails
because of it: the database stays the system of record, and the worker's ``follow`` job (every minute)
:func:`reconcile`\\ s whatever was missed (a step recorded while Prefect was down, a run that failed).

Which runs to resume and whether to start one is one pure function, :func:`plan`.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from flows.pauses import state_of_key, tagged_runs
from toisio.service import Service

log = logging.getLogger("toisio.follow")

#: the worker's deployments that follow a case and an output request (``flow name/deployment name``)
APPLICATION = "toisio-permit-application/application"
OUTPUT_REVIEW = "toisio-output-review/output-review"
#: a run in one of these Prefect states is following its subject (a paused or suspended run is PAUSED)
ACTIVE = frozenset({"SCHEDULED", "PENDING", "RUNNING", "PAUSED"})


@dataclass(frozen=True)
class RunInfo:
    """What :func:`plan` needs of one flow run."""

    id: str
    state: str  # Prefect's state type: SCHEDULED, PENDING, RUNNING, PAUSED, COMPLETED, FAILED, CRASHED, ...
    waiting_at: str | None = None  # a paused run: the subject's state it waits in (from its pause key)


@dataclass(frozen=True)
class Plan:
    resume: tuple[str, ...] = ()
    start: bool = False


def plan(open_: bool, state: str, runs: list[RunInfo]) -> Plan:
    """What to do for a case or request in ``state``: resume each paused run that waits in another state (a
    step was recorded: it re-reads the database and waits for the next one, or ends); start a run when it is
    still open and no run follows it (none yet, or the last one failed or crashed)."""
    paused = tuple(r.id for r in runs if r.state == "PAUSED" and r.waiting_at != state)
    following = any(r.state in ACTIVE for r in runs)
    return Plan(resume=paused, start=open_ and not following)


@dataclass(frozen=True)
class Subject:
    """A case or an output request, as the flows follow it."""

    kind: str  # "case" or "output"
    id: str

    @property
    def tag(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def deployment(self) -> str:
        return APPLICATION if self.kind == "case" else OUTPUT_REVIEW

    @property
    def parameters(self) -> dict[str, str]:
        return {"case_id": self.id} if self.kind == "case" else {"request_id": self.id}


def state_of(svc: Service, subject: Subject) -> tuple[bool, str]:
    """Whether a person still has a step to take on it (the flow that follows it is not finished), and its state."""
    from flows.output_flow import FINAL
    from permits.lifecycle import DECIDED, TERMINAL
    from permits.service import permit_access
    from secure_env.airlock.outputs import request_state

    if subject.kind == "case":
        state = permit_access(svc, subject.id).state
        return state not in DECIDED and state not in TERMINAL, state.value
    out = request_state(svc, subject.id)
    return out not in FINAL, out.value


def _runs(subject: Subject) -> list[RunInfo]:
    out = []
    for r in tagged_runs(subject.tag):
        details = r.state.state_details if r.state else None
        out.append(RunInfo(str(r.id), r.state.type.value if r.state else "SCHEDULED",
                           state_of_key(details.pause_key) if details and details.pause_key else None))
    return out


def follow(svc: Service, subject: Subject, *, why: str = "") -> Plan:
    """Resume what waits on ``subject``, start a run when none follows it; returns what was done."""
    from prefect.deployments import run_deployment
    from prefect.flow_runs import resume_flow_run

    open_, state = state_of(svc, subject)
    p = plan(open_, state, _runs(subject))
    for run_id in p.resume:
        try:
            resume_flow_run(run_id)
            log.info("%s: resumed flow run %s (%s)", subject.tag, run_id, why or "step recorded")
        except Exception as exc:  # resumed already by someone else, or it timed out meanwhile
            log.info("%s: flow run %s not resumed: %s", subject.tag, run_id, exc)
    if p.start:
        run = run_deployment(subject.deployment, parameters=subject.parameters, timeout=0, tags=[subject.tag],
                             flow_run_name=f"{subject.kind} {subject.id}")
        log.info("%s: started flow run %s (%s)", subject.tag, run.id, why or "no run followed it")
    return p


def subject_of(topic: str, payload: dict) -> Subject | None:
    """The case or request an event is about (``permit.*`` and ``output.*``), else None."""
    if topic.startswith("permit.") and payload.get("permit_id"):
        return Subject("case", str(payload["permit_id"]))
    if topic.startswith("output.") and payload.get("request_id"):
        return Subject("output", str(payload["request_id"]))
    return None


@dataclass
class Follower:
    """The web process's subscriber: follows each event's subject on one background thread, in order."""

    svc: Service
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "toisio-follow"))
    _last: Future | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, topic: str, payload: dict) -> None:
        subject = subject_of(topic, payload)
        if subject is None:
            return
        with self._lock:
            self._last = self._pool.submit(self._follow, subject, topic)

    def _follow(self, subject: Subject, topic: str) -> None:
        try:
            follow(self.svc, subject, why=topic)
        except Exception as exc:  # Prefect unreachable: the worker's follow job catches up
            log.warning("%s: could not reach the flows (%s); the worker's follow job will", subject.tag, exc)

    def wait_idle(self, timeout: float = 60) -> None:
        """Block until the events handed over so far were followed (tests, shutdown)."""
        with self._lock:
            last = self._last
        if last is not None:
            last.result(timeout=timeout)


def install(svc: Service) -> Follower | None:
    """Subscribe a :class:`Follower` to every event when a Prefect server is configured; returns it."""
    import os

    from toisio import events

    if not os.environ.get("PREFECT_API_URL"):
        return None
    follower = Follower(svc)
    events.subscribe("*", follower)
    log.info("flow runs follow cases and output requests at %s", os.environ["PREFECT_API_URL"])
    return follower


def open_subjects(svc: Service) -> list[Subject]:
    """Every case and output request on which a person still has a step to take."""
    from sqlalchemy import select

    from flows.output_flow import FINAL
    from permits.lifecycle import DECIDED, TERMINAL, State
    from permits.models import CaseRow
    from secure_env.airlock.models import OutputRequestRow

    closed = [s.value for s in State if s in DECIDED or s in TERMINAL]
    with svc.engine.connect() as conn:
        cases = [Subject("case", r[0]) for r in conn.execute(
            select(CaseRow.case_id).where(CaseRow.state.not_in(closed)).order_by(CaseRow.case_id))]
        outs = [Subject("output", r[0]) for r in conn.execute(
            select(OutputRequestRow.request_id).where(OutputRequestRow.state.not_in([s.value for s in FINAL]))
            .order_by(OutputRequestRow.request_id))]
    return cases + outs


def reconcile(svc: Service) -> dict[str, int]:
    """The ``follow`` job: every open case and request gets a run following it, and a run paused at a step that
    was recorded meanwhile is resumed (it re-reads the database and waits again if nothing changed)."""
    started = resumed = 0
    for subject in open_subjects(svc):
        p = follow(svc, subject, why="follow job")
        started += p.start
        resumed += len(p.resume)
    return {"started": started, "resumed": resumed}
