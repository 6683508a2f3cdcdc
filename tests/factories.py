"""Plain factory functions for test objects."""

from __future__ import annotations

import contextlib
from datetime import date
from pathlib import Path

from permits.scope import PermitScope
from toisio.config import load_settings
from toisio.service import Service

#: The submission day the case factories use unless told otherwise.
DAY = date(2026, 3, 2)


def make_service(home: Path, **overrides) -> Service:
    """A service with its own home (database, keys, quarantine) under ``home``."""
    return Service(load_settings(home=home, **{"spark_master": "local[2]", "spark_shuffle_partitions": 2,
                                               **overrides}))


def make_scope(**overrides) -> PermitScope:
    """A diabetes cohort scope; override any top-level field."""
    raw = {
        "permit_id": "TOISIO-2026-1",
        "delivery": "pseudonymised",
        "cohort": {
            "registry": "hilmo", "code_columns": ["main_dg", "secondary_dg"], "code_prefixes": ["E11"],
            "period": {"start": "2005-01-01", "end": "2020-12-31"}, "controls_per_case": 2,
        },
        "registries": {
            "population": {"variables": ["sex", "birth_date", "municipality", "death_date"]},
            "hilmo": {"variables": ["admission_date", "main_dg", "secondary_dg"],
                      "period": {"start": "2005-01-01", "end": "2023-12-31"}},
            "kela_purchases": {"variables": ["purchase_date", "atc", "ddd"],
                               "period": {"start": "2005-01-01", "end": "2023-12-31"}},
        },
        "generalise": {"dates": "month", "age_bands": [0, 40, 60, 80], "municipality": "wellbeing_county"},
    }
    raw.update(overrides)
    return PermitScope.model_validate(raw)


PLAN = b"Research plan: type 2 diabetes and cardiovascular outcomes, version 1.\n"


def plan_sha256() -> str:
    import hashlib

    return hashlib.sha256(PLAN).hexdigest()


def store_plan(svc):
    """Put the default research plan into the service's attachment store."""
    from permits.attachments import store_bytes

    return store_bytes(svc, "plan.pdf", PLAN)


def make_form(**overrides):
    """A complete data permit application by user 'alice'; override any top-level field."""
    from permits.application import ApplicationForm

    raw = {
        "kind": "data_permit",
        "title": "Type 2 diabetes and cardiovascular outcomes",
        "applicant": {"name": "Alice Researcher", "email": "alice@uni.example", "affiliation": "University",
                      "user_id": "alice"},
        "organisation": {"name": "Example University", "business_id": "0245896-3"},
        "billing": {"address": "PO Box 1, 00014 Example University", "reference": "PRJ-1"},
        "purpose": "scientific_research",
        "research_plan": {"filename": "plan.pdf", "sha256": plan_sha256()},
        "extraction": {
            "target_group": "persons with E11 in Hilmo 2015-2020 and two controls each",
            "registries": {
                "population": {"variables": ["sex", "birth_date"]},
                "hilmo": {"variables": ["admission_date", "main_dg"],
                          "period": {"start": "2015-01-01", "end": "2020-12-31"}},
            },
            "cohort": {"registry": "hilmo", "code_columns": ["main_dg"], "code_prefixes": ["E11"],
                       "period": {"start": "2015-01-01", "end": "2020-12-31"}, "controls_per_case": 2},
        },
        "minimisation_justification": "only the variables the analysis plan uses",
        "pseudonymised_data_justification": "individual follow-up over time cannot be done on aggregate tables",
        "processors": [{"name": "Bob Analyst", "user_id": "bob", "organisation": "Example University",
                        "confidentiality_undertaking_signed": "2026-01-10"}],
        "requested_validity": {"start": "2026-03-01", "end": "2028-12-31"},
    }
    raw.update(overrides)
    return ApplicationForm.model_validate(raw)


def make_user(svc, user_id: str, roles=(), registries=(), *, name: str | None = None, email: str | None = None):
    """A user with service roles (no local credentials: tests sign in with :func:`make_token`); returns the Actor."""
    from toisio.identity import actor_for, create_user, operator

    create_user(svc, operator("test"), user_id, name or user_id.title(), email or f"{user_id}@x.example", roles,
                registries, local=False)
    with svc.engine.connect() as conn:
        return actor_for(conn, user_id)


