"""A real workspace server per permit, and every exfiltration path the issue lists, each expected to fail.

These start JupyterLab servers and kernels in their own namespaces, so they are slow integration tests.
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import date, timedelta
from pathlib import Path

import pytest

from permits.service import act, submit_form
from secure_env.workspace import provision as W
from secure_env.workspace import server as S
from secure_env.workspace.client import KernelSession, request
from tests.factories import invoke_as, make_case, make_delivery, make_form, make_service, make_staff, who
from toisio import audit

pytestmark = [pytest.mark.slow, pytest.mark.integration]
QUOTA_MB = 1
BLOB = 2 * 1024 * 1024  # larger than the quota


def _active_permit(svc, staff, **form):
    return make_case(svc, staff, form=make_form(**form) if form else None,
                      day=date.today() - timedelta(days=40)).case_id


def _workspace(svc, staff, tmp, name, **form):
    permit = _active_permit(svc, staff, **form)
    tokens = W.create(svc, who(svc, "hanna"), permit, make_delivery(tmp / name, permit, blob_bytes=BLOB),
                      quota_mb=QUOTA_MB)
    return permit, tokens, S.start(svc, who(svc, "hanna"), permit).url


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Two permits in one service, each with its own running workspace."""
    tmp = tmp_path_factory.mktemp("ws")
    svc = make_service(tmp / "home", workspace_check_seconds=1, workspace_kernel_processes=48,
                       workspace_kernel_memory_mb=3072)
    staff = make_staff(svc)
    a = _workspace(svc, staff, tmp, "a")
    b = _workspace(svc, staff, tmp, "b", processors=[{
        "name": "Carl Analyst", "user_id": "carl", "organisation": "Example University",
        "confidentiality_undertaking_signed": "2026-01-10"}])
    yield {"svc": svc, "staff": staff, "a": a, "b": b}
    for permit in (a[0], b[0]):
        S.stop(svc, who(svc, "hanna"), permit, reason="tests done")


@pytest.fixture(scope="module")
def kernel(env):
    permit, tokens, url = env["a"]
    k = KernelSession(url, tokens["bob"])
    yield k
    k.close()


def _events(svc, permit, action):
    with svc.engine.connect() as conn:
        return [e for e in audit.events(conn, subject=f"permit:{permit}") if e.action == action]


def test_each_permit_has_its_own_server_and_port(env):
    (pa, _, ua), (_, _, ub) = env["a"], env["b"]
    assert ua != ub and ua.startswith("http://127.0.0.1:")
    st = S.status(env["svc"], who(env["svc"], "hanna"), pa)
    assert st.running and st.analysts == ("bob",) and st.quota_mb == QUOTA_MB


def test_no_token_and_wrong_token_are_refused(env):
    permit, tokens, url = env["a"]
    assert request(url, "/api/contents").status == 403
    assert request(url, "/api/contents", token="not-a-token").status == 403
    assert request(url, "/api/contents", token=tokens["bob"]).status == 200
    assert _events(env["svc"], permit, "workspace.login_refused")
    assert _events(env["svc"], permit, "workspace.login")[-1].actor == "bob"


def test_files_route_and_contents_api_cannot_reach_the_data(env):
    permit, tokens, url = env["a"]
    tok = tokens["bob"]
    assert request(url, "/files/scratch", token=tok).status == 403
    for path in ("/files/../data/persons/part-00000.parquet", "/api/contents/../data/persons/part-00000.parquet",
                 "/api/contents/..%2Fdata%2Fpersons%2Fpart-00000.parquet", "/api/contents/data/persons"):
        r = request(url, path + "?content=1", token=tok)
        assert r.status in (400, 403, 404), (path, r.status)
        assert b"PAR1" not in r.body
    names = {c["name"] for c in request(url, "/api/contents", token=tok).json()["content"]}
    assert "data" not in names


