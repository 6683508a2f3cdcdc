"""REST API v1 beyond the case actions: validation without submitting, drafts, the application's content,
attachments, messages, estimate requests, decision documents, the catalogue, audit and indicators,
pagination and the offline documentation."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest

from tests.factories import make_case, make_form, make_service, make_staff, make_token, serve_in_thread
from toisio.app.api import create_app


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    svc = make_service(tmp_path_factory.mktemp("apiv1") / "home")
    staff = make_staff(svc)
    from tests.factories import make_user

    make_user(svc, "eve")
    make_user(svc, "bob", name="Bob Analyst")  # named on every case make_case makes
    tokens = {u: make_token(svc, u) for u in (*staff, "eve", "bob")}
    with serve_in_thread(create_app(svc)) as root:
        clients = []

        def client(user=None):
            c = httpx.Client(base_url=root, timeout=30,
                             headers={"Authorization": f"Bearer {tokens[user]}"} if user else {})
            clients.append(c)
            return c

        yield svc, staff, client
        for c in clients:
            c.close()


def test_validate_reports_every_problem_with_paths_and_refuses_duplicate_keys(api):
    _svc, _staff, client = api
    c = client()  # needs no sign-in
    good = make_form().model_dump(mode="json")
    r = c.post("/api/v1/applications/validate", content=json.dumps(good), headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json() == {"ok": True, "problems": []}
    bad = {**good, "purpse": "x", "fee_category": "standrd"}
    bad["applicant"] = {**good["applicant"], "email": "nope"}
    problems = c.post("/api/v1/applications/validate", content=json.dumps(bad)).json()["problems"]
    paths = {p["path"]: p for p in problems}
    assert {"purpse", "fee_category", "applicant.email"} <= set(paths)
    assert paths["purpse"]["suggestion"] == "purpose" and paths["fee_category"]["suggestion"] == "standard"
    r = c.post("/api/v1/applications/validate", content=b'{"title": "a", "title": "b"}')
    assert r.json()["problems"][0]["code"] == "duplicate_key"
    r = c.post("/api/v1/applications/validate", content=b"kind: data_permit\nkind: data_request\n",
               headers={"Content-Type": "application/yaml"})
    assert r.json()["problems"][0]["code"] == "duplicate_key"


def test_attachments_upload_with_sha256_and_limits(api):
    _svc, _staff, client = api
    alice = client("alice")
    data = b"# Plan\n" * 100
    r = alice.post("/api/v1/attachments", files={"file": ("plan.md", data, "text/markdown")})
    assert r.status_code == 201 and r.json() == {"filename": "plan.md", "sha256": hashlib.sha256(data).hexdigest(),
                                                 "bytes": len(data)}
    r = alice.post("/api/v1/attachments", files={"file": ("rows.csv", b"a,b\n1,2\n", "text/csv")})
    assert r.status_code == 422 and r.json()["error"]["code"] == "attachment_type"
    big = b"x" * (10 * 1024 * 1024 + 1)
    r = alice.post("/api/v1/attachments", files={"file": ("big.pdf", big, "application/pdf")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "attachment_too_large"
    r = alice.post("/api/v1/attachments", files={"file": ("huge.pdf", big + b"x" * 1024 * 1024, "application/pdf")})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert client().post("/api/v1/attachments", files={"file": ("p.md", b"x", "text/markdown")}).status_code == 401


def test_draft_update_content_and_attachment_download_follow_the_case_visibility(api):
    svc, staff, client = api
    alice, hanna, eve = client("alice"), client("hanna"), client("eve")
    form = make_form().model_dump(mode="json")
    case = alice.post("/api/v1/cases?draft=true", json=form).json()["case_id"]
    form["title"] = "A better title"
    assert alice.put(f"/api/v1/cases/{case}/application", json=form).status_code == 200
    assert alice.get(f"/api/v1/cases/{case}/application").json()["title"] == "A better title"
    assert eve.put(f"/api/v1/cases/{case}/application", json=form).status_code == 403
    alice.post(f"/api/v1/cases/{case}/actions/submit")
    r = alice.put(f"/api/v1/cases/{case}/application", json=form)
    assert r.status_code == 409 and r.json()["error"]["code"] == "illegal_state"
    assert hanna.get(f"/api/v1/cases/{case}/application").status_code == 200
    assert eve.get(f"/api/v1/cases/{case}/application").status_code == 403
    sha = form["research_plan"]["sha256"]
    r = hanna.get(f"/api/v1/cases/{case}/attachments/{sha}")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha == r.headers["X-Content-SHA256"]
    assert eve.get(f"/api/v1/cases/{case}/attachments/{sha}").status_code == 403
    assert hanna.get(f"/api/v1/cases/{case}/attachments/{'0' * 64}").status_code == 404


def test_internal_messages_are_hidden_from_the_applicant(api):
    _svc, _staff, client = api
    alice, hanna = client("alice"), client("hanna")
    case = alice.post("/api/v1/cases", json=make_form().model_dump(mode="json")).json()["case_id"]
    assert hanna.post(f"/api/v1/cases/{case}/messages", json={"text": "hello", "public": True}).status_code == 201
    assert hanna.post(f"/api/v1/cases/{case}/messages", json={"text": "between us", "public": False}).json()[
        "public"] is False
    r = alice.post(f"/api/v1/cases/{case}/messages", json={"text": "secret?", "public": False})
    assert r.status_code == 422 and r.json()["error"]["code"] == "internal_remark_refused"
    alice.post(f"/api/v1/cases/{case}/messages", json={"text": "thanks"})
    assert [m["text"] for m in alice.get(f"/api/v1/cases/{case}/messages").json()] == ["hello", "thanks"]
    assert [m["text"] for m in hanna.get(f"/api/v1/cases/{case}/messages").json()] == ["hello", "between us",
                                                                                        "thanks"]
    history = alice.get(f"/api/v1/cases/{case}").json()["history"]
    assert "between us" not in json.dumps(history)


def test_controllers_see_the_estimate_requests_for_their_registries_only(api):
    svc, staff, client = api
    view = make_case(svc, staff, state="estimates_requested")
    thl, kela, alice = client("thl1"), client("kela1"), client("alice")
    mine = thl.get("/api/v1/estimates", params={"case_id": view.case_id}).json()
    assert {e["registry"] for e in mine} == {"hilmo", "population"} and not any(e["answered"] for e in mine)
    assert kela.get("/api/v1/estimates", params={"case_id": view.case_id}).json() == []
    assert alice.get("/api/v1/estimates").status_code == 403


def test_decision_document_html_and_pdf_in_three_languages(api):
    svc, staff, client = api
    view = make_case(svc, staff, state="approved")
    alice = client("alice")
    for lang, words in (("fi", "Käyttölupa myönnetään"), ("sv", "Dataanvändningstillståndet beviljas"),
                        ("en", "The data permit is granted")):
        html = alice.get(f"/api/v1/cases/{view.case_id}/decision.html", params={"lang": lang}).text
        assert words in html and "2028-12-31" in html and "hilmo" in html
    assert "Administrative Court" in html and "EUR" in html
    pdf = alice.get(f"/api/v1/cases/{view.case_id}/decision.pdf", params={"lang": "sv"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    draft = make_case(svc, staff, state="submitted")
    r = alice.get(f"/api/v1/cases/{draft.case_id}/decision.html")
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_decision"
    assert client("eve").get(f"/api/v1/cases/{view.case_id}/decision.html").status_code == 403


def test_catalogue_is_public_with_healthdcat_exports(api):
    _svc, _staff, client = api
    c = client()
    found = c.get("/api/v1/catalogue", params={"q": "reimbursed"}).json()
    assert [d["id"] for d in found] == ["kela_purchases"]
    hilmo = c.get("/api/v1/catalogue/hilmo").json()
    assert "main_dg" in [v["name"] for v in hilmo["variables"]] and hilmo["event_date"] == "admission_date"
    assert c.get("/api/v1/catalogue/nope").status_code == 404
    assert "healthdcatap" in c.get("/api/v1/catalogue.ttl").text
    assert c.get("/api/v1/catalogue.jsonld").headers["content-type"].startswith("application/ld+json")


def test_audit_search_and_verify_are_for_auditors(api):
    svc, staff, client = api
    aud, alice = client("aud"), client("alice")
    r = aud.get("/api/v1/audit", params={"action": "case.", "limit": 5})
    assert r.status_code == 200 and len(r.json()) == 5 and int(r.headers["X-Total-Count"]) >= 5
    assert all(e["action"].startswith("case.") for e in r.json())
    assert alice.get("/api/v1/audit").status_code == 403
    v = aud.get("/api/v1/audit/verify").json()
    assert v["ok"] and v["checked"] > 0
    assert client("hanna").get("/api/v1/indicators").status_code == 200
    assert alice.get("/api/v1/indicators").status_code == 403


def test_lists_are_paginated_with_the_total_in_a_header(api):
    svc, staff, client = api
    for _ in range(3):
        make_case(svc, staff, state="submitted")
    hanna = client("hanna")
    whole = hanna.get("/api/v1/cases")
    total = int(whole.headers["X-Total-Count"])
    assert total >= 3 and len(whole.json()) == total
    page = hanna.get("/api/v1/cases", params={"limit": 2, "offset": 1})
    assert [c["case_id"] for c in page.json()] == [c["case_id"] for c in whole.json()][1:3]
    assert hanna.get("/api/v1/cases", params={"limit": 0}).status_code == 422


def test_the_api_documentation_works_without_internet(api):
    _svc, _staff, client = api
    c = client()
    html = c.get("/docs").text
    assert "/api/docs-static/swagger-ui-bundle.js" in html and "cdn" not in html.lower()
    assert c.get("/api/docs-static/swagger-ui-bundle.js").status_code == 200
    assert "/api/docs-static/redoc.standalone.js" in c.get("/redoc").text
    assert "fonts.googleapis" not in c.get("/redoc").text
    spec = c.get("/openapi.json").json()
    assert len(spec["paths"]) >= 60


def test_a_permits_dp_budget_and_ledger(api):
    svc, staff, client = api
    from secure_env.airlock import dp
    from tests.factories import who

    view = make_case(svc, staff, state="active")
    dp.set_budget(svc, staff["dora"], view.case_id, 1.0, 1e-6)
    dp.charge(svc, who(svc, "bob"), view.case_id, query="count of cases", epsilon=0.25)
    got = client("hanna").get(f"/api/v1/permits/{view.case_id}/dp").json()
    assert got["remaining_epsilon"] == 0.75 and [c["query"] for c in got["ledger"]] == ["count of cases"]
    assert got["ledger"][0]["actor"] == "bob"
    assert client("alice").get(f"/api/v1/permits/{view.case_id}/dp").status_code == 403


def test_accepting_records_the_terms_of_use(api):
    svc, staff, client = api
    view = make_case(svc, staff, state="accepted")
    history = client("alice").get(f"/api/v1/cases/{view.case_id}").json()["history"]
    accepted = [e for e in history if e["event"] == "accepted"][0]
    assert accepted["payload"]["terms_of_use"].startswith("toisio-terms-")


def test_an_analyst_gets_their_own_workspace_login_and_not_anothers(api):
    svc, staff, client = api
    from secure_env.workspace import provision
    from tests.factories import make_workspace

    permit, _tokens = make_workspace(svc, staff)
    bob = client("bob")
    r = bob.post(f"/api/v1/workspaces/{permit}/tokens/bob")
    assert r.status_code == 200 and r.json()["login_url"] is None  # the workspace is not running
    assert provision.analyst_for_token(svc, permit, r.json()["token"]) == "bob"
    assert bob.post(f"/api/v1/workspaces/{permit}/tokens/alice").status_code == 403


def test_output_groups_supporting_files_and_private_comments_over_the_api(api):
    svc, staff, client = api
    from secure_env.workspace import provision
    from tests.factories import make_user, make_workspace

    for u in ("olga",):
        make_user(svc, u, ("output_checker",))
    permit, _tokens = make_workspace(svc, staff)
    scratch = provision.paths(svc, permit).root / "scratch"
    (scratch / "t.csv").write_text("k,n\na,50\nb,60\n")
    (scratch / "raw.csv").write_text("k,n\na,2\n")
    bob, oscar = client("bob"), client("oscar")
    rid = bob.post("/api/v1/outputs", json={"permit_id": permit}).json()["request_id"]
    assert bob.post(f"/api/v1/outputs/{rid}/files", json={
        "path": "scratch/t.csv", "description": "by k", "method": "count", "index": "k",
        "group": "table 1"}).status_code == 201
    r = bob.post(f"/api/v1/outputs/{rid}/files", json={"path": "scratch/raw.csv", "description": "raw",
                                                       "group": "table 1"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "missing_method"  # only a supporting file may
    assert bob.post(f"/api/v1/outputs/{rid}/files", json={"path": "scratch/raw.csv", "description": "raw",
                                                          "group": "table 1", "supporting": True}).status_code == 201
    assert bob.put(f"/api/v1/outputs/{rid}/groups/table 1",
                   json={"context": "for the paper", "controls": "none"}).status_code == 200
    assert oscar.put(f"/api/v1/outputs/{rid}/groups/table 1",
                     json={"context": "x", "controls": "y"}).status_code == 403
    assert bob.post(f"/api/v1/outputs/{rid}/submit").json()["state"] == "submitted"
    r = oscar.post(f"/api/v1/outputs/{rid}/comments", json={"group": "table 1", "text": "fine",
                                                            "visibility": "private"})
    assert r.status_code == 201
    assert bob.post(f"/api/v1/outputs/{rid}/comments", json={"group": "table 1", "text": "x",
                                                            "visibility": "private"}).status_code == 422
    view = oscar.get(f"/api/v1/outputs/{rid}").json()
    assert view["groups"] == [{"name": "table 1", "context": "for the paper", "controls": "none",
                               "files": ["t.csv", "raw.csv"],
                               "comments": [{"author": "oscar", "text": "fine", "visibility": "private",
                                             "round": 1, "at": view["groups"][0]["comments"][0]["at"]}]}]
    assert [f["supporting"] for f in view["files"]] == [False, True]
    assert bob.get(f"/api/v1/outputs/{rid}").json()["groups"][0]["comments"] == []
    from secure_env.airlock import outputs as A
    from tests.factories import who

    assert A.view(svc, who(svc, "olga"), rid)["groups"][0]["comments"] == []  # blind until her own review
    spec = client().get("/openapi.json").json()
    props = spec["components"]["schemas"]["OutputView"]["properties"]
    assert {"files", "groups", "released_before"} <= set(props)


def test_a_case_read_asks_the_chain_once_and_still_sees_an_edit_behind_the_service(api):
    """``GET /api/v1/cases/{id}`` reads the stamps of the caller's token, user and case in one statement (read
    ahead), and an edit of the case's rows made behind the service is refused at the next read all the same."""
    from sqlalchemy import event

    svc, staff, client = api
    case = make_case(svc, staff, state="submitted").case_id
    hanna = client("hanna")
    assert hanna.get(f"/api/v1/cases/{case}").status_code == 200  # verified in full, and kept
    assert hanna.get(f"/api/v1/cases/{case}").status_code == 200
    stamps: list[tuple] = []

    def count(conn, cursor, statement, parameters, *args):
        if "state_change" in statement:
            stamps.append(tuple(parameters.values()) if isinstance(parameters, dict) else tuple(parameters))

    event.listen(svc.engine, "before_cursor_execute", count)
    try:
        assert hanna.get(f"/api/v1/cases/{case}").status_code == 200
    finally:
        event.remove(svc.engine, "before_cursor_execute", count)
    assert len(stamps) == 1 and f"case:{case}" in stamps[0] and "user:hanna" in stamps[0]
    with svc.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE permit_case SET valid_until='2099-12-31' WHERE case_id='{case}'")
    r = hanna.get(f"/api/v1/cases/{case}")
    assert r.status_code == 409 and r.json()["error"]["code"] == "case_tampered"