def make_token(svc, user, *, name: str = "test", days: int = 90) -> str:
    """A new API token for a user (an Actor or a user id), issued as an operator would."""
    from toisio.identity import create_token, operator

    user_id = user if isinstance(user, str) else user.user_id
    return create_token(svc, operator("test"), name, user_id=user_id, days=days).value


def make_staff(svc):
    """Users for every service role (and the default research plan stored); returns {user_id: Actor}."""
    store_plan(svc)
    people = {
        "hanna": ("handler",), "harri": ("handler",), "dora": ("decider",), "kela1": ("controller",),
        "thl1": ("controller",), "oscar": ("output_checker",), "aud": ("auditor",),
    }
    registries = {"kela1": ("kela_purchases",), "thl1": ("hilmo", "population")}
    actors = {uid: make_user(svc, uid, roles, registries.get(uid, ()), email=f"{uid}@authority.example")
              for uid, roles in people.items()}
    actors["alice"] = make_user(svc, "alice", name="Alice Researcher", email="alice@uni.example")
    return actors


def make_delivery(directory: Path, permit_id: str, *, blob_bytes: int = 0) -> Path:
    """A small delivery for a permit: a person table in Parquet, an optional large blob, a valid manifest."""
    import hashlib

    import pandas as pd

    from pseudonymise import deliver
    from pseudonymise.manifest import Manifest

    (directory / "persons").mkdir(parents=True)
    part = directory / "persons" / "part-00000.parquet"
    pd.DataFrame({"pseudonym": ["a1", "b2", "c3"], "sex": [1, 2, 2], "birth_year": [1950, 1961, 1977]}
                 ).to_parquet(part)
    if blob_bytes:
        (directory / "extra").mkdir()
        (directory / "extra" / "blob.bin").write_bytes(b"\x01" * blob_bytes)
    manifest = Manifest.model_validate({
        "permit_id": permit_id, "delivery": "pseudonymised", "scope_sha256": "0" * 64, "scope_file_sha256": "0" * 64,
        "key": {"key_id": f"{permit_id}/v1/test", "version": 1, "pseudonym": "test"},
        "software": {"toisio": "test"}, "generalisation": {}, "cohort": None,
        "counts": {"population": {"rows_in": 3, "valid": 3, "quarantined": {}, "quarantined_total": 0,
                                  "delivered": 3}},
        "datasets": {"persons": {"rows": 3, "schema": [{"name": "pseudonym", "type": "string"}],
                                 "files": [{"path": "persons/part-00000.parquet",
                                            "sha256": hashlib.sha256(part.read_bytes()).hexdigest(),
                                            "bytes": part.stat().st_size, "rows": 3}]}},
    })
    deliver.write_json(directory / "manifest.json", manifest.to_json())
    return directory


def serve_in_thread(app, log_level: str = "error"):
    """Run an ASGI app with uvicorn on a free loopback port in a thread; a context manager giving its URL."""
    import contextlib
    import socket
    import threading
    import time

    import uvicorn

    @contextlib.contextmanager
    def running():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level=log_level))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.time() + 20
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)

    return running()


def extraction_subprocess_code(extracts: Path, out: Path, home: Path, prelude: str = "",
                               master: str = "local[2]") -> str:
    """Python source that runs the pipeline for ``make_scope()`` in a fresh process (``prelude`` may patch
    ``pseudonymise.pipeline``, imported as ``P``) on the Spark ``master``."""
    return ("import sys; from pathlib import Path; sys.path.insert(0, '.');"
            "from tests.factories import make_scope, make_service;"
            "import pseudonymise.pipeline as P;" + prelude +
            f"P.run_extraction(make_scope(), Path({str(extracts)!r}), Path({str(out)!r}),"
            f" make_service(Path({str(home)!r}), spark_master={master!r}))")


def who(svc, user_id: str):
    """The Actor of an existing user (as the service's own jobs see them; no sign-in)."""
    from toisio.identity import actor_for

    with svc.engine.connect() as conn:
        return actor_for(conn, user_id)


def invoke_as(svc, user: str | None, args: list[str], app=None):
    """Run a ``toisio`` command signed in as ``user`` (with a fresh token in TOISIO_TOKEN; None: not signed in)."""
    from typer.testing import CliRunner

    if app is None:
        from toisio.app.cli import app
    env = {"TOISIO_TOKEN": make_token(svc, user)} if user else {"TOISIO_TOKEN": ""}
    return CliRunner().invoke(app, args, env=env)