def test_nbconvert_terminals_and_extension_manager_are_refused(env):
    _, tokens, url = env["a"]
    tok = tokens["bob"]
    assert request(url, "/nbconvert/html/scratch/x.ipynb?download=true", token=tok).status in (403, 404)
    assert request(url, "/api/nbconvert", token=tok).status in (403, 404)
    assert request(url, "/api/terminals", token=tok).status == 404
    assert request(url, "/api/terminals", token=tok, method="POST", body={}).status == 404
    for route, body in (("/lab/api/extensions", {"cmd": "install", "extension_name": "jupyterlab-git"}),
                        ("/lab/api/plugins", {"cmd": "enable",
                                              "plugin_name": "@jupyterlab/docmanager-extension:download"}),
                        ("/lab/api/build", {})):
        assert request(url, route, token=tok, method="POST", body=body).status == 403, route
    page = request(url, "/lab", token=tok)
    assert page.status == 200
    marker = 'id="jupyter-config-data" type="application/json">'
    config = json.loads(page.body.decode().split(marker, 1)[1].split("</script>", 1)[0])
    for plugin in ("@jupyterlab/docmanager-extension:download", "@jupyterlab/notebook-extension:export",
                   "@jupyterlab/filebrowser-extension:share-file", "@jupyterlab/terminal-extension"):
        assert plugin in config["disabledExtensions"]
    assert config.get("extensionManager", {}).get("can_install") is False


def test_hidden_files_are_not_served(env, kernel):
    _, tokens, url = env["a"]
    assert kernel.run("open('.stash', 'w').write('x')").status == "ok"
    assert request(url, "/api/contents/.stash?content=1", token=tokens["bob"]).status == 404


def test_kernel_reads_the_data_but_cannot_write_it(env, kernel):
    r = kernel.run("import os, pandas as pd; print(len(pd.read_parquet(os.environ['TOISIO_DATA'] + '/persons')))")
    assert r.status == "ok" and r.stdout.strip() == "3"
    r = kernel.run("open(os.environ['TOISIO_DATA'] + '/persons/new.txt', 'w')")
    assert r.status == "error" and "Read-only file system" in r.error


def test_kernel_cannot_open_a_socket_to_the_hosts_loopback(env, kernel):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(5)
    port = server.getsockname()[1]
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(_accept(server)))
    t.start()
    r = kernel.run(f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=3)")
    t.join()
    server.close()
    # The kernel has a loopback of its own with nothing on it: the host's listener is never reached.
    assert r.status == "error" and "Connection refused" in r.error
    assert accepted == [None]
    r = kernel.run("socket.create_connection(('1.1.1.1', 443), timeout=3)")
    assert r.status == "error"


def _accept(server):
    try:
        return server.accept()
    except TimeoutError:
        return None


def test_kernel_sees_no_service_state_secrets_or_other_permits(env, kernel):
    svc = env["svc"]
    home, other = svc.settings.home, W.paths(svc, env["b"][0])
    r = kernel.run(
        "import os\n"
        f"print(sorted(os.listdir({str(home)!r})))\n"
        f"print(os.path.exists({str(svc.settings.keys / 'audit.key')!r}) and os.path.getsize("
        f"{str(svc.settings.keys / 'audit.key')!r}))\n"
        f"print(os.path.exists({str(other.base)!r}) and os.listdir({str(other.base)!r}))\n"
        "print(sorted(k for k in os.environ if 'TOISIO' in k or 'KEY' in k or 'JUPYTER' in k))\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "print(len(pids) < 10, any(b'jupyterlab' in open(f'/proc/{p}/cmdline', 'rb').read() for p in pids))")
    assert r.status == "ok", r.error
    listing, key, others, env_keys, procs = r.stdout.strip().splitlines()
    assert listing == "['workspaces']"  # no database, no key store, no attachments
    assert key in ("False", "0")
    assert others in ("False", "[]")
    assert set(eval(env_keys)) <= {"TOISIO_DATA", "TOISIO_SCRATCH", "TOISIO_PERMIT", "TOISIO_LIMIT_MEMORY_MB",
                                   "TOISIO_LIMIT_PROCESSES", "TOISIO_DP_SOCKET"}  # the socket's path, no secret
    assert procs == "True False"  # its own PID namespace: the server (and its environment) is out of sight


def test_a_copy_of_the_data_larger_than_the_quota_is_refused(env, kernel):
    permit, tokens, url = env["a"]
    r = kernel.run("import shutil; shutil.copy(os.environ['TOISIO_DATA'] + '/extra/blob.bin', 'scratch/blob.bin')")
    assert r.status == "error" and "File too large" in r.error
    cell = _events(env["svc"], permit, "workspace.cell_executed")[-1]
    assert cell.payload["files_removed_over_quota"] == ["scratch/blob.bin"]  # the cut-off copy is gone
    big_notebook = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "x" * BLOB}], "metadata": {},
                    "nbformat": 4, "nbformat_minor": 5}
    r = request(url, "/api/contents/scratch/big.ipynb", token=tokens["bob"], method="PUT",
                body={"type": "notebook", "format": "json", "content": big_notebook})
    assert r.status == 507 and b"quota" in r.body
    assert _events(env["svc"], permit, "workspace.quota_refused")
    small = request(url, "/api/contents/scratch/notes.txt", token=tokens["bob"], method="PUT",
                    body={"type": "file", "format": "text", "content": "fine"})
    assert small.status in (200, 201)
    written = _events(env["svc"], permit, "workspace.file_written")
    assert any(e.payload["path"] == "scratch/notes.txt" and e.actor == "bob" for e in written)


