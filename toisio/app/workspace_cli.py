"""``toisio workspace ...`` and ``toisio imports ...``: clients of the REST API's workspace and import routes
(:mod:`secure_env.workspace.api`), as the signed-in user, to ``TOISIO_API_URL`` or to the same API in-process.

Two things stay on the service host: ``--operator`` (process control as ``operator:<OS user>``) and
``workspace create --delivery DIR`` (a delivery directory on the host rather than the permit's latest
recorded delivery); both call the domain functions directly, which check who may.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import typer
from rich.table import Table

from toisio.app.cli_common import JSON_HELP, err, print_json
from toisio.app.cli_common import api as _api
from toisio.app.cli_common import run as _run
from toisio.console import make_console, styled

workspace_app = typer.Typer(help="Per-permit JupyterLab workspaces: create, start, stop, status, destroy, audit.",
                            no_args_is_help=True)
console = make_console(width=160)
PERMIT = typer.Option(..., "--permit", help="the permit (case id)")
OPERATOR = typer.Option(False, "--operator", help="act as the operating-system user (operator:<name>) on the "
                                                  "service host, for process control; default: the signed-in user")


def _host(as_operator: bool = False):
    """On the service host: the service and who acts (the signed-in user, or the operator)."""
    from toisio.cli_auth import acting
    from toisio.service import service

    svc = service()
    return svc, _run(lambda: acting(svc, as_operator=as_operator))


def _print_tokens(permit: str, tokens: dict, tokens_out: Path | None) -> None:
    if tokens_out:
        tokens_out.write_text(json.dumps(tokens, indent=2))
        tokens_out.chmod(0o600)
        console.print(f"tokens for {', '.join(sorted(tokens))} written to {tokens_out} (hand each to its analyst)")
    else:
        for user, token in sorted(tokens.items()):
            console.print(f"  {user}: {token}")
        console.print("each token is shown once; only its hash is kept")


@workspace_app.command("create")
def create_cmd(permit: str = PERMIT,
               delivery: Path | None = typer.Option(None, "--delivery",
                                                    help="on the service host: a delivery directory (default: the "
                                                         "permit's latest recorded delivery)"),
               quota_mb: int | None = typer.Option(None, "--quota-mb", help="scratch quota of the Jupyter root"),
               tokens_out: Path | None = typer.Option(None, "--tokens-out",
                                                      help="write the analysts' tokens to this file (mode 600)")
               ) -> None:
    """Create the permit's workspace and issue one login token per named analyst (shown once)."""
    if delivery is not None:
        from secure_env.workspace.provision import create

        svc, actor = _host()
        tokens = _run(lambda: create(svc, actor, permit, delivery, quota_mb=quota_mb))
        source = str(delivery)
    else:
        api = _api()
        r = _run(lambda: api.post(f"/workspaces/{permit}", json={"quota_mb": quota_mb} if quota_mb else None))
        tokens, source = r["tokens"], r["delivery"]
    console.print(f"workspace for {permit} created from {source}")
    _print_tokens(permit, tokens, tokens_out)


def _status(permit: str, as_operator: bool) -> dict:
    if as_operator:
        from dataclasses import asdict

        from secure_env.workspace.server import status

        svc, actor = _host(True)
        return asdict(_run(lambda: status(svc, actor, permit)))
    api = _api()
    return _run(lambda: api.get(f"/workspaces/{permit}"))


@workspace_app.command("start")
def start_cmd(permit: str = PERMIT, as_operator: bool = OPERATOR) -> None:
    """Start the permit's JupyterLab server (refused unless the permit is in force)."""
    if as_operator:
        from dataclasses import asdict

        from secure_env.workspace.server import start

        svc, actor = _host(True)
        st = asdict(_run(lambda: start(svc, actor, permit)))
    else:
        api = _api()
        st = _run(lambda: api.post(f"/workspaces/{permit}/start"))
    console.print(f"workspace {permit} running at {st['url']} (pid {st['pid']}); "
                  f"analysts log in with their own token: {', '.join(st['analysts'])}")


@workspace_app.command("stop")
def stop_cmd(permit: str = PERMIT, as_operator: bool = OPERATOR,
             reason: str = typer.Option("stopped by request", "--reason")) -> None:
    """Stop the permit's server and its kernels."""
    if as_operator:
        from secure_env.workspace.server import stop

        svc, actor = _host(True)
        was = _run(lambda: stop(svc, actor, permit, reason=reason))
    else:
        api = _api()
        was = _run(lambda: api.post(f"/workspaces/{permit}/stop", json={"reason": reason}))["was_running"]
    console.print(f"workspace {permit} stopped" if was else f"workspace {permit} was not running")


