"""``toisio worker``: an embedded Prefect server, every recurring job served as a deployment with its schedule,
a run started through Prefect's API doing its work on the service's database; stopping the worker stops the
server."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import select

from flows.jobs import JOBS, TIMEZONE
from tests.factories import free_port, make_case, make_service, make_staff, wait_until
from toisio.notify import NotificationRow

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_the_worker_serves_every_job_on_its_schedule_and_runs_them(tmp_path):
    home = tmp_path / "home"
    svc = make_service(home)
    staff = make_staff(svc)
    case = make_case(svc, staff, state="submitted").case_id
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(TOISIO_HOME=str(home))
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "toisio.app.cli", "worker", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deployments = wait_until(lambda: (lambda d: d if len(d) == len(JOBS) + 2 else None)(
            httpx.post(f"{api}/deployments/filter", json={}, timeout=5).json()), 180, "every deployment served")
        by_name = {d["name"]: d for d in deployments}
        assert {"application", "output-review"} <= set(by_name)
        assert not by_name["application"]["schedules"]  # started by what users do, not by a clock
        for job in JOBS:
            [schedule] = by_name[job.name]["schedules"]
            assert schedule["schedule"]["cron"] == job.cron and schedule["schedule"]["timezone"] == TIMEZONE
            assert schedule["active"] and "toisio" in by_name[job.name]["tags"]
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200  # the UI
        # the server's scheduler plans the runs of every minute's jobs (it failed on SQLAlchemy 2.1, silently)
        planned = wait_until(lambda: httpx.post(f"{api}/flow_runs/filter", timeout=5, json={
            "deployments": {"id": {"any_": [by_name["notify"]["id"]]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED", "PENDING", "RUNNING", "COMPLETED"]}}}}).json(),
            90, "the notify job's runs scheduled")
        assert planned

        # started as Prefect's own client does (it also fetches the server's CSRF token), in its own process
        started = subprocess.run(
            [sys.executable, "-c", "from prefect.deployments import run_deployment; "
             "r = run_deployment('toisio-notify/notify', timeout=120); print(r.state.type.value)"],
            env={**env, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client")}, capture_output=True,
            text=True, timeout=180)
        assert started.stdout.strip().endswith("COMPLETED"), started.stdout[-2000:] + started.stderr[-2000:] + \
            (tmp_path / "worker.log").read_text()[-3000:]
        with svc.engine.connect() as conn:
            told = {r.user_id for r in conn.execute(select(NotificationRow).where(
                NotificationRow.subject == f"case:{case}"))}
        assert {"hanna", "harri"} <= told  # the handlers heard of the new application
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    # the embedded server stopped with the worker
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{api}/health", timeout=2)
    assert "its UI is at" in (tmp_path / "worker.log").read_text()