#: The way a data permit goes from submission to an active permit: (state reached, who acts, action, days
#: after submission, parameters).  make_case() walks it through the domain functions up to the state asked for.
PERMIT_PATH = [
    ("submitted", None, None, 0, {}),
    ("complete", "hanna", "confirm_complete", 0, {}),
    ("estimates_requested", "hanna", "request_estimates", 0, {}),
    (None, "thl1", "record_estimate", 3, {"registry": "hilmo", "cost_eur": 800, "working_days": 20}),
    ("estimates_received", "thl1", "record_estimate", 4, {"registry": "population", "cost_eur": 200,
                                                          "working_days": 5}),
    ("estimate_sent", "hanna", "send_estimate", 5, {}),
    ("accepted", "alice", "accept", 6, {}),
    ("presented", "hanna", "present", 7, {"summary": "all in order"}),
    ("approved", "dora", "approve", 8, {"valid_until": "2028-12-31"}),
    ("extraction", "hanna", "start_extraction", 9, {}),
    ("delivered", "hanna", "mark_delivered", 30, {"manifest_sha256": "f" * 64}),
    ("active", "hanna", "activate", 31, {}),
]


def make_case(svc, staff, *, state: str = "active", form=None, day=None, **form_overrides):
    """A case brought to ``state`` through the domain functions (as the people of :func:`make_staff` would);
    returns its CaseView.  ``day`` is the submission date (default 2026-03-02); form overrides go to
    :func:`make_form`."""
    from datetime import timedelta

    from permits.lifecycle import State
    from permits.service import act, create_draft, show, submit_form

    target = State(state)
    day = day or DAY
    form = form or make_form(**form_overrides)
    if target is State.DRAFT:
        return show(svc, staff["alice"], create_draft(svc, staff["alice"], form))
    reached = [s for s, *_ in PERMIT_PATH if s]
    if target.value not in reached:
        raise ValueError(f"make_case reaches {', '.join(reached)} (not {state})")
    view = submit_form(svc, staff["alice"], form, today=day)
    for reaches, user, action, days, params in PERMIT_PATH[1:]:
        if view.state is target:
            break
        view = act(svc, staff[user], view.case_id, action, today=day + timedelta(days=days), **params)
        if reaches == target.value:
            break
    return view


def make_workspace(svc, staff, *, permit: str | None = None, tmp: Path | None = None):
    """An active data permit (made with :func:`make_case` unless given) with its workspace created by the
    handler from a small delivery; returns (permit_id, {analyst: workspace token})."""
    import tempfile
    from datetime import date, timedelta

    from secure_env.workspace import provision

    permit = permit or make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id
    tmp = tmp or Path(tempfile.mkdtemp(prefix="toisio-delivery-"))
    tokens = provision.create(svc, staff["hanna"], permit, make_delivery(tmp / f"delivery-{permit}", permit))
    return permit, tokens


#: make_output_request's way from a new request to a released one: (state reached, step)
OUTPUT_PATH = ("pending", "submitted", "partially_reviewed", "reviewed", "approved", "released")


def make_output_request(svc, staff, *, state: str = "submitted", permit: str | None = None,
                        rows: str = "k,n\na,50\nb,60\n"):
    """An output request by the analyst 'bob' with one table from the permit's workspace, brought to ``state``
    through the airlock's domain functions by the checkers 'oscar' and 'olga' (made if missing); returns
    (request_id, permit_id)."""
    from secure_env.airlock import outputs as A
    from secure_env.workspace.provision import paths
    from toisio.identity import actor_for

    if state not in OUTPUT_PATH:
        raise ValueError(f"make_output_request reaches {', '.join(OUTPUT_PATH)} (not {state})")
    if permit is None:
        permit, _ = make_workspace(svc, staff)
    with svc.engine.connect() as conn:
        bob = actor_for(conn, "bob")
    checkers = [staff.get("oscar") or make_user(svc, "oscar", ("output_checker",)),
                staff.get("olga") or make_user(svc, "olga", ("output_checker",))]
    table = paths(svc, permit).root / "scratch" / "table.csv"
    table.write_text(rows)
    request_id = A.create_request(svc, bob, permit)
    A.add_file(svc, bob, request_id, table, {"description": "persons by k", "method": "count", "index": "k"})
    steps = [lambda: A.submit(svc, bob, request_id)]
    for c in checkers:
        steps.append(lambda c=c: (A.vote(svc, c, request_id, "table.csv", "approve"),
                                  A.submit_review(svc, c, request_id)))
    steps.append(lambda: A.decide(svc, checkers[0], request_id, "approve"))
    steps.append(lambda: A.release(svc, checkers[1], request_id))
    for step in steps[:OUTPUT_PATH.index(state)]:
        step()
    assert A.request_state(svc, request_id).value == state
    return request_id, permit


