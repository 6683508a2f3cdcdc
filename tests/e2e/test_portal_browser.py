"""The portal in a real browser (Playwright driving Debian's /usr/bin/chromium; no browser is downloaded):
each role's main path, accessibility checked with axe-core on every page visited (0 serious or critical
violations), and the applicant's path in Finnish and Swedish too.  Screenshots go to test-artifacts/portal/."""

from __future__ import annotations

import os
import re
import shutil
from datetime import date, timedelta
from pathlib import Path

import pytest

from tests.factories import PortalUser, make_delivery, make_service, serve_in_thread, who
from toisio.app.api import create_app

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "portal"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions"]


@pytest.fixture
def portal(tmp_path):
    if not shutil.which(CHROMIUM):
        if os.environ.get("TOISIO_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing (Debian package 'chromium'; .ci/run installs it)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    svc = make_service(tmp_path / "home")
    people = {"alice": (), "bob": (), "hanna": ("handler",), "dora": ("decider",), "thl1": ("controller",),
              "oscar": ("output_checker",), "olga": ("output_checker",), "aud": ("auditor",)}
    users = {u: PortalUser(svc, u, roles, ("hilmo", "population") if u == "thl1" else (),
                           name="Alice Researcher" if u == "alice" else None) for u, roles in people.items()}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with serve_in_thread(create_app(svc)) as root:
        yield svc, root, users, tmp_path


class Session:
    """One person's browser context, signed in; every page they see is checked with axe."""

    def __init__(self, browser, root: str, user: PortalUser, lang: str, problems: list, shots: str):
        self.root, self.user, self.problems, self.shots = root, user, problems, shots
        self.context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=lang,
                                           extra_http_headers={"Accept-Language": lang}, bypass_csp=False)
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.page.goto(f"{root}/login")
        self.check("login")
        self.page.fill("#user_id", user.user_id)
        self.page.fill("#password", user.PASSWORD)
        self.page.fill("#code", user.code())
        self.page.locator("main form button[type=submit]").click()
        self.page.wait_for_url(re.compile(r".*/$"))
        self.check("home")

    def go(self, path: str, name: str | None = None):
        self.page.goto(self.root + path)
        self.check(name or path)
        return self.page

    def check(self, name: str) -> None:
        from axe_playwright_python.sync_playwright import Axe

        results = Axe().run(self.page)
        for v in results.response["violations"]:
            if v.get("impact") in ("serious", "critical"):
                nodes = "; ".join(n.get("target", [""])[0] if isinstance(n.get("target"), list) else str(n)
                                  for n in v["nodes"][:3])
                self.problems.append(f"{self.user.user_id} {name}: {v['id']} ({v['impact']}): {v['help']} [{nodes}]")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{self.shots}-{name}.png"), full_page=True)

    def act(self, case: str, action: str, fields: dict[str, str] | None = None) -> None:
        """Fill and press one of the case page's action forms."""
        self.go(f"/cases/{case}", f"case {action}")
        form = self.page.locator(f"form[action='/cases/{case}/actions/{action}']")
        for name, value in (fields or {}).items():
            target = form.locator(f"[name='{name}']")
            if target.evaluate("e => e.tagName") == "SELECT":
                target.select_option(value)
            else:
                target.fill(value)
        form.locator("button[type=submit]").click()
        self.page.wait_for_load_state()
        assert "Error code" not in self.page.content() and "Virhekoodi" not in self.page.content(), \
            self.page.inner_text("main")


