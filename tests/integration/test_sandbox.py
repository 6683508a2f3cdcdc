"""The kernel sandbox on its own: argv shape, and that it needs no root (issue 12, finding 1)."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from secure_env.workspace import sandbox as SB


def _spec(base: Path, python: tuple[Path, ...]) -> SB.SandboxSpec:
    for d in ("data", "root", "runtime", "support"):
        (base / d).mkdir(parents=True, exist_ok=True)
    SB.write_support(base / "support")
    return SB.SandboxSpec(data=base / "data", root=base / "root", runtime=base / "runtime",
                          runtime_link=Path("/tmp") / f"toisio-rt-test-{os.getpid()}", support=base / "support",
                          python=python)


def test_the_sandbox_binds_only_what_it_lists(tmp_path):
    spec = _spec(tmp_path, SB.python_dirs())
    argv = SB.bwrap_argv(spec, ["true"])
    assert argv[0] == "bwrap" and argv[-2:] == ["--", "true"]
    assert "--unshare-all" in argv and argv[argv.index("--cap-drop") + 1] == "ALL"
    writable = {argv[i + 2] for i, a in enumerate(argv) if a == "--bind"}
    assert writable == {str(spec.root), str(spec.runtime), str(spec.runtime_link)}
    assert ["--ro-bind", str(spec.data), str(spec.data)] == argv[argv.index(str(spec.data)) - 1:
                                                             argv.index(str(spec.data)) + 2]
    assert "--clearenv" in argv and not any(a.startswith("TOISIO_MASTER") for a in argv)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user for the test")
def test_the_sandbox_works_and_holds_when_started_by_an_unprivileged_user():
    """Started by `nobody` (no capabilities on the host at all), bubblewrap still builds the sandbox and the
    probe inside holds: the service needs no root for its kernels."""
    if shutil.which("bwrap") is None or not Path("/usr/bin/python3").exists():
        pytest.fail("bubblewrap and the system python3 are needed (.ci/run installs them)")
    base = Path(tempfile.mkdtemp(prefix="toisio-unpriv-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        spec = _spec(base, (Path("/usr"),))
        for p in base.rglob("*"):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        with socket_listener() as port:
            argv = SB.bwrap_argv(spec, ["/usr/bin/python3", "-I", "-c", SB.PROBE, str(port)])
            done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--", *argv],
                                  capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (done.stdout, done.stderr)
        who = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                              *SB.bwrap_argv(spec, ["/usr/bin/python3", "-c", "import os; print(os.getuid())"])],
                             capture_output=True, text=True, timeout=60)
        assert who.stdout.strip() == str(SB.SANDBOX_UID)
        # Without root there is no cgroup to join: the process rlimit, set inside the sandbox's own user
        # namespace, is what stops a fork loop (and it caps only the kernel, not the service account).
        fork = ("import os, time\nn = 0\ntry:\n    for _ in range(300):\n        if os.fork() == 0:\n"
                "            time.sleep(3); os._exit(0)\n        n += 1\nexcept OSError:\n    pass\nprint(n)")
        limits = SB.KernelLimits(processes=24)
        bomb = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                               *SB.bwrap_argv(spec, [*limits.prlimit_argv(), "/usr/bin/python3", "-c", fork])],
                              capture_output=True, text=True, timeout=60)
        assert bomb.returncode == 0 and 0 < int(bomb.stdout.strip()) < 24, (bomb.stdout, bomb.stderr)
    finally:
        shutil.rmtree(base, ignore_errors=True)


class socket_listener:
    def __enter__(self):
        import socket

        self.s = socket.socket()
        self.s.bind(("127.0.0.1", 0))
        self.s.listen()
        return self.s.getsockname()[1]

    def __exit__(self, *exc):
        self.s.close()


def test_code_and_python_under_tmp_are_bound_after_the_fresh_tmp(tmp_path):
    """A clone under /tmp (as in CI): its environment must be mounted on top of the sandbox's /tmp."""
    venv, code = Path("/tmp/clone/.venv"), Path("/tmp/clone/secure_env")
    spec = SB.SandboxSpec(data=tmp_path / "d", root=tmp_path / "r", runtime=tmp_path / "rt",
                          runtime_link=Path("/tmp/toisio-rt-x"), support=tmp_path / "s", python=(venv,),
                          code=(code,))
    argv = SB.bwrap_argv(spec, ["true"])
    tmpfs = max(i for i, a in enumerate(argv) if a == "--tmpfs" and argv[i + 1] in ("/tmp", "/var/tmp", "/run"))
    for i, a in enumerate(argv):
        if a in ("--bind", "--ro-bind") and argv[i + 2].startswith(("/tmp/", "/var/tmp/", "/run/")):
            assert i > tmpfs, (argv[i + 2], "bound before the fresh tmpfs hides it")


def test_cgroups_are_found_only_where_writable(tmp_path):
    assert SB.find_cgroups(tmp_path) == SB.Cgroups(None, None, 1)
    v1 = tmp_path / "v1"
    for ctl in ("pids", "memory"):
        (v1 / ctl).mkdir(parents=True)
        (v1 / ctl / "cgroup.procs").write_text("")
    found = SB.find_cgroups(v1)
    assert found.pids == v1 / "pids" / "toisio" and found.memory == v1 / "memory" / "toisio"
    assert SB.can_limit_processes(found)