def test_cells_are_audited_with_code_output_size_and_files(env, kernel):
    permit = env["a"][0]
    r = kernel.run("open('scratch/result.txt', 'w').write('42'); print('x' * 1000)")
    assert r.status == "ok"
    cell = _events(env["svc"], permit, "workspace.cell_executed")[-1]
    assert cell.actor == "bob" and "result.txt" in cell.payload["code"]
    assert cell.payload["output_bytes"] >= 1000
    assert {"path": "scratch/result.txt", "bytes": 2} in cell.payload["files_written"]
    assert _events(env["svc"], permit, "workspace.kernel_started")[0].actor == "bob"


def test_one_permits_analyst_cannot_open_another_permits_workspace(env):
    (_, tokens_a, url_a), (_, tokens_b, url_b) = env["a"], env["b"]
    assert request(url_b, "/api/contents", token=tokens_a["bob"]).status == 403
    assert request(url_a, "/api/contents", token=tokens_b["carl"]).status == 403
    assert request(url_b, "/api/contents", token=tokens_b["carl"]).status == 200


def test_a_removed_analyst_is_refused_token_and_cookie(tmp_path):
    svc = make_service(tmp_path / "home")
    staff = make_staff(svc)
    permit, tokens, url = _workspace(svc, staff, tmp_path, "d")
    try:
        ok = request(url, "/api/contents", token=tokens["bob"])
        cookie = "; ".join(v.split(";", 1)[0] for k, v in ok.headers.items() if k.lower() == "set-cookie")
        assert ok.status == 200 and cookie
        assert request(url, "/api/contents", cookie=cookie).status == 200
        amendment = make_form(kind="amendment", purpose=None, research_plan=None, extraction=None,
                              requested_validity=None, permit_id=permit, processors=[],
                              change={"remove_users": ["bob"]})
        case = submit_form(svc, staff["alice"], amendment).case_id
        act(svc, staff["hanna"], case, "confirm_complete")
        act(svc, staff["hanna"], case, "present")
        act(svc, staff["dora"], case, "approve", valid_until=date(2030, 1, 1))
        import time

        time.sleep(6)  # past the identity provider's re-check interval
        assert request(url, "/api/contents", token=tokens["bob"]).status == 403
        assert request(url, "/api/contents", cookie=cookie).status == 403
    finally:
        S.stop(svc, who(svc, "hanna"), permit)


@pytest.mark.parametrize("ending", ["revoked", "expired"])
def test_the_end_of_a_permit_stops_its_workspace_and_it_will_not_start_again(tmp_path, ending):
    from permits.service import expire_due

    svc = make_service(tmp_path / "home")
    staff = make_staff(svc)
    permit, tokens, url = _workspace(svc, staff, tmp_path, "r")
    handler = S.enforce_permit_events(lambda: svc)
    try:
        if ending == "revoked":
            act(svc, staff["dora"], permit, "revoke", reason="conditions broken")
        else:
            assert expire_due(svc, today=date(2029, 1, 1)) == [permit]  # the permit ended on 2028-12-31
        assert not S.status(svc, who(svc, "hanna"), permit).running and not _listening(url)
        with pytest.raises(W.WorkspaceError, match="not in force"):
            S.start(svc, who(svc, "hanna"), permit)
        assert _events(svc, permit, "workspace.stopped")[-1].payload["reason"] == f"permit.{ending}"
    finally:
        S.withdraw_permit_events(handler)
        S.stop(svc, who(svc, "hanna"), permit)