def _apply(s: Session, tmp: Path, *, lang_word_submit: str) -> str:
    """The applicant fills the multi-step form, uploads the research plan, sees no problems and submits."""
    page = s.go("/apply", "apply")
    assert page.is_hidden("#step-2") and page.is_hidden("#apply-finish")  # one step at a time

    def next_step(n: int) -> None:
        page.click("#step-next")
        page.wait_for_selector(f"#step-{n}", state="visible")
        assert page.is_hidden(f"#step-{n - 1}")
        assert page.evaluate("document.activeElement.tagName") == "LEGEND"  # the focus moves to the new step

    page.check("input[name=kind][value=data_permit]")
    page.fill("#title", "Diabetes follow-up")
    page.select_option("#purpose", "scientific_research")
    next_step(2)
    s.check("apply step 2")
    page.fill("#organisation\\.name", "Example University")
    page.fill("#organisation\\.business_id", "0245896-3")
    page.fill("#billing\\.address", "PO Box 1")
    next_step(3)
    page.fill("#extraction\\.target_group", "adults in Hilmo")
    for reg, var in (("population", "sex"), ("population", "birth_date"), ("hilmo", "admission_date"),
                     ("hilmo", "main_dg")):
        page.check(f"input[name='extraction.registries.{reg}.variables'][value='{var}']")
    page.fill("#p-hilmo-start", "2015-01-01")
    page.fill("#p-hilmo-end", "2020-12-31")
    page.fill("#minimisation", "only what the survival analysis uses")
    page.fill("#pseudo", "follow-up per person cannot be done on aggregate tables")
    next_step(4)
    page.fill("#processors", "bob, Bob Analyst, Example University, 2026-01-10")
    page.fill("#valid-start", date.today().isoformat())
    page.fill("#valid-end", (date.today() + timedelta(days=700)).isoformat())
    page.locator("#valid-end").dispatch_event("change")
    # live validation (of the latest change: an earlier answer may still be on screen): only the research plan
    # is missing now
    page.wait_for_function("() => { const p = document.querySelector('#problems .error');"
                           " return p !== null && p.innerText.includes('research_plan')"
                           " && !p.innerText.includes('organisation'); }")
    assert page.inner_text("[data-problems-of='5']") == "1"  # the step with the problem is marked
    page.click("#problems a[data-go='5']")  # the problem's link opens its step
    page.wait_for_selector("#step-5", state="visible")
    s.check("apply step 5")
    plan = tmp / "plan.md"
    plan.write_text("# Research plan\n\nSurvival after diagnosis.\n")
    page.set_input_files("#research_plan_file", str(plan))
    page.click("button[form='upload-research_plan']")
    page.wait_for_selector("#research_plan_slot .ok-box")
    page.locator("#title").dispatch_event("change")
    page.wait_for_selector("#problems .ok-box")
    s.check("apply filled")
    s.shot("apply")
    page.get_by_role("button", name=lang_word_submit).click()
    page.wait_for_url(re.compile(r".*/cases/TOISIO-\d+-\d+"))
    s.check("case")
    return re.search(r"(TOISIO-\d+-\d+)", page.url).group(1)


