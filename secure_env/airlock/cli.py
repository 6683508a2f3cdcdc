"""``toisio outputs ...``: thin commands over the output airlock (:mod:`secure_env.airlock.outputs`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from toisio.console import make_console, run_or_exit, styled

outputs_app = typer.Typer(help="Output requests: disclosure checks, two-person review, release.",
                          no_args_is_help=True)
console = make_console(width=140)
err = make_console(stderr=True)


def _ctx():
    """The service and the signed-in user (``toisio login`` or ``TOISIO_TOKEN``)."""
    from toisio.cli_auth import current_actor
    from toisio.service import service

    svc = service()
    return svc, run_or_exit(lambda: current_actor(svc), err)


def _run(fn):
    return run_or_exit(fn, err)


@outputs_app.command("create")
def create(permit: str = typer.Option(..., "--permit")) -> None:
    """Start an output request for a permit."""
    from secure_env.airlock.outputs import create_request

    svc, actor = _ctx()
    console.print(_run(lambda: create_request(svc, actor, permit)))


@outputs_app.command("add")
def add(request_id: str, path: Path, description: str = typer.Option(..., "--description"),
        method: str = typer.Option(..., "--method"), index: str | None = typer.Option(None, "--index"),
        statistic: str = typer.Option("count", "--statistic")) -> None:
    """Add a file with its context; tables are checked at once."""
    from secure_env.airlock.outputs import add_file

    svc, actor = _ctx()
    ctx = {"description": description, "method": method, "statistic": statistic}
    if index:
        ctx["index"] = index
    _run(lambda: add_file(svc, actor, request_id, path, ctx))
    console.print(f"added {path.name} to {request_id}")


def _simple(name: str, fn_name: str, doc: str):
    def command(request_id: str) -> None:
        from secure_env.airlock import outputs as airlock

        svc, actor = _ctx()
        result = _run(lambda: getattr(airlock, fn_name)(svc, actor, request_id))
        console.print(f"{request_id}: {getattr(result, 'value', result)}")

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
    from secure_env.airlock.outputs import vote

    svc, actor = _ctx()
    _run(lambda: vote(svc, actor, request_id, file, decision, comment))
    console.print(f"{request_id}: {file} {decision}")


@outputs_app.command("decide")
def decide_cmd(request_id: str, outcome: str) -> None:
    """Approve, reject or return a reviewed request."""
    from secure_env.airlock.outputs import decide

    svc, actor = _ctx()
    console.print(f"{request_id}: {_run(lambda: decide(svc, actor, request_id, outcome)).value}")


@outputs_app.command("revoke-approval")
def revoke_cmd(request_id: str, reason: str = typer.Option(..., "--reason")) -> None:
    """Take your approval back before release."""
    from secure_env.airlock.outputs import revoke_approval

    svc, actor = _ctx()
    console.print(f"{request_id}: {_run(lambda: revoke_approval(svc, actor, request_id, reason)).value}")


@outputs_app.command("show")
def show_cmd(request_id: str, as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a request as you may see it (the view is audited)."""
    from secure_env.airlock.outputs import view

    svc, actor = _ctx()
    v = _run(lambda: view(svc, actor, request_id))
    if as_json:
        sys.stdout.write(json.dumps(v, indent=2, default=str) + "\n")
        return
    console.print(styled((v["request_id"], "bold"), f" permit {v['permit_id']} by {v['requester']}: ",
                         (v["state"], "bold"), f" (round {v['round']}, {v['reviews_submitted']} reviews submitted)"))
    t = Table()
    for c in ("file", "kind", "automatic check", "status", "votes"):
        t.add_column(c)
    for f in v["files"]:
        t.add_row(f["name"], f["kind"], f["check_status"], f["status"],
                  "; ".join(f"{x['reviewer']}: {x['decision']}" for x in f["votes"]))
    console.print(t)


@outputs_app.command("queue")
def queue_cmd() -> None:
    """Requests awaiting your review, across all permits."""
    from secure_env.airlock.outputs import checker_queue

    svc, actor = _ctx()
    t = Table(title=f"awaiting {actor.user_id}")
    for c in ("request", "permit", "state", "waiting since"):
        t.add_column(c)
    for r in checker_queue(svc, actor):
        t.add_row(r["request_id"], r["permit_id"], r["state"], r["waiting_since"][:19])
    console.print(t)