class PortalUser:
    """A user with a local account (password and TOTP) who signs in to the portal; ``code()`` gives a fresh
    one-time code each call (the next time step when the current one was used: the service refuses a code
    used before)."""

    PASSWORD = "correct horse battery staple 42"

    def __init__(self, svc, user_id: str, roles=(), registries=(), *, name: str | None = None):
        import pyotp

        from toisio.identity import create_user, operator

        enrolment = create_user(svc, operator("test"), user_id, name or user_id.title(), f"{user_id}@x.example",
                                roles, registries, password=self.PASSWORD)
        self.user_id, self.totp, self._used = user_id, pyotp.TOTP(enrolment.totp_secret), set()

    def code(self) -> str:
        import time

        for step in range(0, 3):
            at = time.time() + 30 * step
            value = self.totp.at(at)
            key = int(at // 30)
            if key not in self._used:
                self._used.add(key)
                return value
        raise RuntimeError("three sign-ins within a minute: wait for the next time step")


def portal_login(client, user: PortalUser, *, next_path: str = "/"):
    """Sign a TestClient in to the portal as ``user`` (through the sign-in form, with its CSRF token)."""
    page = client.get("/login")
    token = csrf_of(page.text)
    return client.post("/login", data={"user_id": user.user_id, "password": user.PASSWORD, "code": user.code(),
                                       "next": next_path, "csrf_token": token}, follow_redirects=False)


def csrf_of(html: str) -> str:
    """The CSRF token of a rendered portal page."""
    import re

    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    if not found:
        raise AssertionError("no CSRF token on the page")
    return found.group(1)


def free_port() -> int:
    """A free TCP port on the loopback (for a server a test starts)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, seconds: float, what: str, log: Path | None = None, *, every: float = 0.3):
    """Call ``check`` until it returns something true (an HTTP error counts as not yet); raise naming ``what``
    (and the tail of ``log``) after ``seconds``."""
    import time

    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            found = check()
        except httpx.HTTPError:
            found = None
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"{what} within {seconds:.0f} s" + (f"\n{log.read_text()[-4000:]}" if log else ""))


@contextlib.contextmanager
def spark_standalone_cluster(work: Path, workers: int = 2, cores: int = 1, memory: str = "1g"):
    """A Spark standalone master and ``workers`` workers on this machine (the launch classes ship with pyspark),
    yielding the master's ``spark://`` URL once every worker has registered; all stopped afterwards."""
    import json
    import os
    import subprocess
    import time
    import urllib.request

    import pyspark

    spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
    port, ui = free_port(), free_port()
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_LOG_DIR": str(work / "logs"),
           "SPARK_WORKER_DIR": str(work / "workers")}
    url = f"spark://127.0.0.1:{port}"
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stack = contextlib.ExitStack()  # the log files, closed when the cluster stops

    def log(name: str):
        return stack.enter_context(open(logs / name, "wb"))  # noqa: SIM115 - closed by the stack

    procs = [subprocess.Popen([str(spark_class), "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(ui)], env=env,
                              stdout=log("master.log"), stderr=subprocess.STDOUT)]
    try:
        for i in range(workers):
            procs.append(subprocess.Popen(
                [str(spark_class), "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores",
                 str(cores), "--memory", memory, "--webui-port", str(free_port()), "--work-dir",
                 str(work / f"worker-{i}")], env=env, stdout=log(f"worker-{i}.log"),
                stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 120
        while True:
            try:
                state = json.load(urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=2))
                if sum(w.get("state") == "ALIVE" for w in state.get("workers", [])) >= workers:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the standalone cluster did not start; see {logs}")
            time.sleep(0.5)
        yield url
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        stack.close()


@contextlib.contextmanager
def audit_triggers_lifted(svc):
    """A transaction in which the audit log's append-only triggers are lifted, as someone with full access to
    the database (a superuser) would do before editing it."""
    with svc.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_event DISABLE TRIGGER USER")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_update")
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS audit_event_no_delete")
        yield conn
