"""The demo's second story, told through the web portal's own routes (what a browser does), as each person.

A second data permit application is filled in the portal with its research plan uploaded, returned by the
handler with a message, resubmitted, estimated, accepted, presented and approved by a different person;
the decision document is fetched as PDF.  Then the analyst asks from the portal for a release of a file in
the first permit's workspace, two checkers review it blind (one with a comment), one releases it, and the
applicant downloads it.

Usage: demo_portal.py URL USERS_FILE PASSWORD FIRST_PERMIT
"""

from __future__ import annotations

import re
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import httpx
import pyotp


class Person:
    """A browser session of one demo user."""

    def __init__(self, root: str, user: str, secret: str, password: str):
        self.user = user
        self.http = httpx.Client(base_url=root, timeout=60, headers={"Accept-Language": "en"})
        totp = pyotp.TOTP(secret)
        for at in (time.time(), time.time() + 30):  # a code used by the command line's sign-in is refused
            r = self.http.post("/login", data={"user_id": user, "password": password, "code": totp.at(at),
                                               "next": "/", "csrf_token": self._csrf("/login")})
            if r.status_code == 303:
                return
        raise SystemExit(f"{user} could not sign in to the portal: {r.status_code}")

    def _csrf(self, page: str) -> str:
        return re.search(r'name="csrf_token" value="([^"]+)"', self.http.get(page).text).group(1)

    def post(self, path: str, data, *, files=None, page: str = "/") -> httpx.Response:
        items = list(data.items()) if isinstance(data, dict) else list(data)
        fields: dict[str, list[str]] = {}
        for k, v in [*items, ("csrf_token", self._csrf(page))]:
            fields.setdefault(k, []).append(v)
        r = self.http.post(path, data=fields, files=files)
        if r.status_code >= 400:
            raise SystemExit(f"{self.user}: POST {path} -> {r.status_code}\n{_text(r.text)}")
        return r

    def get(self, path: str) -> httpx.Response:
        r = self.http.get(path)
        if r.status_code >= 400:
            raise SystemExit(f"{self.user}: GET {path} -> {r.status_code}\n{_text(r.text)}")
        return r


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))[:600]


def say(text: str) -> None:
    print(f"   {text}", flush=True)


