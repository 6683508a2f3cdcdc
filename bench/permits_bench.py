"""Permit service benchmark: API throughput and latency, concurrent writers, report speed.

* API: ``toisio serve`` in its own process on SQLite; ``CLIENTS`` client threads send
  authenticated requests for ``SECONDS`` seconds each to a read (case view, which also appends
  an audit event) and a write (a remark on a case).  Reports requests/s and p50/p95 latency.
* 20 concurrent writers append 25 remarks each to one case through the service layer; the
  check is that no update is lost and the audit chain verifies afterwards.
* ``toisio report`` indicators over 10,000 applications with full event histories, inserted in
  bulk (the report's input, not the service path, is what is measured there).
"""

from __future__ import annotations

import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
from sqlalchemy import insert

from permits.models import CaseEventRow, CaseRow
from permits.report import build
from permits.service import act, submit_form
from tests.factories import make_form, make_staff, make_token, make_user, store_plan
from toisio import audit
from toisio.config import load_settings
from toisio.service import Service

CLIENTS = int(os.environ.get("BENCH_API_CLIENTS", "8"))
SECONDS = float(os.environ.get("BENCH_API_SECONDS", "10"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load(base: str, token: str, method: str, path: str, body: dict | None) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + SECONDS

    def worker():
        nonlocal errors
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = c.request(method, path, json=body)
                latencies.append(time.perf_counter() - t)
                if r.status_code != 200:
                    errors += 1

    threads = [threading.Thread(target=worker) for _ in range(CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return {"requests": len(latencies), "errors": errors, "requests_per_second": round(len(latencies) / elapsed, 1),
            "p50_ms": round(q[49] * 1000, 1), "p95_ms": round(q[94] * 1000, 1), "clients": CLIENTS}


def bench_api(home: Path) -> dict:
    svc = Service(load_settings(home=home))
    staff = make_staff(svc)
    case = submit_form(svc, staff["alice"], make_form()).case_id
    token = make_token(svc, make_user(svc, "bench-handler", ("handler",)))
    port = _free_port()
    env = {**os.environ, "TOISIO_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-m", "toisio.app.cli", "serve", "--port", str(port)], env=env)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        for _ in range(100):
            try:
                httpx.get(base + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        read = _load(base, token, "GET", f"/cases/{case}", None)
        write = _load(base, token, "POST", f"/cases/{case}/actions/remark", {"text": "benchmark remark"})
    finally:
        server.terminate()
        server.wait(timeout=20)
    with svc.engine.connect() as conn:
        ok = audit.verify(conn, svc.audit_key).ok
    return {"read_case_view": read, "write_remark": write, "audit_chain_intact": ok}


def bench_writers(home: Path, writers: int = 20, each: int = 25) -> dict:
    svc = Service(load_settings(home=home))
    staff = make_staff(svc)
    case = submit_form(svc, staff["alice"], make_form()).case_id
    actors = [make_user(svc, f"w{i}", ("handler",)) for i in range(writers)]
    errors: list[str] = []

    def worker(a):
        for k in range(each):
            try:
                act(svc, a, case, "remark", text=f"{a.user_id} {k}")
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(repr(exc))

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(a,)) for a in actors]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    with svc.engine.connect() as conn:
        remarks = sum(1 for e in audit.events(conn, subject=f"case:{case}") if e.action == "case.remarked")
        chain = audit.verify(conn, svc.audit_key)
    return {"writers": writers, "each": each, "expected": writers * each, "recorded": remarks,
            "lost_updates": writers * each - remarks, "errors": len(errors), "seconds": round(elapsed, 2),
            "writes_per_second": round(remarks / elapsed, 1), "audit_chain_intact": chain.ok,
            "audit_entries": chain.checked}


def bench_report(home: Path, n: int = 10_000) -> dict:
    svc = Service(load_settings(home=home))
    store_plan(svc)
    make_user(svc, "alice")
    rnd = random.Random(7)
    form = make_form().model_dump_json()
    steps = ["created", "submitted", "completeness_confirmed", "estimates_requested", "estimate_recorded",
             "estimate_sent", "accepted", "presented", "approved"]
    cases, events = [], []
    for i in range(n):
        start = date(2024, 1, 1) + timedelta(days=rnd.randrange(700))
        day = start
        k = rnd.randrange(3, len(steps) + 1)
        for seq, ev in enumerate(steps[:k], 1):
            day += timedelta(days=rnd.randrange(0, 30) if seq > 2 else 0)
            events.append({"case_id": f"B-{i}", "seq": seq, "event": ev, "actor": "x", "role": "handler",
                           "ts": "", "on_date": day, "payload": "{}", "all_estimates_in": False})
        state = {"approved": "approved"}.get(steps[k - 1], "presented" if k > 7 else "submitted")
        cases.append({"case_id": f"B-{i}", "kind": rnd.choice(["data_permit", "data_request"]), "title": "t",
                      "purpose": rnd.choice(["scientific_research", "statistics"]), "applicant_id": "alice",
                      "form": form, "state": state, "created_at": "", "updated_at": "", "extension_months": 0,
                      "decision_due": start + timedelta(days=90),
                      "decided_on": day if steps[k - 1] == "approved" else None})
    with svc.engine.begin() as conn:
        conn.execute(insert(CaseRow), cases)
        conn.execute(insert(CaseEventRow), events)
    start = time.perf_counter()
    r = build(svc, today=date(2026, 1, 1))
    elapsed = time.perf_counter() - start
    return {"applications": n, "events": len(events), "seconds": round(elapsed, 3), "goal_seconds": 2.0,
            "indicators": len(r.indicators)}


def bench_authenticate(home: Path, calls: int = 500, repeats: int = 5) -> dict:
    """What authenticating a request costs: `identity.authenticate` (token lookup, expiry and revocation, the
    user's and the token's state checked against the audit chain and its head) against the baseline of a
    plain lookup of the token's hash (what the API did before identity was chained), in the same run;
    medians of ``repeats`` runs of ``calls`` calls each."""
    import statistics

    from sqlalchemy import select

    from toisio import identity

    svc = Service(load_settings(home=home))
    make_staff(svc)
    token = make_token(svc, "hanna")
    digest = identity.token_hash(token)

    def plain() -> None:
        with svc.engine.connect() as conn:
            conn.execute(select(identity.ApiTokenRow).where(identity.ApiTokenRow.sha256 == digest)).one()

    def full() -> None:
        identity.authenticate(svc, token)

    out = {}
    for name, fn in (("plain_lookup", plain), ("authenticate", full)):
        fn()
        runs = []
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            runs.append((time.perf_counter() - start) / calls * 1e6)
        out[name] = {"median_us": round(statistics.median(runs), 1), "min_us": round(min(runs), 1),
                     "max_us": round(max(runs), 1)}
    out["ratio"] = round(out["authenticate"]["median_us"] / out["plain_lookup"]["median_us"], 2)
    out["calls_per_run"], out["runs"] = calls, repeats
    return out


def run(work: Path) -> dict:
    return {"authenticate": bench_authenticate(work / "auth"), "api": bench_api(work / "api"),
            "concurrent_writers": bench_writers(work / "writers"), "report": bench_report(work / "report")}


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(run(Path(tmp)), indent=2))
