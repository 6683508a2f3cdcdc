"""A case's and an output request's flow runs, started and resumed by what users do, on a real worker against a
persistent Prefect server; a worker killed mid-delivery and started again takes the permit to in force without
doing anything twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from tests.factories import free_port, make_case, make_form, make_service, make_staff, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.integration]


class Worker:
    """``toisio worker`` against the test's Prefect server, in its own process group (killed as a whole)."""

    def __init__(self, tmp: Path, home: Path, api: str, extracts: Path, name: str):
        self.log_path = tmp / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(TOISIO_HOME=str(home), PREFECT_API_URL=api, TOISIO_EXTRACTS_DIR=str(extracts),
                   TOISIO_SPARK_MASTER="local[2]", TOISIO_SPARK_SHUFFLE_PARTITIONS="2", SPARK_LOCAL_IP="127.0.0.1",
                   PREFECT_HOME=str(tmp / "prefect-client"))
        self._log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([sys.executable, "-m", "toisio.app.cli", "worker"], env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self) -> None:
        """As a machine that dies: every process of the worker at once, no clean-up."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


@pytest.fixture(scope="module")
def prefect(tmp_path_factory):
    """A persistent Prefect server of the tests' own (as production's shared one), its API in this process too."""
    from prefect.context import refresh_global_settings_context

    from flows.worker import EmbeddedServer
    from toisio.config import load_settings

    tmp = tmp_path_factory.mktemp("prefect")
    server = EmbeddedServer(load_settings(home=tmp / "server-home"), free_port())
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    os.environ.update(PREFECT_API_URL=server.api_url, PREFECT_HOME=str(tmp / "client"))
    refresh_global_settings_context()
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    refresh_global_settings_context()
    server.stop()


@pytest.fixture(scope="module")
def world(prefect, tmp_path_factory):
    from pseudonymise.synthetic import generate

    tmp = tmp_path_factory.mktemp("world")
    extracts = tmp / "extracts"
    generate(extracts, persons=600, seed=5, defect_rate=0.02)
    home = tmp / "home"
    svc = make_service(home, extracts_dir=extracts)
    staff = make_staff(svc)
    worker = Worker(tmp, home, prefect.api_url, extracts, "worker-1")
    state = {"worker": worker}
    try:
        wait_until(lambda: len(httpx.post(f"{prefect.api_url}/deployments/filter", json={}, timeout=5).json()) >= 10,
              180, "the worker's deployments", worker.log_path)
    except AssertionError:
        worker.stop()
        raise
    yield {"svc": svc, "staff": staff, "api": prefect.api_url, "tmp": tmp, "home": home, "extracts": extracts,
           "state": state}
    state["worker"].stop()


def _runs(tag: str) -> list:
    from flows.pauses import tagged_runs

    return tagged_runs(tag)


def _waiting_at(tag: str, state: str, log: Path, seconds: float = 120):
    """The one run following ``tag``, once it is suspended waiting in ``state``."""
    from flows.pauses import state_of_key

    def check():
        runs = _runs(tag)
        if len(runs) == 1 and runs[0].state.is_paused() and state_of_key(
                runs[0].state.state_details.pause_key or "") == state:
            return runs[0]
        return None

    return wait_until(check, seconds, f"{tag}'s run waiting in {state}", log)


def test_steps_recorded_by_users_start_and_resume_the_run_that_follows_the_case(world):
    """Submission starts the case's run; each step resumes it and it waits again at the next one (suspended: no
    process held while it waits); withdrawal ends it.  One run follows the case throughout."""
    from flows.follow import Follower
    from permits.service import act, submit_form
    from toisio import events

    svc, staff, log = world["svc"], world["staff"], world["state"]["worker"].log_path
    follower = Follower(svc)
    events.subscribe("*", follower)
    try:
        case = submit_form(svc, staff["alice"], make_form()).case_id
        follower.wait_idle()
        first = _waiting_at(f"case:{case}", "submitted", log)
        assert {"toisio", "case", f"case:{case}"} <= set(first.tags)
        assert first.state.name == "Suspended" and first.name == f"case {case}"
        overheads = []
        for actor, action, waits_at in (("hanna", "confirm_complete", "complete"),
                                         ("hanna", "request_estimates", "estimates_requested")):
            started = time.monotonic()
            act(svc, staff[actor], case, action)
            follower.wait_idle()
            run = _waiting_at(f"case:{case}", waits_at, log)
            overheads.append(time.monotonic() - started)
            assert run.id == first.id  # the same run, resumed: nothing started twice
        act(svc, staff["alice"], case, "withdraw")
        follower.wait_idle()
        done = wait_until(lambda: (lambda r: r if r[0].state.is_completed() else None)(_runs(f"case:{case}")), 120,
                     "the run to end at the withdrawal", log)
        assert len(done) == 1
        print(f"pause-to-resume overhead per human step: {', '.join(f'{o:.1f} s' for o in overheads)}")
    finally:
        events.unsubscribe("*", follower)


def test_the_follow_job_starts_a_run_for_a_request_nobody_handed_over(world):
    """A step recorded while the web process could not reach Prefect: the follow job starts the run, which then
    waits at the request's current state."""
    from flows.follow import reconcile
    from secure_env.airlock import outputs as A
    from toisio.identity import Actor

    svc, staff = world["svc"], world["staff"]
    permit = make_case(svc, staff).case_id
    rid = A.create_request(svc, Actor("bob"), permit)  # no follower subscribed: nothing handed over
    assert _runs(f"output:{rid}") == []
    done = reconcile(svc)
    assert done["started"] >= 1
    _waiting_at(f"output:{rid}", "pending", world["state"]["worker"].log_path)
    assert reconcile(svc)["started"] == 0  # followed now: nothing started twice


