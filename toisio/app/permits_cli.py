"""``toisio permits ...``: a client of the REST API (:mod:`toisio.app.client`).

Every command that reads or changes a case goes through the API as the signed-in user, to
``TOISIO_API_URL`` or to the same API in-process; the API authenticates the token and the permit
service checks the permission.  One command per action of the permission matrix is generated from
:data:`permits.permissions.ACTIONS`; its parameters are ``--set key=value`` (for example
``--set valid_until=2028-12-31``) or ``--reason``.  The scheduled jobs (``expire``, ``tidy-drafts``,
``digest``) are operator commands on the service host.
"""

from __future__ import annotations

import json
import sys
from datetime import date
from pathlib import Path

import typer
from rich.table import Table

from permits.actions import ACTION_BODIES
from permits.permissions import ACTIONS
from toisio.app.cli_common import JSON_HELP, err, print_json
from toisio.app.cli_common import api as _api
from toisio.app.cli_common import run as _run
from toisio.app.cli_common import svc as _svc
from toisio.console import make_console, styled

permits_app = typer.Typer(help="Permit applications, decisions and permits.", no_args_is_help=True)
console = make_console(width=140)


def _print_case(v: dict) -> None:
    console.print(styled((v["case_id"], "bold"), f" {v['title']} - ", (v["state"], "bold"), f" ({v['kind']})"))
    fee = v.get("fee")
    facts = {"applicant": v["applicant_id"], "handler": v["handler_id"], "members": ", ".join(v["members"]),
             "decision due": v["decision_due"],
             "valid": f"{v['valid_from']} - {v['valid_until']}" if v["valid_until"] else None,
             "scope sha256": v["scope_sha256"], "fee": fee and f"{fee['total']} {fee['currency']}"}
    for k, val in facts.items():
        if val:
            console.print(f"  {k}: {val}")
    if v["history"]:
        t = Table(title="history")
        for c in ("#", "event", "by", "role", "time", "details"):
            t.add_column(c)
        for e in v["history"]:
            t.add_row(str(e["seq"]), e["event"], e["actor"], e["role"], e["ts"][:19],
                      json.dumps(e["payload"], ensure_ascii=False)[:80])
        console.print(t)


@permits_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of application files."""
    from permits.application import form_json_schema

    sys.stdout.write(json.dumps(form_json_schema(), indent=2) + "\n")


@permits_app.command("attach")
def attach(path: Path) -> None:
    """Store a research plan or ethics statement; prints the reference for the application file."""
    from permits.attachments import store
    from toisio.cli_auth import current_actor

    svc = _svc()
    if svc.settings.api_url:
        err.print(styled(("refused", "bold red"), " (not_on_the_host): attachments are stored on the service host "
                         "for now; the API takes uploads with the portal"))
        raise typer.Exit(1)
    _run(lambda: current_actor(svc))  # only a signed-in user stores files in the service
    a = store(svc, path)
    console.print(json.dumps(a.model_dump()))


@permits_app.command("submit")
def submit(path: Path, draft: bool = typer.Option(False, "--draft")) -> None:
    """Submit an application file (JSON or YAML); --draft stores it without submitting."""
    from permits.application import load_form

    form = _run(lambda: load_form(path))
    api = _api()
    body = form.model_dump(mode="json")
    v = _run(lambda: api.post("/cases", json=body, draft="true" if draft else None))
    console.print(f"draft {v['case_id']} saved" if draft else f"submitted as {v['case_id']}")


@permits_app.command("list")
def list_cmd(state: str | None = typer.Option(None), as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
             limit: int = typer.Option(500, "--limit", min=1, max=500)) -> None:
    """List the cases you may see."""
    api = _api()
    rows = _run(lambda: api.get("/cases", state=state, limit=limit))
    if as_json:
        return print_json(rows)
    t = Table(title="cases")
    for c in ("case", "kind", "state", "title", "applicant", "handler", "decision due"):
        t.add_column(c)
    for v in rows:
        t.add_row(v["case_id"], v["kind"], v["state"], v["title"], v["applicant_id"], v["handler_id"] or "",
                  str(v["decision_due"] or ""))
    console.print(t)


@permits_app.command("show")
def show_cmd(case_id: str) -> None:
    """Show a case with its history (the read is audited)."""
    api = _api()
    _print_case(_run(lambda: api.get(f"/cases/{case_id}")))


@permits_app.command("statistics")
def statistics_cmd(permit: str, produce: bool = typer.Option(False, "--produce",
                                                             help="compute the tabulation plan's tables now"),
                   as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """A data request's statistics: list them, or (--produce; handlers) compute them from the delivered data and
    submit them for two-person review."""
    api = _api()
    if produce:
        r = _run(lambda: api.post(f"/permits/{permit}/statistics"))
        console.print(f"{r['request_id']}: {r['state']} (two output checkers review it next)")
        return
    rows = _run(lambda: api.get(f"/permits/{permit}/statistics"))
    if as_json:
        return print_json(rows)
    t = Table(title=f"statistics of {permit}")
    for c in ("request", "state", "files", "released"):
        t.add_column(c)
    for r in rows:
        t.add_row(r["request_id"], r["state"], ", ".join(r["files"]), (r["released_at"] or "")[:19])
    console.print(t)


@permits_app.command("queue")
def queue_cmd(all_cases: bool = typer.Option(False, "--all"),
              as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Your open cases by deadline, with whom each waits for (--all: every handler's)."""
    api = _api()
    me = _run(lambda: api.get("/me"))
    items = _run(lambda: api.get("/queue", all_handlers="true" if all_cases else None))
    if as_json:
        return print_json(items)
    _print_queue(items, f"queue of {'all handlers' if all_cases else me['user_id']}")


