"""The command line is a client of the REST API (issue 13, item 2): to TOISIO_API_URL over HTTP when one is
configured, otherwise to the same API in-process, with the signed-in user's token either way."""

import pytest
from typer.testing import CliRunner

from tests.factories import make_case, make_staff, make_token, serve_in_thread
from toisio.app.api import create_app
from toisio.app.cli import app

pytestmark = pytest.mark.integration


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """A service with a submitted case, its API on loopback, and a command line on 'another machine' (its own
    empty home): only the URL and the token connect them."""
    from tests.factories import make_service

    svc = make_service(tmp_path / "server")
    staff = make_staff(svc)
    case = make_case(svc, staff, state="submitted").case_id
    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "laptop"))
    with serve_in_thread(create_app(svc)) as root:
        yield svc, case, root


def _cli(args, **env):
    return CliRunner().invoke(app, args, env=env)


def test_commands_go_to_the_configured_api_as_the_signed_in_user(remote, tmp_path):
    svc, case, root = remote
    hanna = make_token(svc, "hanna")
    r = _cli(["permits", "list"], TOISIO_API_URL=root, TOISIO_TOKEN=hanna)
    assert r.exit_code == 0, r.output
    assert case in r.output
    r = _cli(["permits", "confirm-complete", case], TOISIO_API_URL=root, TOISIO_TOKEN=hanna)
    assert r.exit_code == 0 and "complete" in r.output, r.output
    r = _cli(["permits", "show", case], TOISIO_API_URL=root, TOISIO_TOKEN=make_token(svc, "aud"))
    assert r.exit_code == 0 and "completeness_confirmed" in r.output and "hanna" in r.output
    r = _cli(["permits", "queue"], TOISIO_API_URL=root, TOISIO_TOKEN=hanna)
    assert r.exit_code == 0 and "queue of hanna" in r.output
    # the permission is the service's, not the command line's
    r = _cli(["permits", "request-estimates", case], TOISIO_API_URL=root, TOISIO_TOKEN=make_token(svc, "alice"))
    assert r.exit_code == 1 and "refused (forbidden)" in r.output and "only" in r.output
    # nothing of the service lives on the laptop
    assert not (tmp_path / "laptop" / "toisio.db").exists()


def test_a_bad_token_or_an_unreachable_api_is_refused_plainly(remote):
    _, _, root = remote
    r = _cli(["permits", "list"], TOISIO_API_URL=root, TOISIO_TOKEN="tsk_000000000000_forged")
    assert r.exit_code == 1 and "refused (token_unknown)" in r.output and "Traceback" not in r.output
    r = _cli(["permits", "list"], TOISIO_API_URL="http://127.0.0.1:9", TOISIO_TOKEN="tsk_x")
    assert r.exit_code == 1 and "refused (api_unreachable)" in r.output
    r = _cli(["permits", "attach", "examples/research-plan.md"], TOISIO_API_URL=root, TOISIO_TOKEN="tsk_x")
    assert r.exit_code == 1 and "not_on_the_host" in r.output


def test_in_process_the_same_api_checks_the_token(svc, tmp_path, monkeypatch):
    monkeypatch.setenv("TOISIO_HOME", str(svc.settings.home))
    monkeypatch.setenv("TOISIO_DATABASE_URL", svc.settings.db_url)
    staff = make_staff(svc)
    case = make_case(svc, staff, state="submitted").case_id
    r = _cli(["permits", "show", case], TOISIO_TOKEN=make_token(svc, "hanna"), TOISIO_API_URL="")
    assert r.exit_code == 0 and case in r.output
    r = _cli(["permits", "show", case], TOISIO_TOKEN="tsk_000000000000_forged", TOISIO_API_URL="")
    assert r.exit_code == 1 and "refused (token_unknown)" in r.output


@pytest.fixture
def active_world(svc, tmp_path):
    from datetime import date, timedelta

    from secure_env.workspace import provision
    from tests.factories import make_delivery

    staff = make_staff(svc)
    permit = make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id
    provision.create(svc, staff["hanna"], permit, make_delivery(tmp_path / "delivery", permit))
    with serve_in_thread(create_app(svc)) as root:
        yield svc, staff, permit, root + "/api/v1"


def test_the_api_reads_output_files_only_from_the_workspace(active_world, tmp_path):
    import httpx

    from secure_env.workspace.provision import paths

    svc, staff, permit, api = active_world
    bob = {"Authorization": f"Bearer {make_token(svc, 'bob')}"}
    rid = httpx.post(f"{api}/outputs", json={"permit_id": permit}, headers=bob).json()["request_id"]
    secret = tmp_path / "outside.csv"
    secret.write_text("k,n\na,50\n")
    ctx = {"description": "d", "method": "m", "index": "k"}
    for given in (str(secret), "../../../outside.csv", "../delivery/manifest.json", "/etc/passwd"):
        r = httpx.post(f"{api}/outputs/{rid}/files", json={"path": given, **ctx}, headers=bob)
        assert r.status_code in (404, 422) and r.json()["error"]["code"] in ("outside_workspace", "not_found"), \
            (given, r.text)
    (paths(svc, permit).root / "scratch" / "t.csv").write_text("k,n\na,50\nb,60\n")
    hanna = {"Authorization": f"Bearer {make_token(svc, 'hanna')}"}
    r = httpx.post(f"{api}/outputs/{rid}/files", json={"path": "scratch/t.csv", **ctx}, headers=hanna)
    assert r.status_code == 403  # only the request's author adds files (checked before the path is looked at)
    r = httpx.post(f"{api}/outputs/{rid}/files", json={"path": "scratch/t.csv", **ctx}, headers=bob)
    assert r.status_code == 201, r.text
    assert httpx.post(f"{api}/outputs/{rid}/submit", headers=bob).json()["state"] == "submitted"
    r = httpx.post(f"{api}/outputs/{rid}/votes", json={"file": "t.csv", "decision": "approve"}, headers=bob)
    assert r.status_code == 403 and "output checker" in r.json()["error"]["message"]
    r = httpx.get(f"{api}/outputs/no-such", headers=bob)
    assert r.status_code == 404


