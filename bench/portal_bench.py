"""Portal and API under load: ``toisio serve`` in its own process, clients over loopback HTTP.

* Portal pages: ``PORTAL_USERS`` (20) people signed in (password + one-time code, each their own
  session) each load their home page, their cases, one case page, the catalogue and the outputs
  page in turn for ``SECONDS`` seconds; p50/p95 per page and overall.  On SQLite, and on
  PostgreSQL when ``TOISIO_TEST_POSTGRES_URL`` (or ``BENCH_POSTGRES_URL``) points at a server.
* API on PostgreSQL: ``API_CLIENTS`` (50) clients read a case (``GET /api/v1/cases/{id}``, which also
  appends an audit event) and, separately, write a message on it; requests per second and p50/p95, beside
  the same clients on ``/api/v1/me`` (authentication only), on the health route, and on a bare FastAPI app
  (the framework's ceiling on this machine), all in the same run.
  The goal in issue 14 is >= 500 reads/s with p95 < 100 ms; the JSON says whether it was met.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import uvloop

from bench.permits_bench import _free_port
from tests.factories import PortalUser, make_case, make_staff, make_token
from toisio.config import load_settings
from toisio.service import Service

PORTAL_USERS = int(os.environ.get("BENCH_PORTAL_USERS", "20"))
API_CLIENTS = int(os.environ.get("BENCH_API_CLIENTS_PG", "50"))
SECONDS = float(os.environ.get("BENCH_PORTAL_SECONDS", "10"))


def _pg_database(url: str) -> str:
    import sqlalchemy as sa

    name = f"toisio_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.rsplit("/", 1)[0] + "/" + name


class _Server:
    def __init__(self, home: Path, database_url: str, workers: int = 1):
        self.port = _free_port()
        env = {**os.environ, "TOISIO_HOME": str(home)}
        if database_url:
            env["TOISIO_DATABASE_URL"] = database_url
        self.proc = subprocess.Popen([sys.executable, "-m", "toisio.app.cli", "serve", "--port", str(self.port),
                                      "--workers", str(workers)], env=env, stderr=subprocess.DEVNULL)
        self.root = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                if httpx.get(self.root + "/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("toisio serve did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _service(home: Path, database_url: str) -> Service:
    settings = load_settings(home=home, database_url=database_url) if database_url else load_settings(home=home)
    return Service(settings)  # its engine migrates the database on first use


def _summary(latencies: list[float], elapsed: float, errors: int, clients: int) -> dict:
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    return {"requests": len(latencies), "errors": errors, "requests_per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": round(q[49] * 1000, 1), "p95_ms": round(q[94] * 1000, 1), "clients": clients}


def bench_pages(home: Path, database_url: str = "") -> dict:
    svc = _service(home, database_url)
    staff = make_staff(svc)
    case = make_case(svc, staff, state="submitted").case_id
    people = [PortalUser(svc, f"reader{i}", ("handler",)) for i in range(PORTAL_USERS)]
    server = _Server(home, database_url)
    pages = ["/", "/cases", f"/cases/{case}", "/catalogue", "/outputs"]
    per_page: dict[str, list[float]] = {p: [] for p in pages}
    errors = 0
    lock = threading.Lock()
    try:
        clients = []
        for p in people:
            c = httpx.Client(base_url=server.root, timeout=60, headers={"Accept-Language": "en"})
            token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text).group(1)
            r = c.post("/login", data={"user_id": p.user_id, "password": p.PASSWORD, "code": p.code(),
                                       "csrf_token": token})
            if r.status_code != 303:
                raise RuntimeError(f"sign-in failed for {p.user_id}: {r.status_code}")
            clients.append(c)
        stop = time.perf_counter() + SECONDS

        def worker(c: httpx.Client, offset: int):
            nonlocal errors
            i = offset
            while time.perf_counter() < stop:
                page = pages[i % len(pages)]
                t = time.perf_counter()
                r = c.get(page)
                took = time.perf_counter() - t
                with lock:
                    per_page[page].append(took)
                    errors += r.status_code != 200
                i += 1

        threads = [threading.Thread(target=worker, args=(c, k)) for k, c in enumerate(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        for c in clients:
            c.close()
    finally:
        server.close()
    every = [x for v in per_page.values() for x in v]
    return {"database": "postgresql" if database_url else "sqlite", "users": PORTAL_USERS, "seconds": SECONDS,
            "overall": _summary(every, elapsed, errors, PORTAL_USERS),
            "pages": {p.replace(case, "{case}"): _summary(v, elapsed, 0, PORTAL_USERS) for p, v in per_page.items()}}


async def _client(port: int, request: bytes, stop: float, latencies: list[float], failures: list[int]) -> None:
    """One keep-alive HTTP/1.1 client on a raw socket, on uvloop: cheap on the cores the server shares (50 httpx
    threads took about half a core of their own)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop:
            t = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - t)
            status = int(head[9:12])
            if status >= 300:
                failures.append(status)
    finally:
        writer.close()


