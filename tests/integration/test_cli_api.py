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
