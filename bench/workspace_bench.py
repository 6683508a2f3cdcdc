"""Workspace benchmark: time from ``workspace start`` to a ready kernel, and memory per idle workspace,
for 1 and for 5 workspaces running at once.

Baseline, measured in the same run: a plain ipykernel started by jupyter_client with no namespaces, no
lockdown and no server, so the cost of the isolation and of the per-permit server is visible.
Memory is PSS (proportional set size: shared pages split between the processes sharing them) of each
workspace's server and kernel processes, read with psutil while they idle.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import psutil

COUNTS = (1, 5)


def _pss_mb(pid: int) -> dict:
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    pss = rss = 0
    for p in procs:
        try:
            info = p.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        pss += info.pss
        rss += info.rss
    return {"pss_mb": round(pss / 2**20, 1), "rss_mb": round(rss / 2**20, 1), "processes": len(procs)}


def _baseline_kernel_seconds(runs: int = 3) -> float:
    """A plain python3 kernel (no isolation) from start to its first executed cell."""
    from jupyter_client import AsyncKernelManager

    async def once() -> float:
        km = AsyncKernelManager(kernel_name="python3")
        t0 = time.perf_counter()
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        await kc.execute_interactive("1")
        seconds = time.perf_counter() - t0
        kc.stop_channels()
        await km.shutdown_kernel(now=True)
        return seconds

    return statistics.median(asyncio.run(once()) for _ in range(runs))


def _workspaces(tmp: Path, n: int):
    from bench.fixtures import active_permits
    from secure_env.workspace import provision as W
    from tests.factories import make_delivery, who

    svc, permits = active_permits(tmp / f"home-{n}", n, day=date.today() - timedelta(days=40))
    tokens = {p: W.create(svc, who(svc, "hanna"), p, make_delivery(tmp / f"delivery-{n}-{p}", p))["bob"]
              for p in permits}
    return svc, tokens


def _start_to_ready(svc, permit: str, token: str):
    from secure_env.workspace import server as S
    from secure_env.workspace.client import KernelSession
    from tests.factories import who

    t0 = time.perf_counter()
    status = S.start(svc, who(svc, "hanna"), permit)
    t_server = time.perf_counter() - t0
    kernel = KernelSession(status.url, token)
    assert kernel.run("1 + 1").status == "ok"
    return status, kernel, t_server, time.perf_counter() - t0


def run(tmp: Path) -> dict:
    """Start 1, then 5 workspaces; report start-to-ready times and idle memory per workspace."""
    from secure_env.workspace import server as S
    from tests.factories import who

    report: dict = {"baseline_plain_kernel_seconds": round(_baseline_kernel_seconds(), 3), "runs": []}
    for n in COUNTS:
        svc, tokens = _workspaces(tmp, n)
        started, times = [], []
        try:
            for permit, token in tokens.items():
                status, kernel, t_server, t_ready = _start_to_ready(svc, permit, token)
                started.append((permit, status, kernel))
                times.append({"server_ready_s": round(t_server, 3), "kernel_ready_s": round(t_ready, 3)})
            time.sleep(3)  # let them settle into idle
            memory = [_pss_mb(status.pid) for _, status, _ in started]
        finally:
            for permit, _, kernel in started:
                kernel.close()
                S.stop(svc, who(svc, "hanna"), permit, reason="benchmark done")
        ready = [t["kernel_ready_s"] for t in times]
        report["runs"].append({
            "workspaces": n, "per_workspace": [{**t, **m} for t, m in zip(times, memory, strict=True)],
            "start_to_ready_kernel_s": {"median": round(statistics.median(ready), 3), "max": round(max(ready), 3)},
            "idle_memory_per_workspace_pss_mb": round(statistics.mean(m["pss_mb"] for m in memory), 1),
            "idle_memory_total_pss_mb": round(sum(m["pss_mb"] for m in memory), 1),
        })
        print(report["runs"][-1], file=sys.stderr)
    base = report["baseline_plain_kernel_seconds"]
    first = report["runs"][0]["start_to_ready_kernel_s"]["median"]
    report["ratio_start_to_ready_vs_plain_kernel"] = round(first / base, 2)
    return report
