"""The REST API over a real HTTP server on loopback: authentication, roles, errors, the journey."""

import socket
import threading
import time

import httpx
import pytest
import uvicorn

from permits.api import create_app
from permits.service import create_user
from tests.factories import make_form, make_service, store_plan

pytestmark = pytest.mark.integration


@pytest.fixture
def api(svc):
    tokens = {}
    store_plan(svc)
    with svc.engine.begin() as conn:
        for uid, roles in {"alice": (), "hanna": ("handler",), "dora": ("decider",),
                           "thl": ("controller",), "aud": ("auditor",)}.items():
            tokens[uid] = create_user(conn, uid, uid.title(), f"{uid}@x.example", roles,
                                      ("hilmo", "population") if uid == "thl" else ())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(svc), host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}/api/v1"
    clients = []

    def client(user=None):
        headers = {"Authorization": f"Bearer {tokens[user]}"} if user else {}
        c = httpx.Client(base_url=base, headers=headers, timeout=10)
        clients.append(c)
        return c

    client.root = f"http://127.0.0.1:{port}"
    yield client
    for c in clients:
        c.close()
    server.should_exit = True
    thread.join(timeout=10)


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
    r = dora.post(f"/cases/{case}/actions/approve", json={})
    assert r.status_code == 422 and r.json()["error"]["code"] == "missing_valid_until"
    r = dora.post(f"/cases/{case}/actions/approve", json={"valid_until": "2029-01-01"})
    assert r.json()["state"] == "approved"
    shown = api("aud").get(f"/cases/{case}").json()
    assert [e["event"] for e in shown["history"]][-1] == "approved"
    access = alice.get(f"/permits/{case}/access").json()
    assert access["state"] == "approved" and access["users"] == ["bob"]


def test_self_decision_refused(api, svc):
    with svc.engine.begin() as conn:
        token = create_user(conn, "dana", "Dana", "dana@x.example", ("decider",))
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


def test_openapi_schema_published(api):
    r = httpx.get(api.root + "/openapi.json")
    assert r.status_code == 200 and "/api/v1/cases/{case_id}/actions/{action}" in r.json()["paths"]


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