def test_a_worker_killed_mid_delivery_is_replaced_and_nothing_is_done_twice(world):
    """The service takes an approved permit to in force; the worker dies during the extraction (every process at
    once); a new worker marks the dead run crashed, and the next advance finishes: one delivered extraction, one
    activation, one message per person."""
    from flows.follow import reconcile
    from flows.notifications import run_notifier
    from permits.lifecycle import State
    from permits.models import CaseEventRow
    from permits.service import permit_access
    from pseudonymise.runs import LinkageRun
    from toisio.notify import NotificationRow

    svc, staff, api, state = world["svc"], world["staff"], world["api"], world["state"]
    permit = make_case(svc, staff, state="approved").case_id
    reconcile(svc)  # (approved: nothing to follow; the advance job takes it)

    def advance_now():
        from prefect.deployments import run_deployment

        run_deployment("toisio-advance/advance", timeout=0)  # Prefect's client: it retries a busy server (503)

    advance_now()
    wait_until(lambda: permit_access(svc, permit).state is State.EXTRACTION, 180, "the extraction to start",
          state["worker"].log_path)
    time.sleep(3)  # into the pipeline
    state["worker"].kill()
    assert permit_access(svc, permit).state is State.EXTRACTION  # it died mid-way
    state["worker"] = Worker(world["tmp"], world["home"], api, world["extracts"], "worker-2")
    log = state["worker"].log_path
    wait_until(lambda: "left running by a stopped worker: marked crashed" in log.read_text(), 120,
               "the dead run marked crashed by the new worker", log)
    advance_now()
    wait_until(lambda: permit_access(svc, permit).state is State.ACTIVE, 300, "the permit in force",
          state["worker"].log_path)
    run_notifier(svc)
    run_notifier(svc)  # idempotent: a second pass sends nothing again
    with svc.engine.connect() as conn:
        delivered = conn.execute(select(LinkageRun).where(LinkageRun.permit_id == permit,
                                                          LinkageRun.status == "delivered")).all()
        events_ = [r.event for r in conn.execute(select(CaseEventRow).where(CaseEventRow.case_id == permit))]
        notes = [(r.user_id, r.topic) for r in conn.execute(select(NotificationRow).where(
            NotificationRow.subject == f"case:{permit}"))]
    assert len(delivered) == 1
    assert events_.count("delivered") == 1 and events_.count("activated") == 1
    activated = [user for user, topic in notes if topic == "case.activated"]
    assert activated and len(activated) == len(set(activated)), sorted(notes)  # nobody told twice


def test_the_web_process_hands_each_step_recorded_through_the_api_to_the_flows(tmp_path, monkeypatch):
    """With ``PREFECT_API_URL`` set, the API's lifespan subscribes the follower: a step taken through the REST API
    reaches flows.follow for its case; without it nothing is subscribed (the follow job catches up)."""
    from flows import follow as F
    from tests.factories import make_token, serve_in_thread
    from toisio import events
    from toisio.app.api import create_app

    svc = make_service(tmp_path / "home")
    staff = make_staff(svc)
    case = make_case(svc, staff, state="submitted").case_id
    seen = []
    monkeypatch.setattr(F, "follow", lambda svc_, subject, why="": seen.append((subject, why)) or F.Plan())
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never reached: follow() is replaced
    with serve_in_thread(create_app(svc)) as root:
        assert any(isinstance(h, F.Follower) for h in events._subscribers["*"])
        r = httpx.post(f"{root}/api/v1/cases/{case}/actions/confirm_complete", json={},
                       headers={"Authorization": f"Bearer {make_token(svc, 'hanna')}"}, timeout=10)
        assert r.status_code == 200, r.text
        follower = next(h for h in events._subscribers["*"] if isinstance(h, F.Follower))
        follower.wait_idle()
    assert seen == [(F.Subject("case", case), "permit.completeness_confirmed")]
    assert not any(isinstance(h, F.Follower) for h in events._subscribers["*"])  # unsubscribed at shutdown
    monkeypatch.delenv("PREFECT_API_URL")
    with serve_in_thread(create_app(svc)):
        assert not any(isinstance(h, F.Follower) for h in events._subscribers["*"])
