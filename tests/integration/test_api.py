"""The REST API over a real HTTP server on loopback: authentication, roles, errors, the journey."""


import httpx
import pytest

from tests.factories import make_form, make_service, make_token, make_user, serve_in_thread, store_plan
from toisio.app.api import create_app

pytestmark = pytest.mark.integration


@pytest.fixture
def api(svc):
    tokens = {}
    store_plan(svc)
    for uid, roles in {"alice": (), "hanna": ("handler",), "dora": ("decider",),
                       "thl": ("controller",), "aud": ("auditor",)}.items():
        tokens[uid] = make_token(svc, make_user(svc, uid, roles, ("hilmo", "population") if uid == "thl" else ()))
    with serve_in_thread(create_app(svc)) as root:
        clients = []

        def client(user=None):
            headers = {"Authorization": f"Bearer {tokens[user]}"} if user else {}
            c = httpx.Client(base_url=f"{root}/api/v1", headers=headers, timeout=10)
            clients.append(c)
            return c

        client.root = root
        yield client
        for c in clients:
            c.close()


def _form_json():
    return make_form().model_dump(mode="json")


def test_no_token_and_wrong_token(api):
    r = api().get("/cases")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"
    c = api()
    c.headers["Authorization"] = "Bearer nonsense"
    assert c.get("/cases").status_code == 401