def test_a_running_workspace_stops_itself_when_its_permit_ends(tmp_path):
    """No event reaches it (another process revoked the permit): the server's own check stops it."""
    import time

    svc = make_service(tmp_path / "home", workspace_check_seconds=1)
    staff = make_staff(svc)
    permit, tokens, url = _workspace(svc, staff, tmp_path, "e")
    try:
        act(svc, staff["dora"], permit, "revoke", reason="conditions broken")
        deadline = time.monotonic() + 30
        while S.status(svc, who(svc, "hanna"), permit).running and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not S.status(svc, who(svc, "hanna"), permit).running
        assert not _listening(url)
        stopped = _events(svc, permit, "workspace.stopped")[-1]
        assert stopped.payload["by"] == "server permit check" and "revoked" in stopped.payload["reason"]
    finally:
        S.stop(svc, who(svc, "hanna"), permit)


def _listening(url: str) -> bool:
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_destroy_stops_the_server_first(tmp_path):
    svc = make_service(tmp_path / "home")
    staff = make_staff(svc)
    permit, _, url = _workspace(svc, staff, tmp_path, "x")
    deleted = W.destroy(svc, who(svc, "hanna"), permit)
    assert deleted["bytes"] >= BLOB and not _listening(url)
    actions = [e.action for e in _events(svc, permit, "workspace.stopped")]
    assert actions == ["workspace.stopped"]


# ------------------------------------------------------------------ a hostile kernel (issue 12, findings 1-2)

def test_kernel_runs_unprivileged_with_no_capabilities_and_no_new_privs(kernel):
    r = kernel.run(
        "import os\n"
        "st = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)\n"
        "print(os.getuid(), os.geteuid(), os.getgid(), int(st['CapEff'], 16), int(st['CapBnd'], 16),"
        " int(st['CapPrm'], 16), st['NoNewPrivs'].strip())")
    assert r.status == "ok", r.error
    uid, euid, gid, eff, bnd, prm, nnp = r.stdout.split()
    assert uid != "0" and euid != "0" and gid != "0"
    assert (eff, bnd, prm, nnp) == ("0", "0", "0", "1")


def test_kernel_cannot_unmount_remount_or_mount(env, kernel):
    """The wave-1 escape: umount the covering mounts, remount the data read-write.  Every call fails."""
    svc = env["svc"]
    data = W.paths(svc, env["a"][0]).data
    r = kernel.run(
        "import ctypes, os, subprocess\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"data = {str(data)!r}.encode()\n"
        "MS_REMOUNT, MS_BIND = 32, 4096\n"
        "print(libc.umount2(data, 2), ctypes.get_errno())\n"
        "print(libc.mount(None, data, None, MS_REMOUNT | MS_BIND, None), ctypes.get_errno())\n"
        "print(libc.mount(b'tmpfs', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())\n"
        "print(libc.unshare(0x00020000 | 0x10000000), ctypes.get_errno())\n"  # CLONE_NEWNS|CLONE_NEWUSER
        "p = subprocess.run(['mount', '-o', 'remount,rw', data.decode()], capture_output=True, text=True)\n"
        "print(p.returncode != 0)")
    assert r.status == "ok", r.error
    umount, remount, mount, unshare, tool = r.stdout.strip().splitlines()
    for line in (umount, remount, mount):
        assert line.split()[0] == "-1" and line.split()[1] in ("1", "13"), line  # EPERM / EACCES
    assert unshare.split()[0] == "-1"  # no new namespaces either (it could re-gain capabilities there)
    assert tool == "True"
    assert kernel.run(f"open({str(data / 'persons' / 'x')!r}, 'w')").status == "error"


