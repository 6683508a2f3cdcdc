"""Browser end-to-end: Debian's Chromium, driven by Playwright, logs in to a workspace with an analyst token,
runs a cell that reads the permit's data, and finds no download, export, share or copy-output command.

The browser is /usr/bin/chromium from Debian's packages (Playwright downloads no browser).  A screenshot is
saved under test-artifacts/.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from secure_env.workspace import provision as W
from secure_env.workspace import server as S
from tests.factories import make_case, make_delivery, make_service, make_staff, who

pytestmark = [pytest.mark.slow, pytest.mark.integration]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FORBIDDEN_MENU_LABELS = ("Download", "Copy Download Link", "Open in New Browser Tab", "Copy Shareable Link",
                         "Save and Export Notebook As", "Export Notebook", "Copy Output to Clipboard",
                         "New Terminal", "Terminal")


def _notebook(code: str) -> dict:
    return {"cells": [{"cell_type": "code", "execution_count": None, "id": "c1", "metadata": {}, "outputs": [],
                       "source": code}],
            "metadata": {"kernelspec": {"name": "toisio-offline", "display_name": "Python (no network)",
                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


@pytest.fixture
def workspace(tmp_path):
    if not Path(CHROMIUM).exists():
        if os.environ.get("TOISIO_REQUIRE_BROWSER"):
            pytest.fail(f"{CHROMIUM} is missing (Debian package 'chromium'; .ci/run installs it)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    svc = make_service(tmp_path / "home")
    staff = make_staff(svc)
    permit = make_case(svc, staff, day=date.today() - timedelta(days=40)).case_id
    tokens = W.create(svc, who(svc, "hanna"), permit, make_delivery(tmp_path / "delivery", permit))
    code = ("import os, pandas as pd\n"
            "persons = pd.read_parquet(os.path.join(os.environ['TOISIO_DATA'], 'persons'))\n"
            "print(f'persons in the cohort: {len(persons)}')")
    (W.paths(svc, permit).root / "analysis.ipynb").write_text(json.dumps(_notebook(code)))
    status = S.start(svc, who(svc, "hanna"), permit)
    yield svc, permit, tokens["bob"], status.url
    S.stop(svc, who(svc, "hanna"), permit)


def _menu_labels(page) -> list[str]:
    """The labels of the open menu, once it is drawn (a loaded machine may take a while)."""
    page.locator(".lm-Menu-itemLabel:visible").first.wait_for(state="visible")
    return [t.strip() for t in page.locator(".lm-Menu-itemLabel").all_inner_texts()]


def _session_actions(svc, permit, wanted, timeout=60.0):
    """The permit's audited (actor, action) pairs, waiting until ``wanted`` are all in.

    The server records a cell once both its reply and the kernel's idle status are in, which can
    be a moment after the browser shows the output.
    """
    from toisio import audit

    deadline = time.monotonic() + timeout
    while True:
        with svc.engine.connect() as conn:
            actions = {(e.actor, e.action) for e in audit.events(conn, subject=f"permit:{permit}")}
        if wanted <= actions or time.monotonic() > deadline:
            return actions
        time.sleep(0.5)


def test_analyst_runs_a_cell_in_chromium_and_finds_no_way_out(workspace):
    from playwright.sync_api import expect, sync_playwright

    svc, permit, token, url = workspace
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions"])
        try:
            page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{url}lab/tree/analysis.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell")
            expect(page.locator(".jp-Notebook-ExecutionIndicator, .jp-Toolbar-kernelStatus").first).to_be_visible()
            page.wait_for_function("document.querySelector('.jp-Notebook-ExecutionIndicator')?.getAttribute("
                                   "'data-status') === 'idle'", timeout=60_000)
            output = page.locator(".jp-OutputArea-output").first
            for attempt in range(3):  # on a loaded machine the first key press can reach a cell not yet ready
                page.locator(".jp-Cell .jp-InputArea-editor").first.click()
                page.keyboard.press("Control+Enter")  # run the cell in place
                try:
                    expect(output).to_contain_text("persons in the cohort: 3", timeout=30_000)
                    break
                except AssertionError:
                    if attempt == 2:
                        raise

            page.get_by_role("menuitem", name="File", exact=True).click()
            file_menu = _menu_labels(page)
            page.keyboard.press("Escape")
            page.locator(".jp-DirListing-item", has_text="analysis.ipynb").click(button="right")
            context_menu = _menu_labels(page)
            page.keyboard.press("Escape")
            page.locator(".jp-OutputArea-output").first.click(button="right")
            output_menu = _menu_labels(page)
            page.keyboard.press("Escape")
            page.screenshot(path=str(ARTIFACTS / "workspace-browser.png"), full_page=True)
        finally:
            browser.close()
    assert "Save Notebook" in " ".join(file_menu) or "Save" in " ".join(file_menu)  # the menus were read
    assert "Rename" in " ".join(context_menu)
    for menu in (file_menu, context_menu, output_menu):
        for label in FORBIDDEN_MENU_LABELS:
            assert not any(item.startswith(label) for item in menu), (label, menu)
    assert (ARTIFACTS / "workspace-browser.png").stat().st_size > 10_000
    wanted = {("bob", "workspace.login"), ("bob", "workspace.cell_executed")}
    assert wanted <= _session_actions(svc, permit, wanted)
    shutil.rmtree(ARTIFACTS / "unused", ignore_errors=True)


def _axe_problems(page, name: str) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    return [f"{name}: {v['id']} ({v['impact']}): {v['help']}" for v in Axe().run(page).response["violations"]
            if v.get("impact") in ("serious", "critical")]


def test_analyst_asks_for_a_release_from_jupyterlab_in_their_language(workspace):
    """JupyterLab's menu bar opens the release page in a tab of its own; the analyst switches it to Finnish, picks
    a table from the workspace, describes it and submits it as themselves; the page shows the automatic check.
    Every state of the page passes axe-core with no serious or critical violation."""
    from playwright.sync_api import expect, sync_playwright

    from secure_env.airlock import outputs as A

    svc, permit, token, url = workspace
    root = W.paths(svc, permit).root
    (root / "by_sex.csv").write_text("sex,persons\n1,40\n2,35\n")
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900}, locale="sv-FI")
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{url}lab?token={token}")
            page.get_by_role("menuitem", name="Release", exact=True).click()
            with context.expect_page() as opened:
                page.get_by_role("menuitem", name="Ask for a release").click()
            release = opened.value
            release.wait_for_load_state()
            expect(release.locator("h1")).to_have_text("Begär utlämnande")  # the browser's language: Swedish
            problems += _axe_problems(release, "release page (sv)")
            release.get_by_role("link", name="Suomi").click()
            expect(release.locator("h1")).to_have_text("Pyydä luovutusta")
            expect(release.locator(".banner")).to_contain_text(permit)
            release.locator("fieldset", has_text="by_sex.csv").get_by_role("checkbox").first.check()
            fields = release.locator("fieldset", has_text="by_sex.csv")
            fields.get_by_label("Mitä se näyttää").fill("persons by sex")
            release.get_by_role("button", name="Lähetä tarkastettavaksi").click()  # "how it was made" is missing
            expect(release.get_by_role("alert")).to_contain_text("method")
            problems += _axe_problems(release, "release page with an error (fi)")
            release.get_by_role("link", name="Edellinen").click()
            fields = release.locator("fieldset", has_text="by_sex.csv")
            fields.get_by_role("checkbox").first.check()
            fields.get_by_label("Mitä se näyttää").fill("persons by sex")
            fields.get_by_label("Miten se tehtiin").fill("pandas value_counts, counts of 10 or more")
            release.get_by_role("button", name="Lähetä tarkastettavaksi").click()
            expect(release.locator("h2").first).to_contain_text("Lähetetty")  # submitted, in plain Finnish
            expect(release.locator("tbody")).to_contain_text("by_sex.csv")
            problems += _axe_problems(release, "release page after submitting (fi)")
            release.screenshot(path=str(ARTIFACTS / "workspace-release-page.png"), full_page=True)
        finally:
            browser.close()
    assert not problems, "accessibility (axe-core) serious or critical violations:\n" + "\n".join(problems)
    states = {r["state"] for r in A.requests_for_permit(svc, who(svc, "bob"), permit) if r["requester"] == "bob"}
    assert states == {"submitted", "withdrawn"}  # the refused attempt left no draft behind