def test_journey_and_errors(api):
    alice, hanna, dora, thl = api("alice"), api("hanna"), api("dora"), api("thl")
    r = alice.post("/cases", json=_form_json())
    assert r.status_code == 201, r.text
    case = r.json()["case_id"]
    # wrong role: the applicant cannot confirm completeness
    r = alice.post(f"/cases/{case}/actions/confirm_complete")
    assert r.status_code == 403 and "only handler" in r.json()["error"]["message"]
    # illegal state
    r = dora.post(f"/cases/{case}/actions/approve", json={"valid_until": "2029-01-01"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "illegal_state"
    for step in ("confirm_complete", "request_estimates"):
        assert hanna.post(f"/cases/{case}/actions/{step}").status_code == 200
    for reg in ("hilmo", "population"):
        r = thl.post(f"/cases/{case}/actions/record_estimate",
                     json={"registry": reg, "cost_eur": 100, "working_days": 10})
        assert r.status_code == 200, r.text
    assert hanna.post(f"/cases/{case}/actions/send_estimate").json()["state"] == "estimate_sent"
    assert alice.post(f"/cases/{case}/actions/accept").json()["state"] == "accepted"
    assert hanna.post(f"/cases/{case}/actions/present").json()["state"] == "presented"
    for bad in ({"valid_until": "notadate"}, {"work_hours": -1000}, {"valid_until": "2029-01-01", "to": "x"}):
        r = dora.post(f"/cases/{case}/actions/approve", json=bad)
        assert r.status_code == 422 and r.json()["error"]["errors"], (bad, r.text)
    r = dora.post(f"/cases/{case}/actions/approve", json={"valid_until": "2029-01-01"})
    assert r.json()["state"] == "approved" and r.json()["valid_until"] == "2029-01-01"
    shown = api("aud").get(f"/cases/{case}").json()
    assert [e["event"] for e in shown["history"]][-1] == "approved"
    access = alice.get(f"/permits/{case}/access").json()
    assert access["state"] == "approved" and access["users"] == ["bob"]


def test_self_decision_refused(api, svc):
    token = make_token(svc, make_user(svc, "dana", ("decider",), name="Dana", email="dana@x.example"))
    form = make_form(applicant={"name": "Dana", "email": "dana@x.example", "user_id": "dana"})
    c = api()
    c.headers["Authorization"] = f"Bearer {token}"
    case = c.post("/cases", json=form.model_dump(mode="json")).json()["case_id"]
    hanna = api("hanna")
    hanna.post(f"/cases/{case}/actions/confirm_complete")
    hanna.post(f"/cases/{case}/actions/request_estimates")
    for reg in ("hilmo", "population"):
        api("thl").post(f"/cases/{case}/actions/record_estimate",
                        json={"registry": reg, "cost_eur": 1, "working_days": 1})
    hanna.post(f"/cases/{case}/actions/send_estimate")
    c.post(f"/cases/{case}/actions/accept")
    hanna.post(f"/cases/{case}/actions/present")
    r = c.post(f"/cases/{case}/actions/approve", json={"valid_until": "2029-01-01"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "conflict_of_interest"


def test_invalid_document_names_the_field(api):
    bad = _form_json()
    bad["organisation"]["business_id"] = "1234567-8"
    r = api("alice").post("/cases", json=bad)
    assert r.status_code == 422 and "business_id" in r.json()["error"]["message"]
    rule = _form_json()
    rule["purpose"] = "development_and_innovation"
    r = api("alice").post("/cases", json=rule)
    assert r.status_code == 422 and r.json()["error"]["code"] == "development_aggregate_only"


def test_openapi_schema_published_with_a_typed_body_per_action(api):
    r = httpx.get(api.root + "/openapi.json")
    assert r.status_code == 200
    paths = r.json()["paths"]
    approve = paths["/api/v1/cases/{case_id}/actions/approve"]["post"]
    ref = approve["requestBody"]["content"]["application/json"]["schema"]
    schema_name = (ref.get("$ref") or ref["anyOf"][0]["$ref"]).rsplit("/", 1)[1]
    body = r.json()["components"]["schemas"][schema_name]
    assert set(body["properties"]) == {"valid_from", "valid_until", "work_hours"}
    assert body["additionalProperties"] is False
    assert "/api/v1/cases/{case_id}/actions/expire" not in paths  # the service's own jobs only


# ---------------------------------------------------------------- issue 12, findings 8-14

def _to_presented(api, case):
    hanna, alice, thl = api("hanna"), api("alice"), api("thl")
    for step in ("confirm_complete", "request_estimates"):
        assert hanna.post(f"/cases/{case}/actions/{step}").status_code == 200
    for reg in ("hilmo", "population"):
        assert thl.post(f"/cases/{case}/actions/record_estimate",
                        json={"registry": reg, "cost_eur": "100.00", "working_days": 10}).status_code == 200
    assert hanna.post(f"/cases/{case}/actions/send_estimate").status_code == 200
    assert alice.post(f"/cases/{case}/actions/accept").status_code == 200


def test_the_presenter_cannot_also_decide(api, svc):
    token = make_token(svc, make_user(svc, "henna", ("handler", "decider")))
    both = api()
    both.headers["Authorization"] = f"Bearer {token}"
    case = api("alice").post("/cases", json=_form_json()).json()["case_id"]
    _to_presented(api, case)
    assert both.post(f"/cases/{case}/actions/present", json={"summary": "ok"}).status_code == 200
    for action, body in (("approve", {"valid_until": "2029-01-01"}), ("reject", {"reasons": "no"})):
        r = both.post(f"/cases/{case}/actions/{action}", json=body)
        assert r.status_code == 403 and r.json()["error"]["code"] == "conflict_of_interest", r.text
    assert api("dora").post(f"/cases/{case}/actions/approve", json={"valid_until": "2029-01-01"}).status_code == 200


def test_every_handlers_queue_is_for_handlers_and_deciders_only(api):
    api("alice").post("/cases", json=_form_json())
    for user in ("alice", "thl", "aud"):
        r = api(user).get("/queue", params={"all_handlers": "true"})
        assert r.status_code == 403 and "handler" in r.json()["error"]["message"]
        assert api(user).get("/queue").json() == []
    assert len(api("hanna").get("/queue", params={"all_handlers": "true"}).json()) == 1


def test_client_fields_never_reach_the_audit_entry(api, svc):
    from toisio import audit

    case = api("alice").post("/cases", json=_form_json()).json()["case_id"]
    r = api("alice").post(f"/cases/{case}/actions/withdraw", json={"role": "decider", "to": "approved"})
    assert r.status_code == 422 and {e["field"] for e in r.json()["error"]["errors"]} == {"role", "to"}
    r = api("alice").post(f"/cases/{case}/actions/withdraw", json={"reason": "changed plans"})
    assert r.status_code == 200
    with svc.engine.connect() as conn:
        entry = [e for e in audit.events(conn, subject=f"case:{case}") if e.action == "case.withdrawn"][-1]
    assert entry.payload["role"] == "applicant" and entry.payload["to"] == "withdrawn"
    assert entry.payload["reason"] == "changed plans"


@pytest.mark.parametrize("action,body", [
    ("record_estimate", {"registry": "hilmo", "cost_eur": "abc", "working_days": 1}),
    ("record_estimate", {"registry": "hilmo", "cost_eur": 1, "working_days": -3}),
    ("approve", {"valid_until": "notadate"}),
    ("approve", {"work_hours": -1000}),
    ("extend_deadline", {"months": 100, "reason": "x"}),
    ("return", {"reason": "bad \ud800 text"}),
    ("return", {}),
    ("return", {"reason": "x" * 30000}),
    ("assign_handler", {"handler_id": ["hanna"]}),
])
def test_malformed_action_bodies_are_4xx_naming_the_field(api, action, body):
    case = api("alice").post("/cases", json=_form_json()).json()["case_id"]
    raw = __import__("json").dumps(body).replace("\\\\ud800", "\\ud800")
    r = api("hanna").post(f"/cases/{case}/actions/{action}", content=raw,
                          headers={"Content-Type": "application/json"})
    assert 400 <= r.status_code < 500, (action, body, r.status_code, r.text)
    err = r.json()["error"]
    assert err["message"] and err["code"] in ("invalid_document", "invalid_text", "invalid_body", "illegal_state")


def test_oversized_bodies_are_refused_before_they_are_stored(api, svc):
    big = _form_json()
    big["minimisation_justification"] = "x" * (3 * 1024 * 1024)
    r = api("alice").post("/cases", json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    long = _form_json()
    long["title"] = "x" * 50_000  # under the request limit, over the field limit
    r = api("alice").post("/cases", json=long)
    assert r.status_code == 422 and "title" in r.json()["error"]["message"]
    assert api("alice").get("/cases").json() == []


def test_return_after_the_estimate_then_estimates_again(api):
    """Issue 12 finding 13: it was a 500 IntegrityError with the case stuck."""
    case = api("alice").post("/cases", json=_form_json()).json()["case_id"]
    hanna, alice = api("hanna"), api("alice")
    for step in ("confirm_complete", "request_estimates"):
        assert hanna.post(f"/cases/{case}/actions/{step}").status_code == 200
    for reg in ("hilmo", "population"):
        api("thl").post(f"/cases/{case}/actions/record_estimate",
                        json={"registry": reg, "cost_eur": "100", "working_days": 10})
    assert hanna.post(f"/cases/{case}/actions/send_estimate").status_code == 200
    assert hanna.post(f"/cases/{case}/actions/return", json={"reason": "narrow the cohort"}).status_code == 200
    assert alice.post(f"/cases/{case}/actions/resubmit").status_code == 200
    assert hanna.post(f"/cases/{case}/actions/confirm_complete").status_code == 200
    r = hanna.post(f"/cases/{case}/actions/request_estimates")
    assert r.status_code == 200 and r.json()["state"] == "estimates_requested", r.text


def test_an_unknown_registry_or_variable_is_refused_at_submit_with_every_problem(api):
    form = _form_json()
    regs = form["extraction"]["registries"]
    regs["hilmoo"] = regs.pop("hilmo")
    regs["population"]["variables"] = [*regs["population"]["variables"], "shoe_size", "brith_date"]
    form["extraction"]["cohort"] = None
    r = api("alice").post("/cases", json=form)
    assert r.status_code == 422 and r.json()["error"]["code"] == "extraction_invalid"
    message = r.json()["error"]["message"]
    for part in ("'hilmoo'", "did you mean 'hilmo'", "'shoe_size'", "did you mean 'birth_date'"):
        assert part in message, part
    assert api("alice").get("/cases").json() == []  # nothing stored: fix the form and submit again


def test_the_running_api_wires_the_workspace_stop_on_permit_end(tmp_path):
    import asyncio

    from toisio import events

    svc = make_service(tmp_path / "home")
    app = create_app(svc)
    before = len(events._subscribers["permit.revoked"])

    async def serve_briefly() -> int:
        async with app.router.lifespan_context(app):
            return len(events._subscribers["permit.revoked"])

    assert asyncio.run(serve_briefly()) == before + 1
    assert len(events._subscribers["permit.revoked"]) == before


@pytest.mark.parametrize("workers", [1, 2])
def test_a_server_process_freezes_its_startup_objects_before_its_first_request(tmp_path, monkeypatch, workers):
    """``toisio serve`` (one process, or each of several) collects and freezes what its startup left alive, so
    full collections under load do not walk the modules and routes again; the apps of tests never freeze."""
    import gc

    import uvicorn
    from typer.testing import CliRunner

    from toisio.app import api as api_module
    from toisio.app.cli import app as cli

    calls = []
    monkeypatch.setattr(gc, "collect", lambda *a: calls.append("collect") or 0)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    monkeypatch.setattr(gc, "set_threshold", lambda *t: calls.append(("threshold", t[0])))
    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    r = CliRunner().invoke(cli, ["serve", "--port", "8799", "--workers", str(workers)])
    assert r.exit_code == 0, r.output
    app = served[0] if workers == 1 else api_module.app_from_environment()
    assert served[0] == app or served[0] == "toisio.app.api:app_from_environment"
    assert calls == []
    with serve_in_thread(app) as root:
        assert calls == ["collect", "freeze", ("threshold", 20_000)]  # during startup, before any request
        assert httpx.get(f"{root}/api/v1/health").status_code == 200
    calls.clear()
    with serve_in_thread(create_app(make_service(tmp_path / "other"))) as root:
        assert httpx.get(f"{root}/api/v1/health").status_code == 200
    assert calls == []