def main(root: str, users_file: str, password: str, first_permit: str) -> None:
    secrets = dict(line.split() for line in Path(users_file).read_text().splitlines() if line.strip())
    people = {u: Person(root, u, secrets[u], password) for u in ("alice", "hanna", "dora", "thl", "kela", "bob",
                                                                 "oscar", "olga")}
    alice, hanna, dora, bob = people["alice"], people["hanna"], people["dora"], people["bob"]
    say("everyone signed in to the portal with password + one-time code")

    start = date.today() + timedelta(days=30)
    form = [("kind", "data_permit"), ("schema_version", "1"), ("title", "Statin use and cancer incidence"),
            ("purpose", "scientific_research"), ("fee_category", "standard"), ("applicant.user_id", "alice"),
            ("applicant.name", "Alice Researcher"), ("applicant.email", "alice@uni.example"),
            ("organisation.name", "Example University"), ("organisation.business_id", "0245896-3"),
            ("billing.address", "PO Box 1, 00014 Example University"), ("extraction.target_group", "adults"),
            ("extraction.registries.population.variables", "sex"),
            ("extraction.registries.population.variables", "birth_date"),
            ("extraction.registries.kela_purchases.variables", "purchase_date"),
            ("extraction.registries.kela_purchases.variables", "atc"),
            ("extraction.registries.kela_purchases.period.start", "2010-01-01"),
            ("extraction.registries.kela_purchases.period.end", "2023-12-31"),
            ("minimisation_justification", "exposure (statin purchases), sex and age only"),
            ("pseudonymised_data_justification", "time-varying exposure per person needs individual-level data"),
            ("processors", "bob, Bob Analyst, Example University, 2026-01-10"),
            ("requested_validity.start", start.isoformat()),
            ("requested_validity.end", (start + timedelta(days=730)).isoformat())]
    r = alice.post("/apply/validate", form, page="/apply")
    say("live validation of the half-filled form: " + ("research plan missing" if "research_plan" in r.text
                                                       else _text(r.text)))
    r = alice.post("/apply/attach", {"which": "research_plan"}, page="/apply",
                   files={"research_plan_file": ("statin-plan.md", b"# Statins and cancer\n\nCohort design.\n",
                                                 "text/markdown")})
    sha = re.search(r'name="research_plan.sha256" value="([0-9a-f]{64})"', r.text).group(1)
    form += [("research_plan.filename", "statin-plan.md"), ("research_plan.sha256", sha)]
    r = alice.post("/apply", [*form, ("action", "submit")], page="/apply")
    case = re.search(r"(TOISIO-\d+-\d+)", r.headers["location"]).group(1)
    say(f"alice applied in the portal: {case} (research plan sha256 {sha[:12]}...)")

    hanna.post(f"/cases/{case}/messages", {"text": "Which ATC codes count as statins?", "public": "true"})
    hanna.post(f"/cases/{case}/messages", {"text": "check the Kela cost estimate", "public": "false"})
    hanna.post(f"/cases/{case}/actions/return", {"reason": "please name the ATC codes"})
    assert "check the Kela cost estimate" not in alice.get(f"/cases/{case}").text
    alice.post(f"/cases/{case}/messages", {"text": "C10AA, all statins"})
    alice.post(f"/cases/{case}/actions/resubmit", {})
    say("hanna returned it with a public message (her internal remark stays hidden); alice answered, resubmitted")
    hanna.post(f"/cases/{case}/actions/confirm_complete", {})
    hanna.post(f"/cases/{case}/actions/request_estimates", {})
    people["thl"].post(f"/cases/{case}/actions/record_estimate", {"registry": "population", "cost_eur": "200",
                                                                   "working_days": "5"})
    people["kela"].post(f"/cases/{case}/actions/record_estimate", {"registry": "kela_purchases",
                                                                    "cost_eur": "650", "working_days": "20"})
    hanna.post(f"/cases/{case}/actions/send_estimate", {})
    alice.post(f"/cases/{case}/actions/accept", {})
    hanna.post(f"/cases/{case}/actions/present", {"summary": "complete, estimates accepted"})
    dora.post(f"/cases/{case}/actions/approve", {"work_hours": "3"})
    pdf = alice.get(f"/cases/{case}/decision.pdf?lang=fi").content
    say(f"estimates from THL and Kela, accepted, presented by hanna, approved by dora; decision PDF "
        f"{len(pdf):,} bytes")

    scratch_file = "scratch/cohort_by_age_band.csv"
    form_page = bob.get(f"/workspaces/{first_permit}/outputs/new").text
    at = re.search(rf'name="path_(\d+)" value="{re.escape(scratch_file)}"', form_page).group(1)
    r = bob.post(f"/workspaces/{first_permit}/outputs/new",
                 [("pick", at), (f"path_{at}", scratch_file),
                  (f"description_{at}", "cohort members by age band and role"),
                  (f"method_{at}", "distinct pseudonyms"), (f"statistic_{at}", "count"), (f"index_{at}", "age_band"),
                  (f"group_{at}", "cohort description"), ("group_context", "table 1 of the cohort paper"),
                  ("controls", "safe_crosstab suppression"),
                  ("action", "submit")], page=f"/workspaces/{first_permit}/outputs/new")
    request_id = r.headers["location"].rsplit("/", 1)[1]
    say(f"bob asked in the portal for a release of {scratch_file}: {request_id}")
    for checker, comment in (("oscar", "rows are above the threshold"), ("olga", "")):
        c = people[checker]
        c.post(f"/outputs/{request_id}/vote", {"file": "cohort_by_age_band.csv", "decision": "approve",
                                               "comment": comment})
        if checker == "oscar":
            c.post(f"/outputs/{request_id}/comment", {"group": "cohort description", "visibility": "private",
                                                      "text": "age bands match the permit's generalisation"})
        c.post(f"/outputs/{request_id}/submit_review", {})
    people["olga"].post(f"/outputs/{request_id}/decide", {"outcome": "approve"})
    people["olga"].post(f"/outputs/{request_id}/release", {})
    data = alice.get(f"/outputs/{request_id}/released/cohort_by_age_band.csv").content
    say(f"oscar and olga reviewed blind, olga released; alice downloaded {len(data):,} bytes")
    for p in people.values():
        p.http.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