@workspace_app.command("status")
def status_cmd(permit: str = PERMIT, as_operator: bool = OPERATOR,
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Whether the workspace exists and runs, where, for whom, and its scratch use."""
    st = _status(permit, as_operator)
    if as_json:
        console.print_json(json.dumps(st))
        return
    table = Table(title=f"workspace {permit}", show_header=False)
    used = f"{(st['used_bytes'] or 0) / 1e6:.1f} MB of {st['quota_mb']} MB" if st["exists"] else "-"
    for k, v in [("exists", st["exists"]), ("running", st["running"]), ("url", st["url"] or "-"),
                 ("analysts", ", ".join(st["analysts"]) or "-"),
                 ("permit", "in force" if st["permit_in_force"] else st["permit_reason"]),
                 ("scratch", used), ("started", st["started_at"] or "-")]:
        table.add_row(k, str(v))
    console.print(table)


@workspace_app.command("token")
def token_cmd(permit: str = PERMIT, analyst: str = typer.Option(..., "--analyst")) -> None:
    """Issue a new login token to an analyst named on the permit (replaces their old one)."""
    api = _api()
    token = _run(lambda: api.post(f"/workspaces/{permit}/tokens/{analyst}"))["token"]
    console.print(f"{analyst}: {token}\n(shown once; the previous token, if any, no longer works)")


@workspace_app.command("destroy")
def destroy_cmd(permit: str = PERMIT, as_operator: bool = OPERATOR) -> None:
    """Delete the workspace's data copy and scratch space (the pseudonymisation key is kept)."""
    if as_operator:
        from secure_env.workspace.provision import destroy

        svc, actor = _host(True)
        deleted = _run(lambda: destroy(svc, actor, permit))
    else:
        api = _api()
        deleted = _run(lambda: api.delete(f"/workspaces/{permit}"))["deleted"]
    console.print(f"workspace {permit} destroyed: {deleted['files']} files, {deleted['bytes']:,} bytes deleted; "
                  "the permit's key is retained")


@workspace_app.command("audit")
def audit_cmd(permit: str = PERMIT, as_json: bool = typer.Option(False, "--json")) -> None:
    """The session audit: logins, kernel starts, executed cells (code, output size), files written."""
    api = _api()
    found = _run(lambda: api.get(f"/workspaces/{permit}/audit"))
    if as_json:
        console.print_json(json.dumps(found))
        return
    table = Table(title=f"workspace audit for {permit} ({len(found)} events)")
    for col in ("seq", "at", "analyst", "event", "detail"):
        table.add_column(col)
    for e in found:
        table.add_row(str(e["seq"]), e["at"], e["actor"], e["action"].removeprefix("workspace."),
                      _detail(e["payload"]))
    console.print(table)


def _detail(payload: dict) -> str:
    if "code" in payload:
        files = ", ".join(f["path"] for f in payload.get("files_written", []))
        code = payload["code"].strip().replace("\n", " ⏎ ")
        whole = f" ({payload['code_bytes']:,} B, sha256 {payload['code_sha256'][:12]})" if "code_sha256" in payload \
            else ""
        return (f"{code[:70]}{'…' if len(code) > 70 else ''}{whole} | {payload['status']}, "
                f"{payload['output_bytes']:,} B out" + (f" | wrote {files}" if files else ""))
    return ", ".join(f"{k}={v}" for k, v in payload.items() if k not in ("analysts",))[:120]


imports_app = typer.Typer(help="Import requests: code or lookup tables into a workspace, approved by a data steward.",
                          no_args_is_help=True)


def _print_import(r: dict) -> None:
    console.print(styled((r["import_id"], "bold"), f" permit {r['permit_id']} by {r['requester']}: {r['name']} "
                         f"({r['size']:,} B, sha256 {r['sha256'][:12]}) ", (r["state"], "bold"),
                         f" - {r['purpose']}" + (f" [{r['decided_by']}: {r['reason']}]" if r["reason"] else "")))


@imports_app.command("request")
def import_request(permit: str = typer.Option(..., "--permit"), file: Path = typer.Option(..., "--file"),
                   purpose: str = typer.Option(..., "--purpose")) -> None:
    """Ask for a file (code, a lookup table) to be imported into the permit's workspace (sent to the service;
    a data steward decides)."""
    if not file.is_file():
        err.print(styled(("refused", "bold red"), f" (not_a_file): {file} is not a file"))
        raise typer.Exit(1)
    api = _api()
    body = {"permit_id": permit, "name": file.name, "purpose": purpose,
            "content_base64": base64.b64encode(file.read_bytes()).decode()}
    _print_import(_run(lambda: api.post("/imports", json=body)))


@imports_app.command("approve")
def import_approve(import_id: str) -> None:
    """Approve an import: the file is copied read-only into the workspace's imports/ folder."""
    api = _api()
    _print_import(_run(lambda: api.post(f"/imports/{import_id}/approve")))


@imports_app.command("reject")
def import_reject(import_id: str, reason: str = typer.Option(..., "--reason")) -> None:
    """Reject an import, with a reason the analyst can act on."""
    api = _api()
    _print_import(_run(lambda: api.post(f"/imports/{import_id}/reject", json={"reason": reason})))


@imports_app.command("list")
def import_list(permit: str | None = typer.Option(None, "--permit"),
                as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Import requests you may see."""
    api = _api()
    if as_json:
        return print_json(_run(lambda: api.get("/imports", permit_id=permit)))
    for r in _run(lambda: api.get("/imports", permit_id=permit)):
        _print_import(r)
