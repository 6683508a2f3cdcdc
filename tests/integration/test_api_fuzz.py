"""Fuzz every operation of the REST API from its own OpenAPI schema: no input may give a 5xx
(issue 12, finding 18).  Bounded examples per operation keep it inside the suite's time."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from permits.service import submit_form
from tests.factories import make_form, make_service, make_staff, make_token, make_user, serve_in_thread
from toisio.app.api import create_app

pytestmark = pytest.mark.integration
EXAMPLES = int(os.environ.get("TOISIO_FUZZ_EXAMPLES", "25"))


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    svc = make_service(tmp_path_factory.mktemp("fuzz") / "home")
    staff = make_staff(svc)
    submit_form(svc, staff["alice"], make_form())  # TOISIO-2026-1 exists, so case paths reach the service
    token = make_token(svc, make_user(svc, "fuzzer", ("handler", "decider", "controller", "auditor",
                                                      "output_checker"), ("hilmo", "population", "kela_purchases")))
    with serve_in_thread(create_app(svc), log_level="critical") as url:
        yield url, token


def _schema():
    """The API's own OpenAPI, from an app that is only built (nothing is started or stored)."""
    import tempfile
    from pathlib import Path

    app = create_app(make_service(Path(tempfile.gettempdir()) / "toisio-openapi-only"))
    return schemathesis.openapi.from_dict(app.openapi())


SCHEMA = _schema()
OPERATIONS = sorted(r.ok().label for r in SCHEMA.get_all_operations())


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_input_gives_a_server_error(label, fuzz_server):
    url, token = fuzz_server
    operation = SCHEMA.find_operation_by_label(label)

    @given(case=operation.as_strategy())
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case):
        if (case.path_parameters or {}).get("case_id") == "":
            case.path_parameters["case_id"] = "TOISIO-2026-1"
        response = case.call(base_url=url, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code < 500, (label, case.formatted_path, response.status_code, response.text[:500])
        if response.status_code >= 400:
            error = response.json().get("error", {})
            assert error.get("code") and error.get("message"), response.text[:300]

    run()


def test_the_fuzz_covers_every_operation():
    assert len(OPERATIONS) >= 20 and "POST /api/v1/cases/{case_id}/actions/approve" in OPERATIONS
