"""No impersonation (issue 13, item 2): the CLI acts as whoever signed in, the API as the bearer of a live
token, and OpenID Connect sign-in through a real (mock) provider on loopback."""

import re
import stat
from datetime import UTC, datetime

import httpx
import pyotp
import pytest
from typer.testing import CliRunner

from tests.factories import make_service, make_token, make_user, serve_in_thread
from toisio import identity
from toisio.app.api import create_app
from toisio.app.cli import app

pytestmark = pytest.mark.integration
PASSWORD = "a long enough password"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("TOISIO_TOKEN", raising=False)
    return tmp_path


def _cli(args, input=None):
    return CliRunner().invoke(app, args, input=input, env={"TOISIO_TOKEN": ""})


def _add_local_user(user="lea", role="handler"):
    r = _cli(["users", "add", user, "--name", "Lea", "--email", "lea@x.example", "--role", role,
              "--password-stdin"], input=PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    secret = re.search(r"TOTP secret \(shown once[^)]*\): (\w+)", r.output).group(1)
    return pyotp.TOTP(secret)


def test_login_whoami_tokens_and_logout_from_the_command_line(home):
    totp = _add_local_user()
    r = _cli(["whoami"])
    assert r.exit_code == 1 and "refused (unauthenticated)" in r.output and "toisio login" in r.output
    r = _cli(["login", "--user", "lea", "--password-stdin", "--code", totp.now()], input=PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    token_file = home / "config" / "toisio" / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    r = _cli(["whoami"])
    assert r.exit_code == 0 and "lea (handler; signed in with password+totp, with a second factor)" in r.output
    r = _cli(["tokens", "create", "--name", "nightly script", "--days", "7"])
    assert r.exit_code == 0, r.output
    script_token = r.stdout.strip().splitlines()[-1]
    assert script_token.startswith("tsk_")
    r = _cli(["tokens", "list"])
    assert r.exit_code == 0 and "nightly script" in r.output and "cli" in r.output
    script_id = script_token.split("_")[1]
    r = CliRunner().invoke(app, ["whoami"], env={"TOISIO_TOKEN": script_token})
    assert r.exit_code == 0 and r.output.startswith("lea")
    assert _cli(["tokens", "revoke", script_id]).exit_code == 0
    r = CliRunner().invoke(app, ["whoami"], env={"TOISIO_TOKEN": script_token})
    assert r.exit_code == 1 and "refused (token_revoked)" in r.output
    r = _cli(["logout"])
    assert r.exit_code == 0 and "signed out" in r.output and not token_file.exists()
    assert _cli(["whoami"]).exit_code == 1


def test_a_token_file_others_can_read_is_refused(home):
    totp = _add_local_user()
    _cli(["login", "--user", "lea", "--password-stdin", "--code", totp.now()], input=PASSWORD + "\n")
    token_file = home / "config" / "toisio" / "token"
    token_file.chmod(0o644)
    r = _cli(["whoami"])
    assert r.exit_code == 1 and "refused (token_file_unsafe)" in r.output


def test_a_wrong_code_signs_nobody_in(home):
    _add_local_user()
    r = _cli(["login", "--user", "lea", "--password-stdin", "--code", "000000"], input=PASSWORD + "\n")
    assert r.exit_code == 1 and "refused (login_failed)" in r.output
    assert not (home / "config" / "toisio" / "token").exists()


def test_operator_commands_are_recorded_as_the_os_user(home):
    import getpass

    from toisio import audit
    from toisio.service import service

    _add_local_user()
    assert _cli(["users", "deactivate", "lea"]).exit_code == 0
    r = _cli(["users", "list"])
    assert r.exit_code == 0 and "lea" in r.output and "no" in r.output
    with service().engine.connect() as conn:
        actors = {e.action: e.actor for e in audit.events(conn, subject="user:lea")}
    assert actors["user.created"] == actors["user.deactivated"] == f"operator:{getpass.getuser()}"


def test_there_is_no_as_option_anywhere():
    """Every command's options, recursively: nobody can act as someone else by naming them."""
    import typer.main

    command = typer.main.get_command(app)

    def walk(cmd, path):
        for p in getattr(cmd, "params", []):
            assert "--as" not in p.opts, " ".join(path)
            assert "TOISIO_USER" not in (p.envvar or ""), " ".join(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*path, name])

    walk(command, ["toisio"])


# ---------------------------------------------------------------- the REST API

@pytest.fixture
def api(svc):
    with serve_in_thread(create_app(svc)) as root:
        yield root + "/api/v1"


def test_api_sign_in_tokens_and_401s(svc, api):
    e = identity.create_user(svc, identity.operator("t"), "lea", "Lea", "l@x.example", ("handler",),
                             password=PASSWORD)
    code = pyotp.TOTP(e.totp_secret).now()
    r = httpx.post(f"{api}/auth/login", json={"user_id": "lea", "password": PASSWORD, "code": code})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{api}/me", headers=auth).json()["mfa"] is True
    r = httpx.get(f"{api}/me")
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    r = httpx.get(f"{api}/me", headers={"Authorization": "Bearer tsk_nope"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_unknown"
    r = httpx.post(f"{api}/auth/login", json={"user_id": "lea", "password": "wrong password", "code": code})
    assert r.status_code == 401 and r.json()["error"]["code"] == "login_failed"
    new = httpx.post(f"{api}/tokens", json={"name": "ci", "days": 30}, headers=auth).json()
    assert new["info"]["name"] == "ci" and new["info"]["status"] == "active"
    rotated = httpx.post(f"{api}/tokens/{new['info']['token_id']}/rotate", headers=auth).json()
    assert httpx.get(f"{api}/me", headers={"Authorization": f"Bearer {new['token']}"}).status_code == 401
    listed = {t["name"]: t["status"] for t in httpx.get(f"{api}/tokens", headers=auth).json()}
    assert listed["api"] == "active"
    r = httpx.delete(f"{api}/tokens/{rotated['info']['token_id']}", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    other = make_token(svc, make_user(svc, "max"))
    r = httpx.delete(f"{api}/tokens/{rotated['info']['token_id']}", headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 403


def test_oidc_sign_in_through_a_provider_on_loopback(tmp_path):
    """authlib against oidc-provider-mock: the redirect, the provider's form, the callback, the ID token verified,
    the linked user signed in; a provider that reports no second factor is refused."""
    import oidc_provider_mock

    users = [oidc_provider_mock.User(sub="lea-at-idp", claims={"amr": ["pwd", "otp"]}),
             oidc_provider_mock.User(sub="max-at-idp", claims={"amr": ["pwd"]})]
    with oidc_provider_mock.run_server_in_thread(user_claims=users) as server:
        issuer = f"http://localhost:{server.server_port}"
        svc = make_service(tmp_path / "home", oidc_issuer=issuer, oidc_client_id="toisio",
                           oidc_client_secret="client-secret")
        op = identity.operator("t")
        for uid, sub in (("lea", "lea-at-idp"), ("max", "max-at-idp")):
            make_user(svc, uid, ("handler",))
            identity.link_oidc(svc, op, uid, issuer, sub)
        with serve_in_thread(create_app(svc)) as root:
            def sign_in(sub):
                with httpx.Client(base_url=root, timeout=20) as c:
                    r = c.get("/api/v1/auth/oidc/login")
                    assert r.status_code == 302, r.text
                    authorize = r.headers["location"]
                    assert authorize.startswith(issuer)
                    r = httpx.post(authorize, data={"sub": sub}, timeout=20)
                    assert r.status_code == 302, r.text
                    back = r.headers["location"]
                    assert back.startswith(root + "/api/v1/auth/oidc/callback")
                    return c.get(back.removeprefix(root))

            r = sign_in("lea-at-idp")
            assert r.status_code == 200, r.text
            assert r.json()["user_id"] == "lea"
            actor = identity.authenticate(svc, r.json()["token"])
            assert actor.method is identity.AuthMethod.OIDC and actor.mfa
            r = sign_in("max-at-idp")
            assert r.status_code == 401 and r.json()["error"]["code"] == "mfa_required"
            r = sign_in("stranger")
            assert r.status_code == 401 and r.json()["error"]["code"] == "login_failed"
            # a callback that did not come from our own redirect is refused
            r = httpx.get(f"{root}/api/v1/auth/oidc/callback?code=x&state=forged", timeout=20)
            assert r.status_code == 401 and r.json()["error"]["code"] == "oidc_failed"
    assert datetime.now(UTC)  # the provider thread stopped with the context
