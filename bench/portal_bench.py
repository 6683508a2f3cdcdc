"""Portal and API under load: ``toisio serve`` in its own process, clients over loopback HTTP.

* Portal pages: ``PORTAL_USERS`` (20) people signed in (password + one-time code, each their own
  session) each load their home page, their cases, one case page, the catalogue and the outputs
  page in turn for ``SECONDS`` seconds; p50/p95 per page and overall.  On SQLite, and on
  PostgreSQL when ``TOISIO_TEST_POSTGRES_URL`` (or ``BENCH_POSTGRES_URL``) points at a server.
* API on PostgreSQL: ``API_CLIENTS`` (50) clients read a case (``GET /api/v1/cases/{id}``, which also
  appends an audit event) and, separately, write a message on it; requests per second and p50/p95.
  The goal in issue 14 is >= 500 reads/s with p95 < 100 ms; the JSON says whether it was met.
"""

from __future__ import annotations

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


def _api_load(root: str, token: str, method: str, path: str, body: dict | None) -> dict:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.perf_counter() + SECONDS

    def worker():
        nonlocal errors
        with httpx.Client(base_url=root, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = c.request(method, path, json=body)
                took = time.perf_counter() - t
                with lock:
                    latencies.append(took)
                    errors += r.status_code not in (200, 201)

    threads = [threading.Thread(target=worker) for _ in range(API_CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _summary(latencies, time.perf_counter() - start, errors, API_CLIENTS)


def bench_api_postgres(home: Path, database_url: str) -> dict:
    """The API with one server process (the baseline) and with ``BENCH_SERVE_WORKERS`` (default: one per core),
    measured in the same run against the same database."""
    svc = _service(home, database_url)
    staff = make_staff(svc)
    case = make_case(svc, staff, state="submitted").case_id
    token = make_token(svc, "hanna")
    runs = []
    for workers in dict.fromkeys((1, int(os.environ.get("BENCH_SERVE_WORKERS", os.cpu_count() or 1)))):
        server = _Server(home, database_url, workers)
        try:
            read = _api_load(server.root, token, "GET", f"/api/v1/cases/{case}", None)
            write = _api_load(server.root, token, "POST", f"/api/v1/cases/{case}/messages",
                              {"text": "benchmark message", "public": False})
        finally:
            server.close()
        runs.append({"workers": workers, "read_case": read, "write_message": write})
    best = max(runs, key=lambda r: r["read_case"]["requests_per_second"])
    goal = best["read_case"]["requests_per_second"] >= 500 and best["read_case"]["p95_ms"] < 100
    return {"database": "postgresql", "cores": os.cpu_count(), "runs": runs,
            "read_case": best["read_case"], "write_message": best["write_message"], "workers": best["workers"],
            "goal": ">= 500 reads/s with p95 < 100 ms", "goal_met": goal,
            "note": "the load generator (50 httpx client threads) runs on the same cores as the server"}


def run(work: Path) -> dict:
    out: dict = {"portal_pages": [bench_pages(work / "pages-sqlite")]}
    pg = os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("TOISIO_TEST_POSTGRES_URL")
    if pg:
        out["portal_pages"].append(bench_pages(work / "pages-pg", _pg_database(pg)))
        out["api_postgresql"] = bench_api_postgres(work / "api-pg", _pg_database(pg))
    else:
        out["api_postgresql"] = {"skipped": "no PostgreSQL server (set BENCH_POSTGRES_URL or TOISIO_TEST_POSTGRES_URL)"}
    return out
