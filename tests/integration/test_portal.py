"""The portal's own routes, signed in as each person: the whole story from application to download, and the
protections (sign-in, CSRF, cookies, one user's ids in another's URLs)."""

from __future__ import annotations

import re
from datetime import date, timedelta
from urllib.parse import quote

import httpx
import pytest

from secure_env.airlock import outputs as A
from tests.factories import PortalUser, csrf_of, make_delivery, portal_login, serve_in_thread
from toisio.app.api import create_app

_OPEN: list[httpx.Client] = []


def TestClient(root: str, lang: str | None = None) -> httpx.Client:  # noqa: N802 - reads like the client it is
    """A browser-like HTTP client of the running portal (keeps cookies, does not follow redirects)."""
    client = httpx.Client(base_url=root, timeout=30, follow_redirects=False,
                          headers={"Accept-Language": lang} if lang else {})
    _OPEN.append(client)
    return client


class Browser:
    """A TestClient signed in as one portal user, posting forms with the page's CSRF token."""

    def __init__(self, app, user: PortalUser, lang: str | None = "en"):
        self.client = TestClient(app, lang)
        self.user = user
        response = portal_login(self.client, user)
        assert response.status_code == 303, response.text[:500]

    def get(self, path: str, status: int = 200):
        r = self.client.get(path)
        assert r.status_code == status, f"GET {path}: {r.status_code}\n{r.text[:3000]}"
        return r

    def post(self, path: str, data: dict | list, *, status: int = 303, page: str = "/", files=None):
        token = csrf_of(self.client.get(page).text)
        items = list(data.items()) if isinstance(data, dict) else list(data)
        r = self.client.post(path, data=_form(items + [("csrf_token", token)]), files=files)
        assert r.status_code == status, f"POST {path}: {r.status_code}\n{r.text[:3000]}"
        return r


def _world(svc):
    people = {"alice": (), "bob": (), "hanna": ("handler",), "dora": ("decider",),
              "thl1": ("controller",), "oscar": ("output_checker",), "olga": ("output_checker",),
              "aud": ("auditor",), "eve": ()}
    registries = {"thl1": ("hilmo", "population")}
    users = {u: PortalUser(svc, u, roles, registries.get(u, ())) for u, roles in people.items()}
    with serve_in_thread(create_app(svc)) as root:
        yield svc, root, users
        while _OPEN:
            _OPEN.pop().close()


@pytest.fixture
def world(svc):
    """The portal on SQLite and on PostgreSQL, with a user for every role."""
    yield from _world(svc)


@pytest.fixture
def web(tmp_path):
    """The portal on SQLite only (for the checks that do not depend on the database)."""
    from tests.factories import make_service

    yield from _world(make_service(tmp_path / "home"))


def _application(start: date) -> list[tuple[str, str]]:
    return [
        ("kind", "data_permit"), ("title", "Diabetes follow-up"), ("purpose", "scientific_research"),
        ("fee_category", "standard"), ("applicant.user_id", "alice"), ("applicant.name", "Alice Researcher"),
        ("applicant.email", "alice@uni.example"), ("organisation.name", "Example University"),
        ("organisation.business_id", "0245896-3"), ("billing.address", "PO Box 1"),
        ("extraction.target_group", "adults in Hilmo"),
        ("extraction.registries.population.variables", "sex"),
        ("extraction.registries.population.variables", "birth_date"),
        ("extraction.registries.hilmo.variables", "admission_date"),
        ("extraction.registries.hilmo.variables", "main_dg"),
        ("extraction.registries.hilmo.period.start", "2015-01-01"),
        ("extraction.registries.hilmo.period.end", "2020-12-31"),
        ("minimisation_justification", "only what the survival analysis uses"),
        ("pseudonymised_data_justification", "follow-up per person cannot be done on aggregate tables"),
        ("processors", "bob, Bob Analyst, Example University, 2026-01-10"),
        ("requested_validity.start", start.isoformat()),
        ("requested_validity.end", (start + timedelta(days=700)).isoformat()),
    ]