def test_kernel_cannot_reach_service_state_code_or_host_files(env, kernel):
    svc = env["svc"]
    code = Path(S.__file__).resolve()
    probes = {
        "db": str(svc.settings.home / "toisio.db"),
        "keys": str(svc.settings.keys),
        "shadow": "/etc/shadow",
        "root_home": "/root/.ssh",
        "host_via_proc": "/proc/1/root/etc/shadow",
        "repository": str(code.parent.parent / ".git"),
    }
    r = kernel.run("import os\n" + "".join(f"print({k!r}, os.path.exists({v!r}))\n" for k, v in probes.items()))
    assert r.status == "ok", r.error
    assert all(line.endswith("False") for line in r.stdout.strip().splitlines()), r.stdout
    for target in (str(code), "/etc/passwd", "/usr/lib/toisio-probe"):
        w = kernel.run(f"open({target!r}, 'a').write('pwned')")
        assert w.status == "error" and ("Read-only" in w.error or "No such file" in w.error
                                        or "Permission denied" in w.error), (target, w.error)
    assert "pwned" not in code.read_text() and "pwned" not in Path("/etc/passwd").read_text()
    # Beside the code: refused where the code lives on a read-only mount; where it lies under /tmp (a CI clone)
    # the kernel writes only into its own private /tmp. Either way nothing reaches the host's tree.
    beside = code.parent.parent / "pwned.py"
    kernel.run(f"open({str(beside)!r}, 'a').write('pwned')")
    assert not beside.exists()


