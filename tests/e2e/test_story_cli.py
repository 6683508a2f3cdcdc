"""The whole story through the `toisio` command, as the people who use it run it: an operator adds the
accounts, each person signs in with a password and a one-time code, and every step is taken by whoever is
signed in (no Spark: the extraction's delivery is a small one made by the factory)."""

import json
import re
from pathlib import Path

import pyotp
import pytest
from typer.testing import CliRunner

from tests.factories import make_delivery, store_plan
from toisio.app.cli import app

PASSWORD = "a demo password long enough"
PEOPLE = {
    "alice": [], "bob": [], "hanna": ["--role", "handler"], "dora": ["--role", "decider"],
    "thl": ["--role", "controller", "--registry", "hilmo", "--registry", "population"],
    "oscar": ["--role", "output_checker"], "olga": ["--role", "output_checker"], "aud": ["--role", "auditor"],
}


class Story:
    def __init__(self, root: Path):
        self.root = root
        self.secrets: dict[str, str] = {}

    def run(self, who: str | None, *args: str, input: str | None = None, ok: bool = True):
        env = {"TOISIO_TOKEN": "", "XDG_CONFIG_HOME": str(self.root / "config" / (who or "operator"))}
        r = CliRunner().invoke(app, list(args), input=input, env=env)
        if ok:
            assert r.exit_code == 0, (who, args, r.output)
        return r

    def add(self, user: str, extra: list[str]) -> None:
        r = self.run(None, "users", "add", user, "--name", user.title(), "--email", f"{user}@x.example",
                     *extra, "--password-stdin", input=PASSWORD + "\n")
        self.secrets[user] = re.search(r"TOTP secret \(shown once[^)]*\): (\w+)", r.output).group(1)

    def login(self, user: str) -> None:
        self.run(user, "login", "--user", user, "--password-stdin", "--code",
                 pyotp.TOTP(self.secrets[user]).now(), input=PASSWORD + "\n")


@pytest.fixture
def story(tmp_path, monkeypatch):
    monkeypatch.setenv("TOISIO_HOME", str(tmp_path / "home"))
    s = Story(tmp_path)
    for user, extra in PEOPLE.items():
        s.add(user, extra)
        s.login(user)
    return s


def _case_id(output: str) -> str:
    return re.search(r"TOISIO-\d{4}-\d+", output).group(0)