def _print_queue(items, title: str) -> None:
    t = Table(title=title)
    for c in ("case", "state", "handler", "deadline", "for", "status"):
        t.add_column(c)
    for i in items:
        i = i if isinstance(i, dict) else {**i.__dict__, "deadline": i.deadline}
        style = {"overdue": "bold red", "near": "yellow"}.get(i["status"], "")
        t.add_row(i["case_id"], i["state"], i["handler_id"] or "-", str(i["deadline"] or "-"), i["deadline_kind"],
                  styled((i["status"], style)) if style else i["status"])
    console.print(t)


@permits_app.command("digest")
def digest_cmd() -> None:
    """Operator: cases nearing or past a deadline (the reminder digest)."""
    from permits.service import digest

    _print_queue(digest(_svc()), "reminder digest: deadlines within 14 days or past")


@permits_app.command("expire")
def expire_cmd(on: str | None = typer.Option(None, help="run as of this date (YYYY-MM-DD)")) -> None:
    """Operator: expire permits past their end date (scheduled job)."""
    from permits.service import expire_due
    from toisio.identity import operator

    done = _run(lambda: expire_due(_svc(), today=date.fromisoformat(on) if on else None,
                                   by=operator(scheduled_job=True)))
    console.print(f"expired: {', '.join(done) or 'none'}")