def test_kernel_cannot_open_raw_sockets_or_trace_the_server(env, kernel):
    pid = S.status(env["svc"], who(env["svc"], "hanna"), env["a"][0]).pid
    r = kernel.run(
        "import ctypes, socket\n"
        "for fam, proto in ((socket.AF_INET, socket.IPPROTO_ICMP), (socket.AF_PACKET, 0x0300)):\n"
        "    try:\n"
        "        socket.socket(fam, socket.SOCK_RAW, proto); print('opened')\n"
        "    except OSError as e:\n"
        "        print(e.errno)\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"print(libc.ptrace(16, {pid}, None, None), ctypes.get_errno())")  # PTRACE_ATTACH
    assert r.status == "ok", r.error
    raw, packet, trace = r.stdout.strip().splitlines()
    assert raw in ("1", "13") and packet in ("1", "13", "97")  # EPERM, EACCES, EAFNOSUPPORT
    assert trace.split()[0] == "-1" and trace.split()[1] in ("1", "3")  # EPERM or ESRCH (not in its namespace)


def test_a_fork_bomb_is_stopped_by_the_process_limit(env):
    permit, tokens, url = env["a"]
    k = KernelSession(url, tokens["bob"])
    try:
        r = k.run(
            "import os, time\n"
            "kids = []\n"
            "try:\n"
            "    for i in range(400):\n"
            "        pid = os.fork()\n"
            "        if pid == 0:\n"
            "            time.sleep(5); os._exit(0)\n"
            "        kids.append(pid)\n"
            "finally:\n"
            "    print('made', len(kids))\n")
        assert r.status == "error" and "workspace limit" in r.stdout + r.error, (r.stdout, r.error)
        made = int(r.stdout.split("made")[1].split()[0])
        assert made < 48, made
    finally:
        k.close()


def test_memory_over_the_limit_fails_with_a_clear_message(env):
    permit, tokens, url = env["a"]
    k = KernelSession(url, tokens["bob"])
    try:
        r = k.run("x = bytearray(4 * 1024 ** 3)")
        assert r.status == "error" and "MemoryError" in r.error
        assert "memory limit (3072 MB)" in r.stdout
        assert k.run("print(1 + 1)").stdout.strip() == "2"  # the kernel survives
    finally:
        k.close()


# ------------------------------------------------------------------ nothing row-level over HTTP (findings 3-5)

def test_row_level_files_in_scratch_are_not_served_to_the_browser_and_reads_are_audited(env, kernel):
    permit, tokens, url = env["a"]
    tok = tokens["bob"]
    r = kernel.run(
        "import os, json, pandas as pd\n"
        "df = pd.concat([pd.read_parquet(os.environ['TOISIO_DATA'] + '/persons')] * 10)\n"
        "df.to_csv('scratch/rows.csv', index=False)\n"
        "df.to_csv('scratch/rows.txt', index=False, sep=';')\n"  # the same rows under an innocent name
        "df.to_parquet('scratch/rows.parquet')\n"
        "open('scratch/big.txt', 'w').write('word ' * 100000)\n"
        "open('scratch/blob.data2', 'wb').write(bytes(range(256)) * 10)\n"
        "nb = {'cells': [{'cell_type': 'markdown', 'metadata': {}, 'source': df.to_csv(index=False)}],\n"
        "      'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}\n"
        "json.dump(nb, open('scratch/rows.ipynb', 'w'))\n"
        "open('scratch/notes.md', 'w').write('# Notes\\nThe model converged.\\n')\n"
        "import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2]); plt.savefig('scratch/fig.png')\n"
        "print(list(df.columns)[0])")
    assert r.status == "ok", r.error
    column = r.stdout.strip()
    for name in ("rows.csv", "rows.txt", "rows.parquet", "big.txt", "blob.data2", "rows.ipynb"):
        for query in ("?content=1", "?content=1&format=text&type=file", "?content=1&format=base64&type=file"):
            got = request(url, f"/api/contents/scratch/{name}{query}", token=tok)
            assert got.status == 403, (name, query, got.status)
            assert column.encode() not in got.body
    for name in ("notes.md", "fig.png"):
        assert request(url, f"/api/contents/scratch/{name}?content=1", token=tok).status == 200, name
    events = _events(env["svc"], permit, "workspace.file_read")
    reads = {(e.payload["path"], e.payload["refused"]) for e in events}
    assert ("scratch/rows.csv", True) in reads and ("scratch/notes.md", False) in reads
    read = next(e for e in events if e.payload["path"] == "scratch/rows.txt")
    assert read.actor == "bob" and read.payload["bytes"] > 0 and "table" in read.payload["reason"]
    # A copy through the contents API reads the file too: refused the same way.
    got = request(url, "/api/contents/scratch", token=tok, method="POST", body={"copy_from": "scratch/rows.csv"})
    assert got.status == 403


def test_uploads_are_refused_while_notebooks_and_small_text_still_save(env):
    import base64

    permit, tokens, url = env["a"]
    tok = tokens["bob"]
    lookup = "code;label\n" + "".join(f"E{i:02d};thing {i}\n" for i in range(40))
    attempts = [
        ({"type": "file", "format": "base64", "content": base64.b64encode(b"print('hi')").decode()}, "tool.py"),
        ({"type": "file", "format": "base64", "content": base64.b64encode(b"x").decode(), "chunk": 1}, "big.bin"),
        ({"type": "file", "format": "text", "content": lookup}, "lookup.txt"),
        ({"type": "file", "format": "text", "content": "a,b\n1,2\n"}, "lookup.csv"),
    ]
    for model, name in attempts:
        got = request(url, f"/api/contents/scratch/{name}", token=tok, method="PUT", body=model)
        assert got.status == 403 and b"import request" in got.body or b"output request" in got.body, (name, got.body)
    refused = [e.payload["path"] for e in _events(env["svc"], permit, "workspace.upload_refused")]
    assert {"scratch/tool.py", "scratch/big.bin", "scratch/lookup.txt", "scratch/lookup.csv"} <= set(refused)
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": "1 + 1", "outputs": [],
                     "execution_count": None}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    assert request(url, "/api/contents/scratch/analysis.ipynb", token=tok, method="PUT",
                   body={"type": "notebook", "format": "json", "content": nb}).status in (200, 201)
    assert request(url, "/api/contents/scratch/todo.txt", token=tok, method="PUT",
                   body={"type": "file", "format": "text", "content": "check the model"}).status in (200, 201)
    assert request(url, "/api/contents/scratch", token=tok, method="POST",
                   body={"type": "file", "ext": ".py"}).status == 201  # a new empty file from the launcher


def test_padding_and_markup_cannot_hide_code_from_the_session_audit(env, kernel, monkeypatch, tmp_path):


    permit = env["a"][0]
    code = "x = 1  # [/bold] [red]\n" + "#" + " " * 70000 + "\nhidden = 'exfiltrate'\n"
    assert kernel.run(code).status == "ok"
    cell = _events(env["svc"], permit, "workspace.cell_executed")[-1]
    assert cell.payload["code"] == code and "hidden = 'exfiltrate'" in cell.payload["code"]
    assert cell.payload["code_bytes"] == len(code.encode()) and len(cell.payload["code_sha256"]) == 64
    svc = env["svc"]
    monkeypatch.setenv("TOISIO_HOME", str(svc.settings.home))
    r = invoke_as(svc, "hanna", ["workspace", "audit", "--permit", permit])
    assert r.exit_code == 0, r.output
    assert "[/bold]" in r.output


