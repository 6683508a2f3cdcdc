"""The kernel sandbox: bubblewrap, an unprivileged uid with no capabilities, and resource limits.

A workspace kernel is started by ``bwrap`` (Debian package ``bubblewrap``) in new user, network,
mount, PID, IPC, UTS and cgroup namespaces.  bubblewrap builds the kernel's filesystem from
*nothing*: only what is listed in :func:`bwrap_argv` exists inside (the system's read-only
``/usr`` and libraries, the Python environment and the service's code packages read-only, the
permit's delivered data read-only, the Jupyter root read-write, the kernel's ipc runtime
directory, fresh ``/tmp``, ``/proc`` and ``/dev``).  The service's home (database, key store,
quarantine, other workspaces) is not mounted, so there is nothing to unmount to reach it.  After
the namespaces are set up, the kernel runs as uid/gid :data:`SANDBOX_UID` of its namespace with an
empty capability bounding set and ``no_new_privs``: mount, umount, remount, ptrace of anything
outside its namespace and raw sockets all fail.

Limits per kernel (:class:`KernelLimits`): processes, memory and CPU time.  ``prlimit`` sets the
rlimits (address space, CPU seconds, file size, open files, processes) inside the sandbox;
where a cgroup controller is writable (CI as root: cgroup v1 ``pids`` and ``memory``; a delegated
cgroup v2 subtree), the launch script also puts the kernel in a cgroup of its own with
``pids.max`` and a memory limit, because the process rlimit is not enforced for a process whose
real uid is root on the host.  When no process limit can be enforced the workspace refuses to
start (fail closed).  A kernel that hits a limit says so in the notebook (:data:`LIMITS_STARTUP`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from toisio.errors import Unavailable

SANDBOX_UID = 1000
SANDBOX_GID = 1000
SANDBOX_USER = "analyst"
SANDBOX_HOME = "/home/analyst"
#: What every kernel is given from the host's system directories, read-only (if they exist).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
#: System files a Python kernel needs (dynamic linker cache, time zone, fonts, SSL roots are not needed).
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/etc/nsswitch.conf")
SYSTEM_ETC_DIRS = ("/etc/fonts", "/etc/alternatives")
#: The service's code packages a kernel may import (the analyst helpers live in secure_env); never the
#: repository root, which may hold a service home (``var/``) or ``.git``.
CODE_PACKAGES = ("toisio", "catalogue", "permits", "secure_env", "pseudonymise", "flows")
CGROUP_V1 = Path("/sys/fs/cgroup")
CGROUP_PREFIX = "toisio"
STARTUP_FILE = "profile_default/startup/00-toisio-limits.py"


class SandboxUnavailable(Unavailable):
    """The kernel sandbox cannot be built on this host (bubblewrap missing, no namespaces, no limits)."""


@dataclass(frozen=True)
class KernelLimits:
    """Resource limits of one kernel."""

    memory_mb: int = 4096
    processes: int = 128
    cpu_seconds: int = 4 * 3600
    open_files: int = 1024
    file_size_bytes: int = 512 * 1024 * 1024

    def prlimit_argv(self) -> list[str]:
        return ["prlimit", f"--as={self.memory_mb * 1024 * 1024}", f"--cpu={self.cpu_seconds}",
                f"--fsize={self.file_size_bytes}", f"--nofile={self.open_files}", f"--nproc={self.processes}",
                "--core=0", "--"]


@dataclass(frozen=True)
class Cgroups:
    """Writable cgroup directories under which each kernel gets a cgroup of its own."""

    pids: Path | None
    memory: Path | None
    version: int

    @property
    def limits_processes(self) -> bool:
        return self.pids is not None


def _try_dir(parent: Path, name: str) -> Path | None:
    try:
        d = parent / name
        d.mkdir(exist_ok=True)
        probe = d / "toisio-probe"
        probe.mkdir(exist_ok=True)
        probe.rmdir()
        return d
    except OSError:
        return None


def find_cgroups(root: Path = CGROUP_V1) -> Cgroups:
    """The cgroup parents this process can create kernels' cgroups under (none where not writable)."""
    if (root / "cgroup.controllers").exists():  # cgroup v2 (unified) mounted at the root
        ctl = (root / "cgroup.controllers").read_text().split()
        base = _try_dir(root, CGROUP_PREFIX) if {"pids", "memory"} <= set(ctl) else None
        if base is not None:
            try:
                (root / "cgroup.subtree_control").write_text("+pids +memory")
                (base / "cgroup.subtree_control").write_text("+pids +memory")
            except OSError:
                return Cgroups(None, None, 2)
            return Cgroups(base, base, 2)
        return Cgroups(None, None, 2)
    pids = _try_dir(root / "pids", CGROUP_PREFIX) if (root / "pids" / "cgroup.procs").exists() else None
    mem = _try_dir(root / "memory", CGROUP_PREFIX) if (root / "memory" / "cgroup.procs").exists() else None
    return Cgroups(pids, mem, 1)


def can_limit_processes(cgroups: Cgroups) -> bool:
    """The rlimit on processes holds only for a non-root real uid; as root a pids cgroup is needed."""
    return cgroups.limits_processes or os.geteuid() != 0


