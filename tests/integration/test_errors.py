"""One error type (issue 13, item 4): every user error has a stable code and status, and no command or
request shows a traceback for one."""

import inspect

import pytest
from typer.testing import CliRunner

import permits.attachments
import permits.lifecycle
import permits.permissions
import permits.rules
import permits.scope
import permits.service
import pseudonymise.files
import pseudonymise.pipeline
import secure_env.airlock.dp
import secure_env.airlock.lifecycle
import secure_env.airlock.outputs
import secure_env.workspace.ingress
import secure_env.workspace.provision
import secure_env.workspace.sandbox
import toisio.audit
import toisio.keystore
from tests.factories import invoke_as
from toisio.app.cli import app
from toisio.errors import ToisioError

MODULES = [permits.attachments, permits.lifecycle, permits.permissions, permits.rules, permits.scope,
           permits.service, pseudonymise.files, pseudonymise.pipeline, secure_env.airlock.outputs,
           secure_env.airlock.lifecycle, secure_env.airlock.dp, secure_env.workspace.ingress,
           secure_env.workspace.sandbox, secure_env.workspace.provision, toisio.audit, toisio.keystore, toisio.identity,
           toisio.authz]


def test_every_error_class_of_the_stages_is_a_coded_error_with_a_status():
    found = []
    for module in MODULES:
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, Exception) and obj.__module__ == module.__name__:
                found.append(obj)
                assert issubclass(obj, ToisioError), f"{module.__name__}.{name} is not a ToisioError"
                assert obj.code and 400 <= obj.http_status < 600, name
    assert len(found) >= 15


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    r = CliRunner().invoke(app, ["users", "add", "hanna", "--name", "Hanna", "--email", "h@x.example",
                                 "--role", "handler"])
    assert r.exit_code == 0, r.output
    return tmp_path


@pytest.mark.parametrize("who,args,code", [
    (None, ["permits", "list"], "unauthenticated"),
    ("forged", ["permits", "list"], "token_unknown"),
    (None, ["users", "add", "hanna", "--name", "H", "--email", "h@x.example"], "user_exists"),
    (None, ["users", "add", "x1", "--name", "X", "--email", "x@x.example", "--role", "wizard"], "unknown_role"),
    ("hanna", ["permits", "record-estimate", "TOISIO-2026-1", "--set", "registry=hilmo",
               "--set", "cost_eur=6OO", "--set", "working_days=3"], "invalid_document"),
    (None, ["outputs", "queue"], "unauthenticated"),
    ("forged", ["workspace", "status", "--permit", "TOISIO-2026-9"], "token_unknown"),
    (None, ["imports", "list"], "unauthenticated"),
    (None, ["tokens", "list"], "unauthenticated"),
])
def test_user_errors_are_refused_with_a_code_never_a_traceback(home, who, args, code):
    from tests.factories import make_token
    from toisio.service import service

    token = {None: "", "forged": "tsk_0123456789ab_forged", "hanna": "-"}[who]
    if who == "hanna":
        token = make_token(service(), "hanna")
    r = CliRunner().invoke(app, args, env={"TOISIO_TOKEN": token})
    assert r.exit_code == 1, (args, r.output, r.exception)
    assert f"refused ({code})" in r.output and "Traceback" not in r.output
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit)


def test_a_malformed_amount_is_named(tmp_path, monkeypatch):
    from permits.service import submit_form
    from tests.factories import make_form, make_staff
    from toisio.service import service

    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    svc = service()
    staff = make_staff(svc)
    case = submit_form(svc, staff["alice"], make_form()).case_id
    for step in ("confirm-complete", "request-estimates"):
        assert invoke_as(svc, "hanna", ["permits", step, case]).exit_code == 0
    r = invoke_as(svc, "thl1", ["permits", "record-estimate", case, "--set", "registry=hilmo",
                                 "--set", "cost_eur=6OO", "--set", "working_days=3"])
    assert r.exit_code == 1 and "refused (invalid_document)" in r.output and "cost_eur" in r.output
