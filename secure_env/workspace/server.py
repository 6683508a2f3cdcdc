"""Running a permit's JupyterLab server: start, stop, status, and stopping it when the permit ends.

Each workspace gets its own server process on 127.0.0.1 and its own port, with its own Jupyter
config, data and runtime directories (so nothing is shared between permits), started from the
configuration :mod:`secure_env.workspace.lockdown` generates afresh on every start.  Before the first start
the kernel isolation is probed; where the namespaces cannot be created the workspace fails closed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from permits.service import permit_access
from secure_env.workspace import sandbox
from secure_env.workspace.lockdown import DP_SOCKET, KERNEL_NAME, Lockdown, write_config
from secure_env.workspace.provision import (
    WorkspaceError,
    check_in_force,
    existing,
    lockdown_for,
    paths,
    used_bytes,
)
from secure_env.workspace.rules import check_can_workspace
from toisio import events
from toisio.identity import SYSTEM, Actor
from toisio.service import Service

READY_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
ENDING_EVENTS = ("permit.expired", "permit.revoked", "permit.closed")
_children: dict[int, subprocess.Popen] = {}  # servers this process started (kept, so they are reaped)


@dataclass(frozen=True)
class WorkspaceStatus:
    """What ``toisio workspace status`` shows."""

    permit_id: str
    exists: bool
    running: bool
    url: str | None
    pid: int | None
    analysts: tuple[str, ...]
    permit_in_force: bool
    permit_reason: str
    quota_mb: int | None
    used_bytes: int | None
    started_at: str | None


def _alive(pid: int) -> bool:
    if pid in _children:
        if _children[pid].poll() is not None:
            del _children[pid]
            return False
        return True
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own child if it has exited
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return b"jupyter" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _server_info(svc: Service, permit_id: str) -> dict | None:
    f = paths(svc, permit_id).server
    if not f.exists():
        return None
    info = json.loads(f.read_text())
    return info if _alive(info["pid"]) else None


def probe_isolation(lock: Lockdown) -> None:
    """Fail closed unless the kernel sandbox can be built here and holds, and processes can be limited."""
    try:
        sandbox.probe(lock.sandbox)
    except sandbox.SandboxUnavailable as exc:
        raise WorkspaceError(f"kernel isolation is not available: {exc}; refusing to start a workspace",
                             "no_isolation") from None
    if not sandbox.can_limit_processes(lock.cgroups):
        raise WorkspaceError("no process limit can be enforced for kernels here (running as root without a "
                             "writable pids cgroup); refusing to start a workspace", "no_isolation")


def _link_runtime(link: Path, target: Path) -> None:
    """Point the short runtime path at the workspace's runtime directory, refusing a link made by someone else."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    if link.is_symlink():
        if link.lstat().st_uid != os.getuid():
            raise WorkspaceError(f"{link} belongs to another user; refusing to use it", "runtime_link")
        link.unlink()
    elif link.exists():
        raise WorkspaceError(f"{link} exists and is not a link; refusing to use it", "runtime_link")
    link.symlink_to(target)


def kernel_manager(svc: Service, permit_id: str):
    """A jupyter_client AsyncKernelManager for the workspace's one kernelspec (nbclient runs, benchmarks).

    The kernel gets the same isolation as one started by the server; no server is needed.
    """
    import uuid

    from jupyter_client import AsyncKernelManager
    from jupyter_client.kernelspec import KernelSpecManager

    p = paths(svc, permit_id)
    lock = prepare_kernels(svc, permit_id)
    specs = KernelSpecManager(kernel_dirs=[str(p.config / "kernels")], ensure_native_kernel=False)
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs, transport="ipc",
                              connection_file=str(lock.runtime_link / f"kernel-{uuid.uuid4()}.json"))


def run_notebook(svc: Service, permit_id: str, nb, *, cwd: Path, timeout: int = 600):
    """Execute a notebook (nbformat object, in place) in a workspace kernel with nbclient; the kernel is shut down."""
    from nbclient import NotebookClient

    client = NotebookClient(nb, km=kernel_manager(svc, permit_id), timeout=timeout,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute(cleanup_kc=True)
    return nb


def _kill_stray_kernels(svc: Service, permit_id: str) -> int:
    """SIGKILL kernel launchers of this workspace still running (their kernel, PID 1 of its namespace, goes too).

    The sandboxed kernel dies with its bwrap parent (``--die-with-parent``), so a server that died without
    shutting its kernels down leaves nothing running after this.
    """
    marker = str(paths(svc, permit_id).data).encode() + b"\0"
    killed = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"bwrap\0") and marker in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_kernels(svc: Service, permit_id: str) -> Lockdown:
    """Check the isolation (fail closed), regenerate the lockdown config and link the short runtime path."""
    p = existing(svc, permit_id)
    lock = lockdown_for(svc, permit_id)
    write_config(p.config, lock)
    p.runtime.mkdir(exist_ok=True)
    probe_isolation(lock)
    p.runtime.mkdir(exist_ok=True)
    os.chmod(p.runtime, 0o700)
    _link_runtime(lock.runtime_link, p.runtime)
    return lock