#: Joins the kernel's own cgroups (if any), then runs prlimit + bwrap.  $1: pids parent, $2: memory
#: parent, $3: cgroup version, $4: pids.max, $5: memory bytes; the rest is the command.  Fails closed:
#: a cgroup that was asked for and cannot be joined stops the launch.
LAUNCH_SCRIPT = r"""#!/bin/sh
# Generated by toisio: put this kernel in its own cgroups, then start the sandbox.
set -eu
PIDS=$1; MEM=$2; VER=$3; NPROC=$4; MEMB=$5; shift 5
join() {  # $1 parent, $2 file, $3 value
  d="$1/k$$"; mkdir -p "$d"; echo "$3" > "$d/$2"; echo $$ > "$d/cgroup.procs"
}
if [ "$VER" = 2 ] && [ -n "$PIDS" ]; then
  d="$PIDS/k$$"; mkdir -p "$d"; echo "$NPROC" > "$d/pids.max"; echo "$MEMB" > "$d/memory.max"
  echo $$ > "$d/cgroup.procs"
else
  [ -z "$PIDS" ] || join "$PIDS" pids.max "$NPROC"
  [ -z "$MEM" ] || join "$MEM" memory.limit_in_bytes "$MEMB"
fi
exec "$@"
"""

#: An IPython startup file in the kernel's home: a limit that is hit gets a plain explanation.
LIMITS_STARTUP = r'''# Generated by toisio: explain the workspace's limits when a cell hits one.
def _toisio_limits():
    import os

    ip = get_ipython()  # noqa: F821
    mem = os.environ.get("TOISIO_LIMIT_MEMORY_MB", "?")
    procs = os.environ.get("TOISIO_LIMIT_PROCESSES", "?")

    def explain(shell, etype, value, tb, tb_offset=None):
        if issubclass(etype, MemoryError):
            msg = f"This workspace kernel hit its memory limit ({mem} MB). Work on a sample or fewer columns."
        else:
            msg = (f"This workspace kernel hit its limit of {procs} processes (or another resource limit): "
                   f"{value}")
        print(f"toisio workspace limit: {msg}")
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)

    ip.set_custom_exc((MemoryError, BlockingIOError), explain)


_toisio_limits()
del _toisio_limits

try:  # the DP query service's client, as ``toisio_dp`` (it talks to the service over $TOISIO_DP_SOCKET)
    from secure_env.workspace import dp_client as toisio_dp  # noqa: F401
except ImportError:
    pass
'''


def _system_binds() -> list[str]:
    out: list[str] = []
    for d in SYSTEM_DIRS:
        p = Path(d)
        if p.is_symlink():
            out += ["--symlink", os.readlink(p), d]
        elif p.is_dir():
            out += ["--ro-bind", d, d]
    for f in SYSTEM_FILES:
        if Path(f).exists():
            out += ["--ro-bind", f, f]
    for d in SYSTEM_ETC_DIRS:
        if Path(d).is_dir():
            out += ["--ro-bind", d, d]
    return out


def python_dirs() -> tuple[Path, ...]:
    """The directories a kernel reads its Python from (the environment and the interpreter's prefix)."""
    return tuple(dict.fromkeys(Path(p).resolve() for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)))


def code_dirs() -> tuple[Path, ...]:
    """The service's code packages, each bound on its own (never the repository root)."""
    root = Path(__file__).resolve().parents[2]
    return tuple(root / pkg for pkg in CODE_PACKAGES if (root / pkg).is_dir())


def _covered(p: Path, by: list[Path]) -> bool:
    return any(p == b or b in p.parents for b in by)


@dataclass(frozen=True)
class SandboxSpec:
    """Everything one kernel's sandbox is built from."""

    data: Path  # the permit's delivered dataset (read-only inside)
    root: Path  # the Jupyter root (notebooks and scratch; read-write inside)
    runtime: Path  # the workspace's runtime directory, where connection files and ipc sockets live
    runtime_link: Path  # the short path the server uses for it (bound there inside)
    support: Path  # generated files bound read-only: passwd, group, IPython startup
    limits: KernelLimits = KernelLimits()
    python: tuple[Path, ...] = ()
    code: tuple[Path, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def bwrap_argv(spec: SandboxSpec, command: list[str]) -> list[str]:
    """The bubblewrap command line for ``command`` inside the sandbox (no network, no service state)."""
    argv = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_GID), "--cap-drop", "ALL",
            "--hostname", "toisio-workspace", *_system_binds()]
    # Fresh /tmp, /var/tmp and /run first: what is bound below may live under them (a CI clone in /tmp)
    # and must be mounted on top of the new tmpfs, not hidden by it.
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp", "--tmpfs", "/run"]
    bound: list[Path] = []
    for p in (*spec.python, *spec.code):
        if not _covered(p, bound):
            argv += ["--ro-bind", str(p), str(p)]
            bound.append(p)
    argv += ["--tmpfs", SANDBOX_HOME,
             "--ro-bind", str(spec.support / "passwd"), "/etc/passwd",
             "--ro-bind", str(spec.support / "group"), "/etc/group",
             "--ro-bind", str(spec.support / STARTUP_FILE), f"{SANDBOX_HOME}/.ipython/{STARTUP_FILE}",
             "--ro-bind", str(spec.data), str(spec.data),
             "--bind", str(spec.root), str(spec.root),
             "--bind", str(spec.runtime), str(spec.runtime),  # the connection file is named by its real path
             "--bind", str(spec.runtime), str(spec.runtime_link),  # ipc socket paths must stay short
             "--remount-ro", "/",
             "--chdir", str(spec.root), "--clearenv"]
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": SANDBOX_HOME, "USER": SANDBOX_USER,
           "LANG": "C.UTF-8", "IPYTHONDIR": f"{SANDBOX_HOME}/.ipython", "MPLCONFIGDIR": "/tmp/matplotlib",
           "TOISIO_LIMIT_MEMORY_MB": str(spec.limits.memory_mb),
           "TOISIO_LIMIT_PROCESSES": str(spec.limits.processes), **dict(spec.env)}
    for k, v in env.items():
        argv += ["--setenv", k, v]
    return [*argv, "--", *command]