def _form(items: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Repeated names (a checkbox group) as httpx sends them: one list per name."""
    out: dict[str, list[str]] = {}
    for k, v in items:
        out.setdefault(k, []).append(v)
    return out


def _case_id(response) -> str:
    return re.search(r"/cases/(TOISIO-\d{4}-\d+)", response.headers["location"]).group(1)


def test_the_whole_story_through_the_portal(world, tmp_path):
    svc, app, users = world
    alice, hanna, dora, thl1, bob, oscar, olga = (Browser(app, users[u]) for u in
                                                  ("alice", "hanna", "dora", "thl1", "bob", "oscar", "olga"))
    # the applicant: live validation names what is missing, the attachment is uploaded, then submitted
    form = _application(date.today())
    r = alice.post("/apply/validate", form, status=200, page="/apply")
    assert "research_plan" in r.text
    r = alice.post("/apply/attach", {"which": "research_plan"}, status=200, page="/apply",
                   files={"research_plan_file": ("plan.md", b"# Research plan\n\nSurvival.\n", "text/markdown")})
    sha = re.search(r'name="research_plan.sha256" value="([0-9a-f]{64})"', r.text).group(1)
    form += [("research_plan.filename", "plan.md"), ("research_plan.sha256", sha)]
    assert "No problems found" in alice.post("/apply/validate", form, status=200, page="/apply").text
    case = _case_id(alice.post("/apply", form + [("action", "submit")], page="/apply"))
    page = alice.get(f"/cases/{case}").text
    assert "Diabetes follow-up" in page and "plan.md" in page
    assert alice.get(f"/cases/{case}/attachments/{sha}").content.startswith(b"# Research plan")

    # the handler returns it with a public message and an internal remark; the applicant sees only the first
    hanna.post(f"/cases/{case}/messages", {"text": "Please say which ICD-10 codes", "public": "true"})
    hanna.post(f"/cases/{case}/messages", {"text": "internal: check the cohort size", "public": "false"})
    hanna.post(f"/cases/{case}/actions/return", {"reason": "the codes are missing"})
    page = alice.get(f"/cases/{case}").text
    assert "Please say which ICD-10 codes" in page and "check the cohort size" not in page
    alice.post(f"/cases/{case}/messages", {"text": "E11, added to the plan"})
    alice.post(f"/cases/{case}/actions/resubmit", {})
    assert "check the cohort size" in hanna.get(f"/cases/{case}").text

    # completeness, estimates from the controller, acceptance, presentation and the decision by another person
    hanna.post(f"/cases/{case}/actions/confirm_complete", {})
    hanna.post(f"/cases/{case}/actions/request_estimates", {})
    assert case in thl1.get("/estimates").text
    for registry in ("hilmo", "population"):
        thl1.post(f"/cases/{case}/actions/record_estimate",
                  {"registry": registry, "cost_eur": "300", "working_days": "10"})
    hanna.post(f"/cases/{case}/actions/send_estimate", {})
    alice.post(f"/cases/{case}/actions/accept", {})
    hanna.post(f"/cases/{case}/actions/present", {"summary": "in order"})
    hanna.post(f"/cases/{case}/actions/approve", {}, status=403)  # the presenter may not decide
    dora.post(f"/cases/{case}/actions/approve", {"work_hours": "2"})
    decision = alice.get(f"/cases/{case}/decision").text
    assert "The data permit is granted" in decision or "Käyttölupa myönnetään" in decision
    assert alice.get(f"/cases/{case}/decision.pdf").content.startswith(b"%PDF")

    # delivery and the workspace (made by the service's pipeline in production)
    from secure_env.workspace import provision
    from tests.factories import who

    hanna.post(f"/cases/{case}/actions/start_extraction", {})
    hanna.post(f"/cases/{case}/actions/mark_delivered", {"manifest_sha256": "f" * 64})
    hanna.post(f"/cases/{case}/actions/activate", {})
    provision.create(svc, who(svc, "hanna"), case, make_delivery(tmp_path / "delivery", case))
    assert case in bob.get("/workspaces").text
    bob.post(f"/workspaces/{case}/link", {}, page="/workspaces")
    assert "token" in bob.get("/workspaces").text.lower()

    # the decider sets the privacy budget on the case page; the analyst sees what is left
    assert "Set the privacy budget" not in hanna.get(f"/cases/{case}").text
    assert "No privacy budget is set" in dora.get(f"/cases/{case}").text
    dora.post(f"/cases/{case}/dp-budget", {"epsilon": "oops"}, status=422, page=f"/cases/{case}")
    dora.post(f"/cases/{case}/dp-budget", {"epsilon": "2.5", "delta": "0"}, page=f"/cases/{case}")
    assert "0 / 2.5" in dora.get(f"/cases/{case}").text and "2.5" in bob.get("/workspaces").text

    # governed ingress: the analyst asks for a lookup table; a data steward rejects it with a reason
    bob.post("/imports", {"permit_id": case, "purpose": "ICD-10 groups for the models"}, page="/imports",
             files={"file": ("icd_groups.csv", b"code,group\nE11,diabetes\n", "text/csv")})
    assert "icd_groups.csv" in bob.get("/imports").text
    page = oscar.get("/imports").text
    assert "ICD-10 groups for the models" in page and "/approve" in page
    assert "/approve" not in bob.get("/imports").text  # nobody decides their own request
    imp = re.search(r'/imports/(IMP-[^/]+)/reject', page).group(1)
    oscar.post(f"/imports/{imp}/reject", {"reason": "use the published classification"}, page="/imports")
    assert "use the published classification" in bob.get("/imports").text
    scratch = provision.paths(svc, case).root / "scratch"
    (scratch / "deaths_by_sex.csv").write_text("sex,n\n1,40\n2,45\n")
    (scratch / "a_raw_counts.csv").write_text("sex,n\n1,3\n2,45\n")
    (scratch / "b_unused.csv").write_text("x,n\n1,99\n")
    form_page = bob.get(f"/workspaces/{case}/outputs/new").text
    assert "scratch/deaths_by_sex.csv" in form_page
    at = {m.group(2): m.group(1) for m in re.finditer(r'name="path_(\d+)" value="([^"]+)"', form_page)}
    table, support = at["scratch/deaths_by_sex.csv"], at["scratch/a_raw_counts.csv"]
    assert table != "0"  # the fields of a file that is not the first in the list are read by its own place

    # the analyst asks for a release of a workspace file, with a supporting file, in a group with its context
    r = bob.post(f"/workspaces/{case}/outputs/new",
                 [("pick", table), ("pick", support), ("path_" + table, "scratch/deaths_by_sex.csv"),
                  ("path_" + support, "scratch/a_raw_counts.csv"), ("path_" + at["scratch/b_unused.csv"], "x"),
                  (f"description_{table}", "deaths by sex"), (f"method_{table}", "count of persons"),
                  (f"statistic_{table}", "count"), (f"index_{table}", "sex"), (f"group_{table}", "mortality"),
                  (f"description_{support}", "unrounded counts behind it"), (f"group_{support}", "mortality"),
                  (f"supporting_{support}", "1"), ("group_context", "deaths for the paper's table 2"),
                  ("controls", "none needed: every count is 40 or more"),
                  ("action", "submit")], page=f"/workspaces/{case}/outputs/new")
    request_id = r.headers["location"].rsplit("/", 1)[1]
    seen = A.view(svc, who(svc, "oscar"), request_id)
    assert {f["name"]: (f["group"], f["supporting"], f["context"]["description"]) for f in seen["files"]} == {
        "deaths_by_sex.csv": ("mortality", False, "deaths by sex"),
        "a_raw_counts.csv": ("mortality", True, "unrounded counts behind it")}
    assert seen["groups"][0]["controls"] == "none needed: every count is 40 or more"
    assert request_id in oscar.get("/outputs").text
    page = oscar.get(f"/outputs/{request_id}").text
    assert "deaths by sex" in page and "<td>45</td>" in page and "deaths for the paper&#39;s table 2" in page
    oscar.post(f"/outputs/{request_id}/vote", {"file": "deaths_by_sex.csv", "decision": "approve",
                                               "comment": "counts are large enough"})
    oscar.post(f"/outputs/{request_id}/comment", {"group": "mortality", "text": "checked against the raw counts",
                                                  "visibility": "private"})
    oscar.post(f"/outputs/{request_id}/comment", {"group": "mortality", "text": "thank you for the raw counts",
                                                  "visibility": "public"})
    page = olga.get(f"/outputs/{request_id}").text
    assert "counts are large enough" not in page and "checked against" not in page  # blind until own review
    oscar.post(f"/outputs/{request_id}/submit_review", {})
    olga.post(f"/outputs/{request_id}/vote", {"file": "deaths_by_sex.csv", "decision": "approve"})
    olga.post(f"/outputs/{request_id}/submit_review", {})
    page = olga.get(f"/outputs/{request_id}").text
    assert "counts are large enough" in page and "checked against the raw counts" in page
    olga.post(f"/outputs/{request_id}/decide", {"outcome": "approve"})
    olga.post(f"/outputs/{request_id}/release", {})
    page = bob.get(f"/outputs/{request_id}").text  # the analyst: the public comment only
    assert "thank you for the raw counts" in page and "checked against the raw counts" not in page
    alice.get(f"/outputs/{request_id}/released/a_raw_counts.csv", status=404)  # a supporting file never leaves

    # the applicant downloads the released file; someone else may not
    assert alice.get(f"/outputs/{request_id}/released/deaths_by_sex.csv").content == b"sex,n\n1,40\n2,45\n"
    eve = Browser(app, users["eve"])
    eve.get(f"/outputs/{request_id}/released/deaths_by_sex.csv", status=403)
    eve.get(f"/cases/{case}", status=403)

    # the holder applies for an amendment from the permit's page: the form is prefilled from the permit
    assert f"/cases/{case}/amend" in alice.get(f"/cases/{case}").text
    assert f"/cases/{case}/amend" not in bob.get(f"/cases/{case}").text  # a named user is not the holder
    eve.get(f"/cases/{case}/amend", status=403)
    amend = alice.get(f"/cases/{case}/amend").text.split('id="amend-form"', 1)[1]
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_.]+)" value="([^"]*)"', amend))
    assert fields["permit_id"] == case and fields["organisation.name"] == "Example University"
    base = [(k, v) for k, v in fields.items() if k != "csrf_token"] + [("title", "More time"), ("action", "submit")]
    r = alice.post("/apply", base, status=422, page=f"/cases/{case}/amend")  # no change asked for
    assert "an amendment needs change" in r.text and "Apply for an amendment of" in r.text
    r = alice.post("/apply", base + [("change.new_valid_until", (date.today() + timedelta(days=900)).isoformat()),
                                     ("change.add_users", "carol, Carol Analyst, Example University, 2026-02-01")],
                   page=f"/cases/{case}/amend")
    amendment = _case_id(r)
    page = hanna.get(f"/cases/{amendment}").text
    assert "Amendment" in page and "More time" in page

    # the auditor finds the story in the log and verifies the chain
    auditor = Browser(app, users["aud"])
    assert "output.downloaded" in auditor.get(f"/audit?subject=output:{request_id}").text
    assert "audit log intact" in auditor.post("/audit/verify", {}, status=200, page="/audit").text


def test_a_form_without_the_csrf_token_is_refused(web):
    _svc, app, users = web
    b = Browser(app, users["alice"])
    r = b.client.post("/apply/validate", data={"title": "x"})
    assert r.status_code == 403 and "csrf_refused" in r.text
    r = b.client.post("/logout", data={"csrf_token": "forged"})
    assert r.status_code == 403


def test_session_cookies_are_httponly_samesite_and_secure_only_over_tls(web, tmp_path):
    svc, app, users = web
    client = TestClient(app)
    r = portal_login(client, users["alice"])
    cookies = r.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("toisio_session="))
    assert "httponly" in session.lower() and "samesite=lax" in session.lower() and "secure" not in session.lower()
    from dataclasses import replace

    from toisio.service import Service

    tls = Service(replace(svc.settings, public_url="https://toisio.example"))
    with serve_in_thread(create_app(tls)) as root:
        client = TestClient(root)
        page = client.get("/login")
        csrf = next(c for c in page.headers.get_list("set-cookie") if c.startswith("toisio_csrf="))
        assert "samesite=strict" in csrf.lower() and "httponly" in csrf.lower() and "secure" in csrf.lower()
        session = next(c for c in page.headers.get_list("set-cookie") if c.startswith("toisio_session="))
        assert "secure" in session.lower() and "httponly" in session.lower()


def test_the_database_holds_no_session_id_and_no_readable_token(web):
    svc, app, users = web
    client = TestClient(app)
    portal_login(client, users["alice"])
    session_id = client.cookies.get("toisio_session")
    from sqlalchemy import select

    from toisio.sessions import WebSessionRow

    with svc.engine.connect() as conn:
        rows = conn.execute(select(WebSessionRow)).all()
    assert rows and all(session_id not in r.id_sha256 for r in rows)
    assert all(b"tsk_" not in r.data for r in rows)


def test_pages_that_change_nothing_in_the_session_do_not_write_it(web, monkeypatch):
    """starsessions stamps every load with its time; a page that changes nothing else is not a session write
    (one transaction per page otherwise), and a change (the language) still is."""
    from toisio import sessions

    _svc, app, users = web
    b = Browser(app, users["alice"])
    writes = []
    real = sessions.DatabaseStore._write

    def counted(self, session_id, data, ttl):
        writes.append(data)
        with self.engine.connect() as conn:
            before = conn.execute(sessions.select(sessions.WebSessionRow.data)).all()
        real(self, session_id, data, ttl)
        with self.engine.connect() as conn:
            after = conn.execute(sessions.select(sessions.WebSessionRow.data)).all()
        written.append(before != after)

    written = []
    monkeypatch.setattr(sessions.DatabaseStore, "_write", counted)
    b.client.get("/cases")  # the first page may add its form token to the session
    writes.clear(), written.clear()
    for _ in range(3):
        assert b.client.get("/cases").status_code == 200
    assert writes and not any(written)
    b.post("/language", {"lang": "sv", "next": "/cases"}, page="/cases")
    assert written[-1]


def test_signing_out_ends_the_session_and_revokes_its_token(web):
    _svc, app, users = web
    b = Browser(app, users["alice"])
    b.post("/logout", {})
    r = b.client.get("/cases")
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_wrong_codes_are_refused_without_saying_which_part_was_wrong(web):
    _svc, app, users = web
    client = TestClient(app, "en")
    token = csrf_of(client.get("/login").text)
    r = client.post("/login", data={"user_id": "alice", "password": "wrong", "code": "123456",
                                    "csrf_token": token})
    assert r.status_code == 401 and "was not accepted" in r.text
    r = client.post("/login", data={"user_id": "nobody", "password": "x", "code": "123456", "csrf_token": token})
    assert r.status_code == 401 and "was not accepted" in r.text


def test_the_language_is_remembered_for_the_user(web):
    _svc, app, users = web
    b = Browser(app, users["alice"], lang=None)
    assert 'lang="fi"' in b.get("/").text  # the default for a browser that says nothing
    b.post("/language", {"lang": "sv", "next": "/cases"})
    assert 'lang="sv"' in b.get("/cases").text and "Ärenden" in b.get("/cases").text
    again = Browser(app, users["alice"], lang="fi")  # a new session of the same user, a Finnish browser
    assert 'lang="sv"' in again.get("/").text
    b.post("/language", {"lang": "en"})
    assert "My tasks" in b.get("/").text


def test_the_catalogue_is_public_and_the_pages_need_sign_in(web):
    _svc, app, _users = web
    client = TestClient(app)
    assert client.get("/catalogue").status_code == 200
    assert "main_dg" in client.get("/catalogue/hilmo").text
    for path in ("/", "/cases", "/apply", "/outputs", "/workspaces", "/audit", "/estimates"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"] == f"/login?next={quote(path)}"


def test_an_open_redirect_after_sign_in_is_not_followed(web):
    _svc, app, users = web
    client = TestClient(app)
    r = portal_login(client, users["alice"], next_path="//evil.example/x")
    assert r.headers["location"] == "/"


def test_no_page_reads_the_database_on_the_event_loop(web, monkeypatch):
    """Signing in and the user's language read the database: on the event loop, one slow read would hold up every
    other request of the process. Every page (an error page too) does them in a worker thread."""
    import asyncio

    from toisio import identity

    calls: list[tuple[str, bool]] = []

    def on_the_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def watched(name, real):
        def wrapper(*args, **kwargs):
            calls.append((name, on_the_loop()))
            return real(*args, **kwargs)
        return wrapper

    for name in ("authenticate", "language_of"):
        monkeypatch.setattr(identity, name, watched(name, getattr(identity, name)))
    _svc, app, users = web
    b = Browser(app, users["hanna"])
    for path in ("/", "/cases", "/notifications", "/catalogue", "/estimates", "/outputs", "/workspaces"):
        b.get(path)
    b.get("/cases/no-such-case", status=404)
    assert {name for name, _ in calls} == {"authenticate", "language_of"}
    assert [c for c in calls if c[1]] == []
