"""``toisio workspace ...`` and ``toisio imports ...``: thin commands over the per-permit workspaces and the
imports into them."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from toisio.console import make_console, run_or_exit, styled

workspace_app = typer.Typer(help="Per-permit JupyterLab workspaces: create, start, stop, status, destroy, audit.",
                            no_args_is_help=True)
console = make_console(width=160)
err = make_console(stderr=True)
PERMIT = typer.Option(..., "--permit", help="the permit (case id)")
OPERATOR = typer.Option(False, "--operator", help="act as the operating-system user (operator:<name>) on the "
                                                  "service host, for process control; default: the signed-in user")


def _ctx(as_operator: bool = False):
    """The service and who acts: the signed-in user (``toisio login``) or the host's operator."""
    from toisio.cli_auth import acting
    from toisio.service import service

    svc = service()
    return svc, run_or_exit(lambda: acting(svc, as_operator=as_operator), err)


def _run(fn):
    return run_or_exit(fn, err)


@workspace_app.command("create")
def create_cmd(permit: str = PERMIT,
               delivery: Path | None = typer.Option(None, "--delivery",
                                                    help="delivered dataset (default: the permit's latest delivery)"),
               quota_mb: int | None = typer.Option(None, "--quota-mb", help="scratch quota of the Jupyter root"),
               tokens_out: Path | None = typer.Option(None, "--tokens-out",
                                                      help="write the analysts' tokens to this file (mode 600)")
               ) -> None:
    """Create the permit's workspace and issue one login token per named analyst (shown once)."""

    def go():
        from pseudonymise.runs import latest_delivery
        from secure_env.workspace.provision import create

        svc, actor = _ctx()
        source = delivery
        if source is None:
            with svc.engine.connect() as conn:
                found = latest_delivery(conn, permit)
            if found is None:
                err.print(styled(("refused", "bold red"),
                                 f" (no_delivery): permit {permit} has no delivered extraction"))
                raise typer.Exit(1)
            source = Path(found)
        tokens = create(svc, actor, permit, source, quota_mb=quota_mb)
        console.print(f"workspace for {permit} created from {source}")
        if tokens_out:
            tokens_out.write_text(json.dumps(tokens, indent=2))
            tokens_out.chmod(0o600)
            console.print(f"tokens for {', '.join(sorted(tokens))} written to {tokens_out} (hand each to its analyst)")
        else:
            for user, token in sorted(tokens.items()):
                console.print(f"  {user}: {token}")
            console.print("each token is shown once; only its hash is kept")

    _run(go)


@workspace_app.command("start")
def start_cmd(permit: str = PERMIT, as_operator: bool = OPERATOR) -> None:
    """Start the permit's JupyterLab server (refused unless the permit is in force)."""

    def go():
        from secure_env.workspace.server import start

        st = start(*_ctx(as_operator), permit)
        console.print(f"workspace {permit} running at {st.url} (pid {st.pid}); "
                      f"analysts log in with their own token: {', '.join(st.analysts)}")

    _run(go)


@workspace_app.command("stop")
def stop_cmd(permit: str = PERMIT, as_operator: bool = OPERATOR,
             reason: str = typer.Option("stopped by request", "--reason")) -> None:
    """Stop the permit's server and its kernels."""

    def go():
        from secure_env.workspace.server import stop

        was = stop(*_ctx(as_operator), permit, reason=reason)
        console.print(f"workspace {permit} stopped" if was else f"workspace {permit} was not running")

    _run(go)