def test_every_role_does_its_work_in_the_browser(portal):
    from playwright.sync_api import sync_playwright

    svc, root, users, tmp = portal
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            s = {u: Session(browser, root, users[u], "en", problems, u) for u in
                 ("alice", "hanna", "dora", "thl1", "bob", "oscar", "olga", "aud")}
            alice, hanna = s["alice"], s["hanna"]
            alice.go("/catalogue", "catalogue")
            alice.go("/catalogue/hilmo", "dataset")
            case = _apply(alice, tmp, lang_word_submit="Submit the application")

            hanna.go("/", "handler tasks")
            assert case in hanna.page.inner_text("main")
            page = hanna.go(f"/cases/{case}")
            page.fill("#message-text", "Please name the ICD-10 codes")
            page.get_by_role("button", name="Send").click()
            hanna.act(case, "return", {"reason": "the codes are missing"})
            hanna.shot("case")
            page = alice.go(f"/cases/{case}")
            assert "Please name the ICD-10 codes" in page.inner_text("#messages ~ div, main")
            alice.act(case, "resubmit")
            hanna.act(case, "confirm_complete")
            hanna.act(case, "request_estimates")
            s["thl1"].go("/estimates", "estimates")
            for registry in ("hilmo", "population"):
                s["thl1"].act(case, "record_estimate", {"registry": registry, "cost_eur": "300", "working_days": "10"})
            hanna.act(case, "send_estimate")
            alice.act(case, "accept")
            hanna.act(case, "present", {"summary": "in order"})
            s["dora"].go("/", "decider tasks")
            s["dora"].act(case, "approve", {"work_hours": "2"})
            page = alice.go(f"/cases/{case}", "case decided")
            alice.shot("decided")
            alice.go(f"/cases/{case}/decision", "decision")
            alice.shot("decision")
            hanna.act(case, "start_extraction")
            hanna.act(case, "mark_delivered", {"manifest_sha256": "f" * 64})
            hanna.act(case, "activate")

            from secure_env.workspace import provision

            provision.create(svc, who(svc, "hanna"), case, make_delivery(tmp / "delivery", case))
            (provision.paths(svc, case).root / "scratch" / "deaths_by_sex.csv").write_text("sex,n\n1,40\n2,45\n")
            bob = s["bob"]
            page = bob.go("/workspaces", "workspaces")
            page.get_by_role("button", name="Get my login link").click()
            page.wait_for_selector(".ok-box")
            bob.check("workspace link")
            bob.go("/imports", "imports")  # governed ingress: the form to ask for an import (axe-checked)
            page = bob.go(f"/workspaces/{case}/outputs/new", "new output")
            i = page.get_attribute("input[type=hidden][value='scratch/deaths_by_sex.csv']", "name").split("_")[1]
            page.check(f"input[name=pick][value='{i}']")
            page.fill(f"#desc-{i}", "deaths by sex")
            page.fill(f"#method-{i}", "count of persons")
            page.fill(f"#index-{i}", "sex")
            page.fill(f"#group-{i}", "mortality")
            page.fill("#group_context", "deaths for table 2")
            page.get_by_role("button", name="Submit for review").click()
            page.wait_for_url(re.compile(r".*/outputs/OUT-.*"))
            request_id = page.url.rsplit("/", 1)[1]
            bob.check("output request")

            for checker, comment in (("oscar", "counts are large enough"), ("olga", "")):
                c = s[checker]
                c.go("/outputs", "checker queue")
                page = c.go(f"/outputs/{request_id}", "review")
                if checker == "olga":
                    assert "counts are large enough" not in page.inner_text("main")  # blind until own review
                page.check("input[name=decision][value=approve]")
                if comment:
                    page.fill("#comment-1-1", comment)
                page.get_by_role("button", name="Save the vote").click()
                page.wait_for_load_state()
                c.go(f"/outputs/{request_id}")
                page.get_by_role("button", name="Submit my review").click()
                page.wait_for_load_state()
                c.check("reviewed")
            olga = s["olga"]
            page = olga.go(f"/outputs/{request_id}")
            assert "counts are large enough" in page.inner_text("main")
            olga.shot("review")
            page.select_option("#outcome", "approve")
            page.get_by_role("button", name="Record the decision").click()
            page.wait_for_load_state()
            olga.go(f"/outputs/{request_id}")
            olga.page.get_by_role("button", name="Release").click()
            olga.page.wait_for_load_state()

            page = alice.go("/outputs", "outputs")
            with page.expect_download() as download:
                page.get_by_role("link", name="deaths_by_sex.csv").click()
            assert Path(download.value.path()).read_text() == "sex,n\n1,40\n2,45\n"
            alice.shot("outputs")

            aud = s["aud"]
            page = aud.go(f"/audit?subject=output:{request_id}", "audit")
            assert "output.downloaded" in page.inner_text("main")
            page.get_by_role("button", name="Verify the chain").click()
            page.wait_for_selector(".ok-box")
            aud.check("audit verified")
            aud.go("/indicators", "indicators")
            aud.shot("indicators")
            # the remaining screens, checked too: lists, the inbox, a draft's edit form, an error page
            alice.go("/notifications", "notifications")
            alice.go("/cases", "cases")
            hanna.go("/cases?state=active", "cases filtered")
            s["thl1"].go("/catalogue?q=hilmo&purpose=statistics", "catalogue search")
            page = alice.go("/cases/TOISIO-1999-1", "error page")
            assert "Not found" in page.inner_text("main")
        finally:
            browser.close()
    assert not problems, "accessibility (axe-core) serious or critical violations:\n" + "\n".join(problems)


@pytest.mark.parametrize("lang, submit, status", [("fi", "Lähetä hakemus", "Lähetetty"),
                                                  ("sv", "Skicka in ansökan", "Inskickad")])
def test_the_applicants_path_in_finnish_and_swedish(portal, lang, submit, status):
    from playwright.sync_api import sync_playwright

    _svc, root, users, tmp = portal
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            alice = Session(browser, root, users["alice"], "en", problems, f"alice-{lang}")
            page = alice.page
            page.select_option("#lang-select", lang)
            page.locator("header form[action='/language'] button").click()
            page.wait_for_load_state()
            assert page.locator("html").get_attribute("lang") == lang
            alice.go("/catalogue", "catalogue")
            case = _apply(alice, tmp, lang_word_submit=submit)
            assert status in page.inner_text("main")
            alice.shot("case")
        finally:
            browser.close()
    assert not problems, "accessibility (axe-core) serious or critical violations:\n" + "\n".join(problems)
    assert case


def test_the_accessibility_check_catches_a_page_that_breaks_the_rules(portal):
    """The axe check above can fail: a page with an unlabelled field and an image without text is caught."""
    from playwright.sync_api import sync_playwright

    _svc, root, users, _tmp = portal
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            s = Session(browser, root, users["alice"], "en", problems, "axe-control")
            assert problems == []
            s.page.set_content('<html><body><img src="/static/x.png"><input type="text"></body></html>')
            s.check("broken page")
        finally:
            browser.close()
    assert any("image-alt" in p for p in problems) and any("label" in p for p in problems), problems
