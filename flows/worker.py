"""``toisio worker``: one long-running process that serves all of Toisio's deployments against a persistent
Prefect server, so that the recurring jobs (:data:`flows.jobs.JOBS`) run on their schedules and every run is
visible in Prefect's UI.

The server is ``PREFECT_API_URL`` when set (production: a shared ``prefect server`` on PostgreSQL,
``PREFECT_API_DATABASE_CONNECTION_URL``).  Otherwise the worker starts an embedded one (:class:`EmbeddedServer`:
``prefect server start`` on 127.0.0.1, its database under ``$TOISIO_HOME/prefect``, the UI on) and stops it
when it stops.  Deployments are served with ``pause_on_shutdown=False``, so their schedules keep running
across restarts; the database stays the system of record, and every job is idempotent.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import httpx

from toisio.config import Settings

log = logging.getLogger("toisio.worker")

DEFAULT_PORT = 4200
#: how often the worker asks the server for runs to start (a resumed run starts within this; Prefect's default 10 s)
POLL_SECONDS = 2


class EmbeddedServer:
    """A Prefect server in a child process, with its database and logs under the service home."""

    def __init__(self, settings: Settings, port: int = DEFAULT_PORT, *, startup_seconds: float = 120):
        self.home = settings.home / "prefect"
        self.home.mkdir(parents=True, exist_ok=True)
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.ui_url = f"http://127.0.0.1:{port}/"
        env = {**os.environ, "PREFECT_HOME": str(self.home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_UI_ENABLED": "true", "PREFECT_SERVER_UI_ENABLED": "true"}
        env.pop("PREFECT_API_URL", None)
        self.log_path = self.home / "server.log"
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - held for the child's life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + startup_seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._log.close()
                raise RuntimeError(f"the Prefect server stopped at start (exit {self.proc.returncode}); "
                                   f"see {self.log_path}")
            try:
                if httpx.get(self.api_url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Prefect server did not answer within {startup_seconds:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def deployments():
    """Every recurring job as a deployment with its schedule (Helsinki time), and the flows that follow each
    application and output request (started and resumed by what users do, :mod:`flows.follow`)."""
    from prefect.schedules import Cron

    from flows.jobs import FLOWS, JOBS, TIMEZONE
    from flows.output_flow import output_review_flow
    from flows.permit_flow import application_flow

    # one run of each job at a time: a slow run (an extraction) is never overtaken by the next minute's
    jobs = [FLOWS[j.name].to_deployment(name=j.name, schedules=[Cron(j.cron, timezone=TIMEZONE)],
                                        description=j.doing, tags=["toisio", "scheduled"], concurrency_limit=1)
            for j in JOBS]
    return [*jobs,
            application_flow.to_deployment(name="application", tags=["toisio", "case"],
                                           description="follows one application from submission to its decision"),
            output_review_flow.to_deployment(name="output-review", tags=["toisio", "output"],
                                             description="follows one output request until it is released")]


def crash_leftovers() -> int:
    """Mark as crashed the runs of Toisio's deployments that a previous worker left running (killed mid-run), so
    that their concurrency slots are free and the jobs run again; returns how many.  One worker serves the
    deployments, so a run still *running* when it starts is one nobody executes any more."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=["toisio"]),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING,
                                                                       StateType.CANCELLING]))),
            sort=FlowRunSort.START_TIME_DESC, limit=200)
        for run in runs:
            client.set_flow_run_state(run.id, Crashed(message="the worker that ran it stopped; a new worker "
                                                              "continues from the database's state"), force=True)
            log.warning("flow run %s (%s) was left running by a stopped worker: marked crashed", run.name, run.id)
    return len(runs)


def run_worker(settings: Settings, *, port: int = DEFAULT_PORT) -> None:
    """Serve every deployment until stopped (Ctrl-C or SIGTERM), with an embedded server unless
    ``PREFECT_API_URL`` names one."""
    server = None
    if not os.environ.get("PREFECT_API_URL"):
        server = EmbeddedServer(settings, port)
        os.environ["PREFECT_API_URL"] = server.api_url
        log.info("Prefect server started: its UI is at %s (runs, schedules, logs)", server.ui_url)
    else:
        log.info("using the Prefect server at %s", os.environ["PREFECT_API_URL"])
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()  # Prefect read its settings when first imported; the URL is new

    def _stop(signum, frame):
        raise SystemExit(0)  # run the finally below: the embedded server stops with the worker

    signal.signal(signal.SIGTERM, _stop)
    try:
        from prefect import serve

        crash_leftovers()
        deps = deployments()
        log.info("serving %d deployments: %s", len(deps), ", ".join(d.name for d in deps))
        serve(*deps, pause_on_shutdown=False, print_starting_message=False, query_seconds=POLL_SECONDS)
    finally:
        if server is not None:
            server.stop()