@permits_app.command("retention")
def retention_cmd(permit: str, as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """What is held for a permit (workspace, deliveries, quarantines, unreleased outputs) and from when it is
    deleted (handlers, auditors)."""
    api = _api()
    r = _run(lambda: api.get(f"/permits/{permit}/retention"))
    if as_json:
        return print_json(r)
    console.print(styled((permit, "bold"), f" {r['state']}; ended {r['ended_on'] or '-'}; deleted from "
                                          f"{r['delete_after'] or '- (in force)'}"))
    t = Table()
    for c in ("stage", "kind", "path", "files", "bytes", "since"):
        t.add_column(c)
    for h in r["held"]:
        t.add_row(h["stage"], h["kind"], h["path"], str(h["files"]), f"{h['bytes']:,}", (h["since"] or "")[:10])
    console.print(t)


@permits_app.command("dp-budget")
def dp_budget_cmd(permit: str, epsilon: float | None = typer.Option(None, "--epsilon",
                                                                     help="set the total epsilon (the decider)"),
                  delta: float = typer.Option(0.0, "--delta", help="with --epsilon: the total delta"),
                  as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """A permit's privacy budget and its ledger; with --epsilon the decider sets it (the DP query service charges
    every query to it)."""
    api = _api()
    if epsilon is not None:
        r = _run(lambda: api.put(f"/permits/{permit}/dp", json={"epsilon": epsilon, "delta": delta}))
    else:
        r = _run(lambda: api.get(f"/permits/{permit}/dp"))
    if as_json:
        return print_json(r)
    console.print(styled((permit, "bold"), f" epsilon {r['spent_epsilon']:g} spent of {r['epsilon']:g} "
                                          f"({r['remaining_epsilon']:g} left); delta {r['spent_delta']:g} of "
                                          f"{r['delta']:g}"))
    t = Table()
    for c in ("query", "epsilon", "by", "at"):
        t.add_column(c)
    for c in r["ledger"]:
        t.add_row(c["query"][:80], f"{c['epsilon']:g}", c["actor"], c["at"][:19])
    console.print(t)


@permits_app.command("delete-ended")
def delete_ended_cmd(on: str | None = typer.Option(None, help="run as of this date (YYYY-MM-DD)")) -> None:
    """Operator: delete what is held for permits whose retention ran out, and quarantines past theirs (scheduled
    job); each deletion is recorded in the audit chain."""
    from flows.retention import delete_ended
    from toisio.identity import operator

    done = _run(lambda: delete_ended(_svc(), today=date.fromisoformat(on) if on else None,
                                     by=operator(scheduled_job=True)))
    for permit, items in done.items():
        console.print(f"{permit}: deleted " + ", ".join(f"{h.kind} {h.path} ({h.bytes:,} bytes)" for h in items))
    if not done:
        console.print("nothing to delete")


@permits_app.command("tidy-drafts")
def tidy_cmd(remind_after: int = typer.Option(30), delete_after: int = typer.Option(60)) -> None:
    """Operator: remind owners of idle drafts, then delete them (scheduled job; deletions are audited)."""
    from permits.service import tidy_drafts
    from toisio.identity import operator

    result = _run(lambda: tidy_drafts(_svc(), remind_after_days=remind_after, delete_after_days=delete_after,
                                      by=operator(scheduled_job=True)))
    console.print(f"reminded: {', '.join(result['reminded']) or 'none'}; "
                  f"deleted: {', '.join(result['deleted']) or 'none'}")


def _parse_sets(values: list[str]) -> dict:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"--set takes key=value, got {item!r}")
        out[key] = value
    return out


def _make_action_command(name: str):
    def command(case_id: str, reason: str | None = typer.Option(None, "--reason"),
                sets: list[str] = typer.Option([], "--set", help="action parameter key=value")) -> None:
        payload = _parse_sets(sets)
        if reason:
            fields = ACTION_BODIES[name].model_fields
            takes = [f for f in ("reason", "reasons", "text") if f in fields]
            if not takes:
                err.print(styled(("refused", "bold red"), f" (invalid_body): '{name}' takes no --reason"))
                raise typer.Exit(1)
            payload[takes[0]] = reason
        api = _api()
        v = _run(lambda: api.post(f"/cases/{case_id}/actions/{name}", json=payload or None))
        console.print(styled(f"{v['case_id']}: {name.replace('_', ' ')} -> ", (v["state"], "bold")))

    command.__doc__ = ACTIONS[name].description[:1].upper() + ACTIONS[name].description[1:] + "."
    return command


# Actions taken by scheduled jobs or applied by an approved amendment get no command of their own (nor an API
# route); submitting a stored draft is "submit-draft" ("submit" takes a file).
_NOT_COMMANDS = {"amend", "remind", "expire"}
_RENAMED = {"submit": "submit-draft"}
for _name, _action in ACTIONS.items():
    if _action.event is not None and _name not in _NOT_COMMANDS:
        permits_app.command(_RENAMED.get(_name, _name.replace("_", "-")))(_make_action_command(_name))