@workspace_app.command("status")
def status_cmd(permit: str = PERMIT, as_operator: bool = OPERATOR,
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Whether the workspace exists and runs, where, for whom, and its scratch use."""

    def go():
        from dataclasses import asdict

        from secure_env.workspace.server import status

        st = status(*_ctx(as_operator), permit)
        if as_json:
            console.print_json(json.dumps(asdict(st)))
            return
        table = Table(title=f"workspace {permit}", show_header=False)
        used = f"{(st.used_bytes or 0) / 1e6:.1f} MB of {st.quota_mb} MB" if st.exists else "-"
        for k, v in [("exists", st.exists), ("running", st.running), ("url", st.url or "-"),
                     ("analysts", ", ".join(st.analysts) or "-"),
                     ("permit", "in force" if st.permit_in_force else st.permit_reason),
                     ("scratch", used), ("started", st.started_at or "-")]:
            table.add_row(k, str(v))
        console.print(table)

    _run(go)


@workspace_app.command("token")
def token_cmd(permit: str = PERMIT, analyst: str = typer.Option(..., "--analyst")) -> None:
    """Issue a new login token to an analyst named on the permit (replaces their old one)."""

    def go():
        from secure_env.workspace.provision import issue_token

        token = issue_token(*_ctx(), permit, analyst)
        console.print(f"{analyst}: {token}\n(shown once; the previous token, if any, no longer works)")

    _run(go)


@workspace_app.command("destroy")
def destroy_cmd(permit: str = PERMIT, as_operator: bool = OPERATOR) -> None:
    """Delete the workspace's data copy and scratch space (the pseudonymisation key is kept)."""

    def go():
        from secure_env.workspace.provision import destroy

        deleted = destroy(*_ctx(as_operator), permit)
        console.print(f"workspace {permit} destroyed: {deleted['files']} files, {deleted['bytes']:,} bytes deleted; "
                      "the permit's key is retained")

    _run(go)


@workspace_app.command("audit")
def audit_cmd(permit: str = PERMIT,
              as_json: bool = typer.Option(False, "--json")) -> None:
    """The session audit: logins, kernel starts, executed cells (code, output size), files written."""

    def go():
        from secure_env.workspace.provision import session_audit

        found = session_audit(*_ctx(), permit)
        if as_json:
            console.print_json(json.dumps([{"seq": e.seq, "at": e.ts, "actor": e.actor, "action": e.action,
                                            "payload": e.payload} for e in found]))
            return
        table = Table(title=f"workspace audit for {permit} ({len(found)} events)")
        for col in ("seq", "at", "analyst", "event", "detail"):
            table.add_column(col)
        for e in found:
            table.add_row(str(e.seq), e.ts, e.actor, e.action.removeprefix("workspace."), _detail(e.payload))
        console.print(table)

    _run(go)


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


def _print_import(r) -> None:
    console.print(styled((r.import_id, "bold"), f" permit {r.permit_id} by {r.requester}: {r.name} "
                         f"({r.size:,} B, sha256 {r.sha256[:12]}) ", (r.state, "bold"),
                         f" - {r.purpose}" + (f" [{r.decided_by}: {r.reason}]" if r.reason else "")))


@imports_app.command("request")
def import_request(permit: str = typer.Option(..., "--permit"), file: Path = typer.Option(..., "--file"),
                   purpose: str = typer.Option(..., "--purpose")) -> None:
    """Ask for a file (code, a lookup table) to be imported into the permit's workspace."""
    from secure_env.workspace.ingress import request_import

    svc, actor = _ctx()
    _print_import(_run(lambda: request_import(svc, actor, permit, file, purpose=purpose)))


@imports_app.command("approve")
def import_approve(import_id: str) -> None:
    """Approve an import: the file is copied read-only into the workspace's imports/ folder."""
    from secure_env.workspace.ingress import decide_import

    svc, actor = _ctx()
    _print_import(_run(lambda: decide_import(svc, actor, import_id, approve=True)))


@imports_app.command("reject")
def import_reject(import_id: str, reason: str = typer.Option(..., "--reason")) -> None:
    """Reject an import, with a reason the analyst can act on."""
    from secure_env.workspace.ingress import decide_import

    svc, actor = _ctx()
    _print_import(_run(lambda: decide_import(svc, actor, import_id, approve=False, reason=reason)))


@imports_app.command("list")
def import_list(permit: str | None = typer.Option(None, "--permit")) -> None:
    """Import requests you may see."""
    from secure_env.workspace.ingress import list_imports

    svc, actor = _ctx()
    for r in _run(lambda: list_imports(svc, actor, permit)):
        _print_import(r)