def write_support(support: Path) -> None:
    """The generated files a sandbox binds read-only: a passwd and group naming only the analyst, and the
    IPython profile with the limits explanation."""
    (support / STARTUP_FILE).parent.mkdir(parents=True, exist_ok=True)
    (support / "passwd").write_text(f"{SANDBOX_USER}:x:{SANDBOX_UID}:{SANDBOX_GID}:analyst:{SANDBOX_HOME}:"
                                    f"/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/:/usr/sbin/nologin\n")
    (support / "group").write_text(f"{SANDBOX_USER}:x:{SANDBOX_GID}:\nnogroup:x:65534:\n")
    (support / STARTUP_FILE).write_text(LIMITS_STARTUP)


def launch_argv(launcher: Path, cgroups: Cgroups, limits: KernelLimits, sandboxed: list[str]) -> list[str]:
    """The whole kernel command: cgroup join (launch script), then the sandbox (``sandboxed``: a bwrap
    command line ending in ``--``) running the kernel under its rlimits.

    The rlimits are set *inside* the sandbox: the process limit counts a user's processes per user
    namespace, and a limit set before bwrap creates the namespace would also cap the service account's
    processes outside it (on a developer's machine: all of their processes)."""
    return ["sh", str(launcher), str(cgroups.pids or ""), str(cgroups.memory or ""), str(cgroups.version),
            str(limits.processes), str(limits.memory_mb * 1024 * 1024), *sandboxed]


#: Run inside a probe sandbox: prints what a hostile cell would learn about its privileges.
PROBE = r"""
import errno, os, socket, sys
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
bad = []
if os.getuid() == 0 or os.geteuid() == 0:
    bad.append("the kernel runs as uid 0")
if int(status["CapEff"].strip(), 16) or int(status["CapBnd"].strip(), 16):
    bad.append("the kernel has capabilities")
if status["NoNewPrivs"].strip() != "1":
    bad.append("no_new_privs is not set")
if [name for _, name in socket.if_nameindex()] != ["lo"]:
    bad.append("the kernel sees network interfaces")
for host, port, ok in (("127.0.0.1", int(sys.argv[1]), errno.ECONNREFUSED), ("192.0.2.1", 9, errno.ENETUNREACH)):
    try:
        s = socket.socket(); s.settimeout(2); s.connect((host, port)); bad.append(f"{host}:{port} is reachable")
    except OSError as e:
        if e.errno != ok:
            bad.append(f"network to {host} failed unexpectedly ({e})")
print("; ".join(bad)); sys.exit(1 if bad else 0)
"""


def probe(spec: SandboxSpec, python: str = sys.executable) -> None:
    """Fail closed unless a sandbox can be built here and holds (unprivileged, no capabilities, no network)."""
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed; install the Debian package 'bubblewrap'")
    if shutil.which("prlimit") is None:
        raise SandboxUnavailable("prlimit (util-linux) is not installed")
    import socket

    try:
        with socket.socket() as host:  # a service on the host's loopback the sandbox must not reach
            host.bind(("127.0.0.1", 0))
            host.listen()
            proc = subprocess.run(bwrap_argv(spec, [python, "-I", "-c", PROBE, str(host.getsockname()[1])]),
                                  capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxUnavailable(f"the kernel sandbox could not be started ({exc})") from None
    if proc.returncode != 0:
        why = (proc.stdout.strip() or proc.stderr.strip() or f"exit {proc.returncode}").splitlines()[-1]
        raise SandboxUnavailable(f"the kernel sandbox does not hold ({why})")


def remove_empty_cgroups(cgroups: Cgroups) -> int:
    """Remove kernels' cgroups that no process uses any more (after a kernel or server stopped)."""
    removed = 0
    for parent in {p for p in (cgroups.pids, cgroups.memory) if p is not None}:
        for d in parent.glob("k*"):
            try:
                d.rmdir()
                removed += 1
            except OSError:
                pass
    return removed