def _server_env(svc: Service, lock: Lockdown) -> dict[str, str]:
    p = paths(svc, lock.permit_id)
    keep = {k: v for k, v in os.environ.items()
            if k in ("PATH", "LANG", "LC_ALL", "HOME", "TZ", "PYTHONPATH", "VIRTUAL_ENV") or
            k in ("TOISIO_AUDIT_KEY", "TOISIO_MASTER_KEY") or
            k == "COVERAGE_PROCESS_CONFIG"}  # only set under the tests' coverage measurement
    return {**keep, "TOISIO_HOME": str(svc.settings.home), "TOISIO_DATABASE_URL": svc.settings.db_url,
            "TOISIO_KEY_DIR": str(svc.settings.keys), "JUPYTER_CONFIG_DIR": str(p.config),
            "JUPYTER_PATH": str(p.config), "JUPYTER_DATA_DIR": str(p.config / "data"),
            "JUPYTER_RUNTIME_DIR": str(lock.runtime_link), "JUPYTER_PLATFORM_DIRS": "1",
            "PYTHONUNBUFFERED": "1"}


def _start_dp_gateway(svc: Service, lock: Lockdown, log_path: Path) -> subprocess.Popen:
    """The DP query service's socket for the workspace's kernels (:mod:`secure_env.airlock.dp_gateway`), on the
    host side with the service's settings and receipt key (which never enter the sandbox)."""
    env = {**_server_env(svc, lock), **{k: v for k, v in os.environ.items() if k == "TOISIO_RECEIPT_KEY"}}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "secure_env.airlock.dp_gateway", lock.permit_id,
                                 str(lock.runtime_link / DP_SOCKET)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    _children[proc.pid] = proc
    return proc


def start(svc: Service, actor: Actor, permit_id: str) -> WorkspaceStatus:
    """Start the permit's JupyterLab server and wait until it answers (refused unless the permit is in force)."""
    check_can_workspace(svc, actor, permit_id, "start")
    access = check_in_force(svc, permit_id)
    p = existing(svc, permit_id)
    if (info := _server_info(svc, permit_id)) is not None:
        raise WorkspaceError(f"the workspace of {permit_id} is already running at {info['url']}", "running")
    lock = prepare_kernels(svc, permit_id)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    with open(p.log, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", f"--ServerApp.port={port}", "--ServerApp.port_retries=0"],
            env=_server_env(svc, lock), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=p.root, start_new_session=True)
    _children[proc.pid] = proc
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            tail = p.log.read_text(errors="replace").splitlines()[-15:]
            raise WorkspaceError(f"the workspace server of {permit_id} exited at start (code {proc.returncode}):\n"
                                 + "\n".join(tail), "server_failed")
        try:
            with urllib.request.urlopen(url + "api", timeout=2) as r:  # noqa: S310 - loopback only
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            _terminate(proc.pid)
            raise WorkspaceError(f"the workspace server of {permit_id} did not answer in {READY_TIMEOUT:.0f} s",
                                 "server_timeout")
        time.sleep(0.2)
    dp = _start_dp_gateway(svc, lock, p.log)
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    p.server.write_text(json.dumps({"pid": proc.pid, "port": port, "url": url, "started_at": started,
                                    "dp_pid": dp.pid}))
    svc.record(actor=actor.user_id, action="workspace.started", subject=f"permit:{permit_id}",
               payload={"port": port, "pid": proc.pid, "analysts": list(access.users)})
    return _status(svc, permit_id)


def _terminate(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.05)


def stop(svc: Service, actor: Actor, permit_id: str, *, reason: str = "stopped by request") -> bool:
    """Stop the permit's server and its kernels; returns False if it was not running."""
    check_can_workspace(svc, actor, permit_id, "stop")
    p = paths(svc, permit_id)
    info = _server_info(svc, permit_id)
    p.server.unlink(missing_ok=True)
    if info is None:
        _kill_stray_kernels(svc, permit_id)
        return False
    _terminate(info["pid"])
    if info.get("dp_pid"):
        _terminate(info["dp_pid"])
    strays = _kill_stray_kernels(svc, permit_id)
    sandbox.remove_empty_cgroups(lockdown_for(svc, permit_id).cgroups)
    svc.record(actor=actor.user_id, action="workspace.stopped", subject=f"permit:{permit_id}",
               payload={"reason": reason, "pid": info["pid"], "stray_kernels_killed": strays})
    return True


def status(svc: Service, actor: Actor, permit_id: str) -> WorkspaceStatus:
    """Whether the workspace exists and runs, where, for whom, and how much scratch space it uses."""
    check_can_workspace(svc, actor, permit_id, "status")
    return _status(svc, permit_id)


def _status(svc: Service, permit_id: str) -> WorkspaceStatus:
    p = paths(svc, permit_id)
    access = permit_access(svc, permit_id)
    exists = p.tokens.exists()
    info = _server_info(svc, permit_id) if exists else None
    meta = json.loads((p.base / "workspace.json").read_text()) if (p.base / "workspace.json").exists() else {}
    return WorkspaceStatus(
        permit_id=permit_id, exists=exists, running=info is not None, url=info["url"] if info else None,
        pid=info["pid"] if info else None, analysts=tuple(sorted(json.loads(p.tokens.read_text()))) if exists else (),
        permit_in_force=access.in_force, permit_reason=access.reason, quota_mb=meta.get("quota_mb"),
        used_bytes=used_bytes(p.root) if exists else None, started_at=info["started_at"] if info else None)


def enforce_permit_events(service_factory: Callable[[], Service]) -> Callable[[str, dict], None]:
    """Subscribe to the permit events that end access; each stops the permit's running workspace."""

    def on_event(topic: str, payload: dict) -> None:
        svc = service_factory()
        permit_id = payload["permit_id"]
        if paths(svc, permit_id).server.exists():
            stop(svc, SYSTEM, permit_id, reason=topic)

    for topic in ENDING_EVENTS:
        events.subscribe(topic, on_event)
    return on_event


def withdraw_permit_events(handler: Callable[[str, dict], None]) -> None:
    for topic in ENDING_EVENTS:
        events.unsubscribe(topic, handler)