def test_imports_and_workspace_through_the_api(active_world):
    import base64

    import httpx

    svc, staff, permit, api = active_world
    bob = {"Authorization": f"Bearer {make_token(svc, 'bob')}"}
    oscar = {"Authorization": f"Bearer {make_token(svc, 'oscar')}"}
    body = {"permit_id": permit, "name": "../evil.py", "purpose": "p",
            "content_base64": base64.b64encode(b"x = 1\n").decode()}
    r = httpx.post(f"{api}/imports", json=body, headers=bob)
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_name"
    r = httpx.post(f"{api}/imports", json={**body, "name": "tool.py", "content_base64": "not base64!"}, headers=bob)
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_content"
    imp = httpx.post(f"{api}/imports", json={**body, "name": "tool.py"}, headers=bob).json()
    assert imp["state"] == "requested" and imp["requester"] == "bob"
    assert [i["import_id"] for i in httpx.get(f"{api}/imports", headers=oscar).json()] == [imp["import_id"]]
    r = httpx.post(f"{api}/imports/{imp['import_id']}/approve", headers=bob)
    assert r.status_code == 403
    assert httpx.post(f"{api}/imports/{imp['import_id']}/approve", headers=oscar).json()["state"] == "approved"
    status = httpx.get(f"{api}/workspaces/{permit}", headers=bob).json()
    assert status["exists"] and status["analysts"] == ["bob"]
    assert httpx.delete(f"{api}/workspaces/{permit}", headers=bob).status_code == 403
    hanna = {"Authorization": f"Bearer {make_token(svc, 'hanna')}"}
    assert httpx.post(f"{api}/workspaces/{permit}/tokens/bob", headers=hanna).json()["token"]
    assert "workspace.token_issued" in {e["action"] for e in
                                        httpx.get(f"{api}/workspaces/{permit}/audit", headers=hanna).json()}
    assert httpx.post(f"{api}/workspaces/{permit}", headers=hanna).json()["error"]["code"] == "no_delivery"


def test_every_listing_prints_json_with_the_same_rows(remote):
    import json

    svc, case, root = remote
    env = {"TOISIO_API_URL": root, "TOISIO_TOKEN": make_token(svc, "hanna")}
    rows = json.loads(_cli(["permits", "list", "--json"], **env).stdout)
    assert [r["case_id"] for r in rows] == [case] and rows[0]["state"] == "submitted"
    queue = json.loads(_cli(["permits", "queue", "--all", "--json"], **env).stdout)
    assert queue[0]["case_id"] == case and queue[0]["waiting_for"] == "handler"
    oscar = {"TOISIO_API_URL": root, "TOISIO_TOKEN": make_token(svc, "oscar")}
    assert json.loads(_cli(["outputs", "queue", "--json"], **oscar).stdout) == []
    tokens = json.loads(_cli(["tokens", "list", "--json"], **env).stdout)
    assert tokens and {"token_id", "name", "expires_at", "status"} <= set(tokens[0])


def test_version_and_log_level(remote):
    from importlib.metadata import version

    r = _cli(["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"toisio {version('toisio')}"
    r = _cli(["--log-level", "loud", "permits", "list"])
    assert r.exit_code == 1 and "unknown log level 'loud'" in r.output


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_logs_where_it_listens_and_each_request(tmp_path, workers):
    import os
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "TOISIO_HOME": str(tmp_path / "home")}
    subprocess.run([sys.executable, "-m", "toisio.app.cli", "db", "upgrade"], env=env, check=True,
                   capture_output=True)
    proc = subprocess.Popen([sys.executable, "-m", "toisio.app.cli", "serve", "--port", str(port),
                             "--workers", str(workers)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        for _ in range(4 * workers):  # the connections are spread over the workers
            with httpx.Client() as fresh:
                assert fresh.get(f"http://127.0.0.1:{port}/api/v1/cases").status_code == 401
                assert fresh.get(f"http://127.0.0.1:{port}/catalogue").status_code == 200
    finally:
        proc.terminate()
        _out, errors = proc.communicate(timeout=30)
    assert f"listening on http://127.0.0.1:{port} with {workers} worker" in errors and "/api/v1" in errors
    assert "GET /api/v1/cases -> 401 as (not signed in)" in errors
