"""``toisio outputs ...``: a client of the REST API's airlock routes (:mod:`secure_env.airlock.api`), as the
signed-in user, to ``TOISIO_API_URL`` or to the same API in-process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from toisio.app.cli_common import JSON_HELP, print_json
from toisio.app.cli_common import api as _api
from toisio.app.cli_common import run as _run
from toisio.console import make_console, styled

outputs_app = typer.Typer(help="Output requests: disclosure checks, two-person review, release.",
                          no_args_is_help=True)
console = make_console(width=140)


def _workspace_path(path: Path) -> str:
    """A file in the permit's workspace as the API wants it: relative to the workspace root when the path given
    is inside a workspace root on this host (``.../workspaces/<permit>/root/...``), otherwise as given."""
    parts = path.parts
    if "workspaces" in parts and "root" in parts[parts.index("workspaces"):]:
        i = parts.index("root", parts.index("workspaces"))
        return str(Path(*parts[i + 1:]))
    return str(path)


@outputs_app.command("create")
def create(permit: str = typer.Option(..., "--permit")) -> None:
    """Start an output request for a permit."""
    api = _api()
    console.print(_run(lambda: api.post("/outputs", json={"permit_id": permit}))["request_id"])


@outputs_app.command("add")
def add(request_id: str, path: Path = typer.Argument(..., help="the file in the permit's workspace (relative to "
                                                                 "its root, e.g. scratch/table.csv)"),
        description: str = typer.Option(..., "--description"),
        method: str = typer.Option("", "--method", help="how it was made (required unless --supporting)"),
        index: str | None = typer.Option(None, "--index"),
        statistic: str = typer.Option("count", "--statistic"),
        group: str = typer.Option("default", "--group", help="the group the file belongs to"),
        supporting: bool = typer.Option(False, "--supporting",
                                        help="a supporting file: shown to the reviewers, never released"),
        exception: str = typer.Option("", "--exception",
                                      help="ask for an exception to a failed automatic check, with the reason "
                                           "(the checkers then each give their reason to override)")) -> None:
    """Add a file from the workspace with its context; tables are checked at once (the server reads the file
    in the workspace; nothing is uploaded)."""
    api = _api()
    body = {"path": _workspace_path(path), "description": description, "method": method, "statistic": statistic,
            "index": index, "group": group, "supporting": supporting, "exception": exception}
    _run(lambda: api.post(f"/outputs/{request_id}/files", json=body))
    console.print(f"added {path.name} to {request_id}")


@outputs_app.command("describe-group")
def describe_group_cmd(request_id: str, group: str, context: str = typer.Option(..., "--context"),
                       controls: str = typer.Option(..., "--controls")) -> None:
    """Give a group the context its files share and the disclosure controls applied."""
    api = _api()
    _run(lambda: api.put(f"/outputs/{request_id}/groups/{group}", json={"context": context, "controls": controls}))
    console.print(f"{request_id}: group {group} described")


@outputs_app.command("comment")
def comment_cmd(request_id: str, text: str, group: str = typer.Option("default", "--group"),
                private: bool = typer.Option(False, "--private", help="for output checkers only")) -> None:
    """Comment on a group of a request (checkers: public or --private; the requester replies publicly)."""
    api = _api()
    _run(lambda: api.post(f"/outputs/{request_id}/comments",
                          json={"group": group, "text": text, "visibility": "private" if private else "public"}))
    console.print(f"{request_id}: comment added to {group}")


def _simple(name: str, route: str, doc: str):
    def command(request_id: str) -> None:
        api = _api()
        result = _run(lambda: api.post(f"/outputs/{request_id}/{route}"))
        console.print(f"{request_id}: {result['state']}")

    command.__doc__ = doc
    outputs_app.command(name)(command)


_simple("submit", "submit", "Submit (or resubmit) a request for review.")
_simple("withdraw", "withdraw", "Withdraw a request before release.")
_simple("submit-review", "submit_review", "Finish your review (after voting on every file).")
_simple("release", "release", "Release an approved request to the release store.")


@outputs_app.command("vote")
def vote_cmd(request_id: str, file: str, decision: str, comment: str = typer.Option("", "--comment"),
             ) -> None:
    """Vote approve, reject or request_changes on one file."""
    api = _api()
    _run(lambda: api.post(f"/outputs/{request_id}/votes", json={"file": file, "decision": decision,
                                                                 "comment": comment}))
    console.print(f"{request_id}: {file} {decision}")


@outputs_app.command("decide")
def decide_cmd(request_id: str, outcome: str) -> None:
    """Approve, reject or return a reviewed request."""
    api = _api()
    r = _run(lambda: api.post(f"/outputs/{request_id}/decide", json={"outcome": outcome}))
    console.print(f"{request_id}: {r['state']}")


@outputs_app.command("revoke-approval")
def revoke_cmd(request_id: str, reason: str = typer.Option(..., "--reason")) -> None:
    """Take your approval back before release."""
    api = _api()
    r = _run(lambda: api.post(f"/outputs/{request_id}/revoke_approval", json={"reason": reason}))
    console.print(f"{request_id}: {r['state']}")


@outputs_app.command("show")
def show_cmd(request_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a request as you may see it (the view is audited)."""
    api = _api()
    v = _run(lambda: api.get(f"/outputs/{request_id}"))
    if as_json:
        sys.stdout.write(json.dumps(v, indent=2, default=str) + "\n")
        return
    console.print(styled((v["request_id"], "bold"), f" permit {v['permit_id']} by {v['requester']}: ",
                         (v["state"], "bold"), f" (round {v['round']}, {v['reviews_submitted']} reviews submitted)"))
    t = Table()
    for c in ("file", "group", "kind", "automatic check", "status", "votes"):
        t.add_column(c)
    for f in v["files"]:
        t.add_row(f["name"], f.get("group", ""), f["kind"] + (" (supporting)" if f.get("supporting") else ""),
                  f["check_status"], f["status"], "; ".join(f"{x['reviewer']}: {x['decision']}" for x in f["votes"]))
    console.print(t)
    for g in v.get("groups", []):
        if g["context"] or g["controls"] or g["comments"]:
            console.print(styled((f"group {g['name']}", "bold"), f": {g['context'] or '-'}; controls: "
                                                                  f"{g['controls'] or '-'}"))
        for c in g["comments"]:
            console.print(f"  {c['author']} ({c['visibility']}, round {c['round']}): {c['text']}")


@outputs_app.command("queue")
def queue_cmd(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Requests awaiting your review, across all permits."""
    api = _api()
    if as_json:
        return print_json(_run(lambda: api.get("/outputs/queue")))
    me = _run(lambda: api.get("/me"))
    t = Table(title=f"awaiting {me['user_id']}")
    for c in ("request", "permit", "state", "waiting since"):
        t.add_column(c)
    for r in _run(lambda: api.get("/outputs/queue")):
        t.add_row(r["request_id"], r["permit_id"], r["state"], r["waiting_since"][:19])
    console.print(t)