def test_the_whole_story_signed_in(story, tmp_path):
    from toisio.service import service

    s = story
    svc = service()
    assert "hanna (handler" in s.run("hanna", "whoami").output
    # 1. Alice applies
    store_plan(svc)
    s.run("alice", "permits", "attach", "examples/research-plan.md")
    schema = s.run("alice", "permits", "schema")
    assert json.loads(schema.stdout)["title"]
    form = tmp_path / "application.json"
    from tests.factories import make_form

    form.write_text(make_form(applicant={"name": "Alice", "email": "alice@x.example", "user_id": "alice"},
                              processors=[{"name": "Bob", "user_id": "bob", "organisation": "U",
                                           "confidentiality_undertaking_signed": "2026-01-10"}],
                              requested_validity={"start": "2026-01-01", "end": "2030-12-31"}
                              ).model_dump_json())
    case = _case_id(s.run("alice", "permits", "submit", str(form)).output)
    # 2. The authority handles it; a controller estimates; alice accepts; a different person decides
    s.run("hanna", "permits", "confirm-complete", case)
    s.run("hanna", "permits", "request-estimates", case)
    assert case in s.run("hanna", "permits", "queue").output
    assert case in s.run("dora", "permits", "queue", "--all").output
    for registry in ("hilmo", "population"):
        s.run("thl", "permits", "record-estimate", case, "--set", f"registry={registry}", "--set", "cost_eur=400",
              "--set", "working_days=20")
    refused = s.run("alice", "permits", "send-estimate", case, ok=False)
    assert refused.exit_code == 1 and "refused (forbidden)" in refused.output
    s.run("hanna", "permits", "send-estimate", case)
    s.run("alice", "permits", "accept", case)
    s.run("hanna", "permits", "present", case, "--set", "summary=in order")
    refused = s.run("hanna", "permits", "approve", case, ok=False)
    assert "refused" in refused.output
    s.run("dora", "permits", "approve", case, "--set", "valid_until=2030-12-31")
    s.run("hanna", "permits", "start-extraction", case)
    delivery = make_delivery(tmp_path / "delivery", case)
    sha = __import__("hashlib").sha256((delivery / "manifest.json").read_bytes()).hexdigest()
    s.run("hanna", "permits", "mark-delivered", case, "--set", f"manifest_sha256={sha}")
    s.run("hanna", "permits", "activate", case)
    shown = s.run("aud", "permits", "show", case).output
    assert "activated" in shown and "dora" in shown
    assert case in s.run("alice", "permits", "list").output
    # 3. The workspace: created by the handler, its status for the named analyst, its audit for the handler
    tokens = tmp_path / "tokens.json"
    s.run("hanna", "workspace", "create", "--permit", case, "--delivery", str(delivery), "--tokens-out", str(tokens))
    assert set(json.loads(tokens.read_text())) == {"bob"}
    status = json.loads(s.run("bob", "workspace", "status", "--permit", case, "--json").output)
    assert status["exists"] and not status["running"]
    assert "exists" in s.run(None, "workspace", "status", "--permit", case, "--operator").output
    assert "bob:" in s.run("hanna", "workspace", "token", "--permit", case, "--analyst", "bob").output
    assert "workspace.created" in s.run("hanna", "workspace", "audit", "--permit", case, "--json").output
    # 4. An import: bob asks, oscar decides
    tool = tmp_path / "tool.py"
    tool.write_text("x = 1\n")
    out = s.run("bob", "imports", "request", "--permit", case, "--file", str(tool), "--purpose", "helper").output
    imp = re.search(r"IMP-\S+", out).group(0)
    assert imp in s.run("oscar", "imports", "list").output
    assert "approved" in s.run("oscar", "imports", "approve", imp).output
    # 5. An output: bob asks from the workspace; two checkers; a third person releases
    from secure_env.workspace.provision import paths

    table = paths(svc, case).root / "scratch" / "by_band.csv"
    table.write_text("band,n\nyoung,120\nold,80\n")
    req = s.run("bob", "outputs", "create", "--permit", case).output.strip()
    s.run("bob", "outputs", "add", req, str(table), "--description", "persons by band", "--method", "count",
          "--index", "band")
    s.run("bob", "outputs", "submit", req)
    for checker in ("oscar", "olga"):
        assert req in s.run(checker, "outputs", "queue").output
        s.run(checker, "outputs", "vote", req, "by_band.csv", "approve")
        s.run(checker, "outputs", "submit-review", req)
    s.run("oscar", "outputs", "decide", req, "approve")
    assert "approved" in s.run("olga", "outputs", "show", req).output
    assert json.loads(s.run("bob", "outputs", "show", req, "--json").output)["state"] == "approved"
    s.run("olga", "outputs", "release", req)
    assert (svc.settings.home / "releases" / case / req / "manifest.json").exists()
    # 6. The end: the workspace destroyed, the permit expired by the scheduled job (run by an operator, and
    # recorded as them); tokens, users and the audit chain
    assert "destroyed" in s.run("hanna", "workspace", "destroy", "--permit", case).output
    assert case in s.run(None, "permits", "expire", "--on", "2031-01-02").output
    assert "deleted: none" in s.run(None, "permits", "tidy-drafts").output
    import getpass

    from toisio import audit

    with svc.engine.connect() as conn:
        expired = [e.actor for e in audit.events(conn, subject=f"case:{case}") if e.action == "case.expired"]
    assert expired == [f"operator:{getpass.getuser()}"]
    new = s.run("alice", "tokens", "create", "--name", "script", "--days", "7").stdout.strip().splitlines()[-1]
    token_id = new.split("_")[1]
    assert "script" in s.run("alice", "tokens", "list").output
    assert "valid until" in s.run("alice", "tokens", "rotate", token_id).output
    assert f"token {token_id} revoked" in s.run("alice", "tokens", "revoke", token_id).output  # already, by rotate
    s.run(None, "users", "set-roles", "aud", "--role", "auditor", "--role", "handler")
    assert "auditor, handler" in s.run(None, "users", "list").output
    s.run(None, "users", "link-oidc", "aud", "--issuer", "https://idp.example", "--subject", "a1")
    s.run(None, "users", "deactivate", "aud")
    refused = s.run("aud", "whoami", ok=False)
    assert refused.exit_code == 1 and "refused" in refused.output
    s.run(None, "users", "reactivate", "aud")
    reset = s.run(None, "users", "reset", "aud").output
    assert "first password" in reset and "TOTP secret" in reset
    assert "signed out" in s.run("bob", "logout").output
    assert s.run("bob", "whoami", ok=False).exit_code == 1
    head = s.run(None, "audit", "head").stdout.strip()
    assert "every case, user and token matches it" in s.run(None, "audit", "verify", "--anchor", head).output
    assert "user.deactivated" in s.run(None, "audit", "show", "--subject", "user:aud").output
    s.run(None, "report", "--out", str(tmp_path / "report"))
    s.run(None, "db", "upgrade")