def _api_load(root: str, token: str, method: str, path: str, body: dict | None) -> dict:
    """``API_CLIENTS`` clients sending one request after another for ``SECONDS`` seconds."""
    port = int(root.rsplit(":", 1)[1])
    data = json.dumps(body).encode() if body is not None else b""
    request = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
               + (f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n" if data else "")
               + "\r\n").encode() + data
    latencies: list[float] = []
    failures: list[int] = []

    async def main() -> float:
        stop = time.perf_counter() + SECONDS
        start = time.perf_counter()
        await asyncio.gather(*[_client(port, request, stop, latencies, failures) for _ in range(API_CLIENTS)])
        return time.perf_counter() - start

    elapsed = uvloop.run(main())  # the clients share the server's cores: libuv's loop costs them less
    return _summary(latencies, elapsed, len(failures), API_CLIENTS)


_BARE_APP = """
from fastapi import FastAPI

app = FastAPI()


@app.get("/api/v1/health")
def health() -> dict:
    return {"status": "ok"}
"""


def _bare_fastapi(workers: int) -> dict:
    """The ceiling on this machine: a FastAPI app with one synchronous route and nothing else (no database, no
    middleware), served by uvicorn with the same workers and loaded by the same clients."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        Path(d, "bare_app.py").write_text(_BARE_APP)
        port = _free_port()
        proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "bare_app:app", "--port", str(port), "--workers",
                                 str(workers), "--log-level", "warning"], cwd=d, stderr=subprocess.DEVNULL)
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            return _api_load(f"http://127.0.0.1:{port}", "none", "GET", "/api/v1/health", None)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _pg_settings(url: str) -> dict:
    """The server settings that decide what a commit costs (the test server runs with fsync off)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        out = {name: conn.execute(sa.text(f"SHOW {name}")).scalar() for name in ("fsync", "synchronous_commit")}
    engine.dispose()
    return out


def bench_api_postgres(home: Path, database_url: str) -> dict:
    """The API with one server process and with ``BENCH_SERVE_WORKERS`` (default: one per core), measured in the
    same run against the same database, beside two baselines measured in the same run with the same clients:
    a bare FastAPI app (the framework's ceiling here) and Toisio's own unauthenticated health route."""
    svc = _service(home, database_url)
    staff = make_staff(svc)
    token = make_token(svc, "hanna")
    runs = []
    for workers in dict.fromkeys((1, int(os.environ.get("BENCH_SERVE_WORKERS", os.cpu_count() or 1)))):
        # a new case for each run: the writes of a run lengthen its case's history, which a read returns
        case = make_case(svc, staff, state="submitted").case_id
        server = _Server(home, database_url, workers)
        try:
            health = _api_load(server.root, token, "GET", "/api/v1/health", None)
            me = _api_load(server.root, token, "GET", "/api/v1/me", None)
            read = _api_load(server.root, token, "GET", f"/api/v1/cases/{case}", None)
            write = _api_load(server.root, token, "POST", f"/api/v1/cases/{case}/messages",
                              {"text": "benchmark message", "public": False})
        finally:
            server.close()
        runs.append({"workers": workers, "bare_fastapi": _bare_fastapi(workers), "health": health,
                     "authenticated_me": me, "read_case": read, "write_message": write})
    best = max(runs, key=lambda r: r["read_case"]["requests_per_second"])
    goal = best["read_case"]["requests_per_second"] >= 500 and best["read_case"]["p95_ms"] < 100
    return {"database": "postgresql", "cores": os.cpu_count(), "runs": runs,
            "postgresql_settings": _pg_settings(database_url),
            "read_case": best["read_case"], "write_message": best["write_message"], "workers": best["workers"],
            "read_case_share_of_bare_fastapi": round(best["read_case"]["requests_per_second"]
                                                     / best["bare_fastapi"]["requests_per_second"], 3),
            "goal": ">= 500 reads/s with p95 < 100 ms", "goal_met": goal,
            "note": "the clients (asyncio, keep-alive, one process) and PostgreSQL run on the same cores as the "
                    "server; each case read authenticates its token, checks the case against the audit chain "
                    "and has its read recorded on the chain before it answers"}


def run(work: Path) -> dict:
    out: dict = {"portal_pages": [bench_pages(work / "pages-sqlite")]}
    pg = os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("TOISIO_TEST_POSTGRES_URL")
    if pg:
        out["portal_pages"].append(bench_pages(work / "pages-pg", _pg_database(pg)))
        out["api_postgresql"] = bench_api_postgres(work / "api-pg", _pg_database(pg))
    else:
        out["api_postgresql"] = {"skipped": "no PostgreSQL server (set BENCH_POSTGRES_URL or TOISIO_TEST_POSTGRES_URL)"}
    return out
