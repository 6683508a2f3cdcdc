"""Prefect running the service, measured on a real worker against a persistent Prefect server:

* the flow-run overhead of one human step: from the step recorded (``act``) to the case's run, resumed, waiting at
  the next step; the baseline in the same run is the step alone (the same ``act`` on a case nobody follows), so
  the JSON gives what following costs (``BENCH_FLOW_STEPS`` steps, median and spread);
* from the decider's approval to an active permit with a ready workspace through the worker (the ``advance``
  deployment started at once, as the application flow does on approval), for ``BENCH_DELIVERY_PERSONS`` persons
  (default 20,000, the demo's extract).
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.factories import make_case, make_form, make_service, make_staff

STEPS = int(os.environ.get("BENCH_FLOW_STEPS", "8"))
PERSONS = int(os.environ.get("BENCH_DELIVERY_PERSONS", "20000"))
PATH = (("hanna", "confirm_complete", "complete"), ("hanna", "request_estimates", "estimates_requested"))


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _summary(times: list[float]) -> dict:
    return {"median_s": round(statistics.median(times), 2), "min_s": round(min(times), 2),
            "max_s": round(max(times), 2), "runs": [round(t, 2) for t in times]}


def _wait(check, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise RuntimeError(f"{what} not within {seconds:.0f} s")


def _waiting_at(tag: str, state: str):
    from flows.pauses import state_of_key, tagged_runs

    def check():
        runs = tagged_runs(tag)
        return bool(runs) and runs[0].state.is_paused() and state_of_key(
            runs[0].state.state_details.pause_key or "") == state

    _wait(check, 180, f"{tag} waiting in {state}")


def run(work: Path) -> dict:
    from prefect.context import refresh_global_settings_context

    from flows.follow import Follower
    from flows.worker import EmbeddedServer
    from permits.lifecycle import State
    from permits.service import act, permit_access, submit_form
    from pseudonymise.synthetic import generate
    from toisio import events
    from toisio.config import load_settings

    extracts = work / "extracts"
    generate(extracts, persons=PERSONS, seed=7, defect_rate=0.002)
    home = work / "home"
    svc = make_service(home, extracts_dir=extracts)
    staff = make_staff(svc)
    server = EmbeddedServer(load_settings(home=work / "prefect-home"), _port())
    os.environ.update(PREFECT_API_URL=server.api_url, PREFECT_HOME=str(work / "client"))
    refresh_global_settings_context()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}, "TOISIO_HOME": str(home),
           "PREFECT_API_URL": server.api_url, "TOISIO_EXTRACTS_DIR": str(extracts), "SPARK_LOCAL_IP": "127.0.0.1"}
    log = open(work / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen([sys.executable, "-m", "toisio.app.cli", "worker"], env=env, stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True)
    follower = Follower(svc)
    try:
        _wait(lambda: len(httpx.post(f"{server.api_url}/deployments/filter", json={}, timeout=5).json()) >= 10,
              240, "the worker's deployments")
        # baseline: the same steps on cases nobody follows
        baseline = []
        while len(baseline) < STEPS:
            case = submit_form(svc, staff["alice"], make_form()).case_id
            for actor, action, _ in PATH:
                t = time.perf_counter()
                act(svc, staff[actor], case, action)
                baseline.append(time.perf_counter() - t)
        events.subscribe("*", follower)
        followed = []
        while len(followed) < STEPS:
            case = submit_form(svc, staff["alice"], make_form()).case_id
            follower.wait_idle()
            _waiting_at(f"case:{case}", "submitted")
            for actor, action, waits_at in PATH:
                t = time.perf_counter()
                act(svc, staff[actor], case, action)
                follower.wait_idle()
                _waiting_at(f"case:{case}", waits_at)
                followed.append(time.perf_counter() - t)
        events.unsubscribe("*", follower)
        # approval to an active permit with its workspace, through the worker
        permit = make_case(svc, staff, state="approved").case_id
        from prefect.deployments import run_deployment

        t = time.perf_counter()
        run_deployment("toisio-advance/advance", timeout=0)
        _wait(lambda: permit_access(svc, permit).state is State.ACTIVE, 1800, "the permit in force")
        to_active = time.perf_counter() - t
    finally:
        events.unsubscribe("*", follower)
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=120)
        log.close()
        server.stop()
    f, b = _summary(followed), _summary(baseline)
    return {"steps": STEPS, "human_step_with_flow_resumed_and_waiting_again": f, "human_step_alone": b,
            "flow_overhead_per_step_median_s": round(f["median_s"] - b["median_s"], 2),
            "worker_poll_seconds": __import__("flows.worker", fromlist=["POLL_SECONDS"]).POLL_SECONDS,
            "persons": PERSONS, "approval_to_active_with_workspace_through_the_worker_s": round(to_active, 2)}