def test_a_kernel_asks_the_dp_query_service_through_its_socket_and_never_holds_the_receipt_key(env, kernel):
    from secure_env.airlock import outputs as A
    from secure_env.airlock.dp import ledger, set_budget

    permit, _, _ = env["a"]
    set_budget(env["svc"], who(env["svc"], "dora"), permit, 1.0, 0.0)
    r = kernel.run("a = toisio_dp.count('persons', epsilon=0.25); p = a.save('scratch/dp_count.json'); "
                   "print(a.ledger_id, toisio_dp.budget()['remaining_epsilon'])")
    assert r.status == "ok", r.error
    assert r.stdout.split()[1] == "0.75"
    assert [c.actor for c in ledger(env["svc"], who(env["svc"], "dora"), permit)] == [f"workspace:{permit}"]
    r = kernel.run("import os; print(sorted(k for k in os.environ if 'KEY' in k))")
    assert r.stdout.strip() == "[]"
    r = kernel.run("toisio_dp.count('persons', epsilon=5)")
    assert r.status == "error" and "budget_exceeded" in r.error
    root = W.paths(env["svc"], permit).root
    rid = A.create_request(env["svc"], who(env["svc"], "bob"), permit)
    A.add_file(env["svc"], who(env["svc"], "bob"), rid, root / "scratch" / "dp_count.json",
               {"description": "DP count", "method": "toisio_dp.count"})
    assert A.view(env["svc"], who(env["svc"], "oscar"), rid)["files"][0]["check_report"]["dp_verified"] is True


def test_the_analyst_asks_for_a_release_from_inside_the_workspace(env):
    """The workspace's own page: a banner (permit, end date, scratch left, DP budget), the workspace's files, a
    request made and submitted as the analyst, each file's automatic verdict shown; a path outside the workspace
    is refused."""
    import re

    import httpx

    from secure_env.airlock import outputs as A

    permit, tokens, url = env["a"]
    root = W.paths(env["svc"], permit).root
    (root / "scratch" / "release_me.csv").write_text("sex,n\n1,40\n2,45\n")
    (root / "scratch" / ".hidden.csv").write_text("sex,n\n1,1\n")
    with httpx.Client(base_url=url, headers={"Authorization": f"token {tokens['bob']}", "Accept-Language": "en"},
                      timeout=60, follow_redirects=False) as web:
        page = web.get("toisio/release")
        assert page.status_code == 200, page.text[:500]
        assert f"Permit {permit}" in page.text and "scratch space left" in page.text
        assert "no privacy budget set" in page.text or "DP budget: epsilon" in page.text
        finnish = web.get("toisio/release?lang=fi").text
        assert "Pyydä luovutusta" in finnish and f"Lupa {permit}" in finnish and '<html lang="fi">' in finnish
        assert "scratch/release_me.csv" in page.text and ".hidden.csv" not in page.text
        i = re.search(r'name="path_(\d+)" value="scratch/release_me.csv"', page.text).group(1)
        r = web.post("toisio/release", data={"pick": i, f"path_{i}": "scratch/release_me.csv",
                                             f"description_{i}": "persons by sex", f"method_{i}": "count",
                                             f"index_{i}": "sex",
                                             f"group_{i}": "tables", "group_context": "table 1 of the paper",
                                             "controls": "none needed", "action": "submit"})
        assert r.status_code == 302, r.text[:500]
        shown = web.get(r.headers["location"])
        assert "Submitted" in shown.text and "release_me.csv" in shown.text and 'class="pass"' in shown.text
        request_id = re.search(r"Request (OUT-[^:]+):", shown.text).group(1)
        bad = web.post("toisio/release", data={"pick": "0", "path_0": "../../keys/audit.key",
                                               "description_0": "x", "method_0": "y", "action": "submit"})
        assert bad.status_code in (403, 409, 422) and "outputs come from the workspace" in bad.text
        assert web.get("toisio/release", headers={"Authorization": "token nonsense"}).status_code in (302, 403)
    seen = A.view(env["svc"], who(env["svc"], "oscar"), request_id)
    assert seen["requester"] == "bob" and seen["state"] == "submitted"
    assert seen["groups"][0]["context"] == "table 1 of the paper"
