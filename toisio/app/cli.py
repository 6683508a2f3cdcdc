"""The ``toisio`` command: one CLI for the whole service, one sub-command group per stage.

The CLI is a thin layer: it parses arguments, calls the domain functions and
prints their results.  It holds no rules of its own.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pseudonymise.manifest import load as load_manifest
from toisio.console import make_console, run_or_exit, styled

app = typer.Typer(help="Toisio: secondary-use health and social data access service.", no_args_is_help=True)
audit_app = typer.Typer(help="The append-only, hash-chained audit log.", no_args_is_help=True)
scope_app = typer.Typer(help="Permit scope documents (the frozen extraction description).", no_args_is_help=True)
db_app = typer.Typer(help="The service database.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")
app.add_typer(scope_app, name="scope")
app.add_typer(db_app, name="db")


def _register_stage_commands() -> None:
    from toisio.app.airlock_cli import outputs_app
    from toisio.app.identity_cli import register
    from toisio.app.permits_cli import permits_app
    from toisio.app.workspace_cli import imports_app, workspace_app

    register(app)
    app.add_typer(permits_app, name="permits")
    app.add_typer(outputs_app, name="outputs")
    app.add_typer(workspace_app, name="workspace")
    app.add_typer(imports_app, name="imports")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        sys.stdout.write(f"toisio {version('toisio')}\n")
        raise typer.Exit()


@app.callback()
def _main(
    _version_: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                   help="print the version and exit"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="log what the command does (-v: info, -vv: debug), on standard error"),
    log_level: str = typer.Option("", "--log-level", help="log level: debug, info, warning or error"),
) -> None:
    """Wire the stages' event reactions for this command (a running workspace stops when its permit ends)."""
    from secure_env.workspace.server import enforce_permit_events
    from toisio.service import service

    level = log_level.upper() or {0: "", 1: "INFO"}.get(verbose, "DEBUG")
    if level:
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            _fail(f"unknown log level {log_level!r}; use debug, info, warning or error")
        logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    global _wired
    if not _wired:  # once per process, however many commands it runs
        enforce_permit_events(service)
        _wired = True


_wired = False


_register_stage_commands()
console = make_console(width=140)
err = make_console(stderr=True)


def _fail(message: str, code: int = 1) -> None:
    err.print(styled(("error:", "bold red"), f" {message}"))
    raise typer.Exit(code)


@app.command()
def synth(
    persons: int = typer.Option(..., "--persons", help="number of persons in the population"),
    out: Path = typer.Option(..., "--out", help="output directory for the CSV extracts"),
    seed: int = typer.Option(1, "--seed", help="random seed; the same seed gives byte-identical files"),
    defect_rate: float = typer.Option(0.0, "--defect-rate", help="share of lines given a defect"),
    fhir: bool = typer.Option(False, "--fhir", help="also write Kanta's FHIR R4 bulk export of the same persons "
                                                    "(kanta/: Patient, Encounter, Condition, MedicationDispense)"),
) -> None:
    """Write synthetic registry extracts (population, Hilmo, Avohilmo, Kela, causes of death, cancer), and with
    --fhir Kanta's FHIR bulk export of the same persons."""
    from pseudonymise.synthetic import generate

    start = time.perf_counter()
    with Progress(TextColumn("synthetic persons"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task("persons", total=persons)
        summary = generate(out, persons=persons, seed=seed, defect_rate=defect_rate,
                           progress=lambda n: progress.advance(task, n), fhir=fhir)
    table = Table(title=f"Synthetic extracts in {out} ({time.perf_counter() - start:.1f} s)")
    table.add_column("registry")
    table.add_column("rows", justify="right")
    for registry, rows in summary.rows.items():
        table.add_row(registry, f"{rows:,}")
    console.print(table)
    if summary.defects:
        console.print("defects injected (ground_truth.csv): " +
                      ", ".join(f"{k} {v}" for k, v in sorted(summary.defects.items())))


@app.command()
def extract(
    scope: Path | None = typer.Option(None, "--scope", help="permit scope file (YAML or JSON)"),
    permit: str | None = typer.Option(None, "--permit", help="take the frozen scope of this approved permit"),
    in_dir: Path | None = typer.Option(None, "--in", help="directory of the controllers' extracts"),
    out_dir: Path | None = typer.Option(None, "--out", help="delivery directory (replaced atomically)"),
    quarantine: Path | None = typer.Option(None, "--quarantine", help="where rejected rows go"),
    via_flow: bool = typer.Option(False, "--flow", help="run as the Prefect flow (with retries)"),
    max_quarantined_share: float | None = typer.Option(
        None, "--max-quarantined-share", min=0.0, max=1.0,
        help="fail when more of a registry's rows than this share are quarantined (default 0.5)"),
    allow_empty_extracts: bool = typer.Option(False, "--allow-empty-extracts",
                                              help="publish even if an extract has a header but no rows"),
    cleanup: bool = typer.Option(False, "--cleanup", help="only clean up after runs whose process died"),
) -> None:
    """Validate, minimise, pseudonymise, link and deliver one permit's data.

    With --permit it runs as the signed-in user (a handler) and is recorded on the permit; with --scope
    (an operator's run on a scope file, no permit) and --cleanup it is recorded as operator:<OS user>."""
    from toisio.identity import operator

    actor = operator().user_id
    if cleanup:
        from pseudonymise.pipeline import cleanup_stale_runs
        from toisio.service import service

        cleaned = cleanup_stale_runs(service(), actor=actor)
        console.print(f"cleaned up {len(cleaned)} stale run(s)" + (": " + ", ".join(cleaned) if cleaned else ""))
        return
    if in_dir is None or out_dir is None:
        _fail("give --in DIR and --out DIR (or --cleanup)")
    if (scope is None) == (permit is None):
        _fail("give either --scope FILE or --permit ID")
    if permit is not None:
        _extract_permit(permit, in_dir, out_dir, via_flow, quarantine_dir=quarantine,
                        max_quarantined_share=max_quarantined_share,
                        allow_empty_extracts=allow_empty_extracts or None)
        return
    if via_flow:
        _extract_via_flow(scope, in_dir, out_dir, actor)
        return
    from permits.scope import ScopeError, load_scope
    from pseudonymise.pipeline import ExtractionError, run_extraction
    from toisio.service import service

    logging.basicConfig(level=logging.WARNING)
    try:
        permit_scope = load_scope(scope)
    except ScopeError as exc:
        _fail(str(exc))
    start = time.perf_counter()
    try:
        with console.status(f"extracting {permit_scope.permit_id}"):
            result = run_extraction(permit_scope, in_dir, out_dir, service(), actor=actor,
                                    quarantine_dir=quarantine, max_quarantined_share=max_quarantined_share,
                                    allow_empty_extracts=allow_empty_extracts or None)
    except ExtractionError as exc:
        _fail(str(exc))
    print_manifest(result.manifest, title=f"Delivered {permit_scope.permit_id} to {result.output_dir} "
                                          f"in {time.perf_counter() - start:.1f} s")
    console.print(f"manifest sha256 {result.manifest_sha256}; quarantine: {result.quarantine_dir}")


def _extract_permit(permit: str, in_dir: Path, out_dir: Path, via_flow: bool, **options) -> None:
    """An approved permit's extraction, as the signed-in user, by the one sequence in :mod:`flows.extraction`
    (which records the start and the delivery on the permit itself)."""
    from toisio.cli_auth import current_actor
    from toisio.service import service

    svc = service()
    me = run_or_exit(lambda: current_actor(svc), err)
    start = time.perf_counter()
    if via_flow:
        from flows.prefect_env import configure_prefect

        configure_prefect(svc.settings)
        from flows.extraction import permit_extraction_flow

        summary = run_or_exit(lambda: permit_extraction_flow(permit, str(in_dir), str(out_dir), me.user_id), err)
        manifest = load_manifest(Path(summary["output_dir"]))
        sha = summary["manifest_sha256"]
    else:
        from flows.extraction import extract_for_permit

        logging.basicConfig(level=logging.WARNING)
        with console.status(f"extracting {permit}"):
            result = run_or_exit(lambda: extract_for_permit(svc, me, permit, in_dir, out_dir, **options), err)
        manifest, sha = result.manifest, result.manifest_sha256
    print_manifest(manifest, title=f"Delivered {permit} to {out_dir} in {time.perf_counter() - start:.1f} s")
    console.print(f"manifest sha256 {sha}; the delivery is recorded on the permit")


def _extract_via_flow(scope: Path, in_dir: Path, out_dir: Path, actor: str) -> None:
    from flows.prefect_env import configure_prefect
    from toisio.config import load_settings

    configure_prefect(load_settings())
    from flows.extraction import extraction_flow

    start = time.perf_counter()
    summary = extraction_flow(str(scope), str(in_dir), str(out_dir), actor)
    manifest = load_manifest(Path(summary["output_dir"]))
    print_manifest(manifest, title=f"Prefect flow delivered {manifest.permit_id} to {summary['output_dir']} "
                                   f"in {time.perf_counter() - start:.1f} s")
    console.print(f"manifest sha256 {summary['manifest_sha256']}")


def print_manifest(manifest, title: str) -> None:
    """Print a manifest's per-registry accounting as a table."""
    table = Table(title=title)
    for col in ("registry", "rows in", "quarantined", "outside period", "not in cohort", "other", "delivered"):
        table.add_column(col, justify="left" if col == "registry" else "right")
    for registry, c in manifest.counts.items():
        other = c.excluded_duplicate_person + c.excluded_not_in_scope
        table.add_row(registry, f"{c.rows_in:,}", f"{c.quarantined_total:,}", f"{c.excluded_outside_period:,}",
                      f"{c.excluded_not_in_cohort:,}", f"{other:,}", f"{c.delivered:,}")
    console.print(table)
    if manifest.cohort:
        c = manifest.cohort
        console.print(f"cohort: {c.cases:,} cases, {c.controls:,} controls "
                      f"({c.cases_short_of_controls:,} cases short of controls)")
    console.print("datasets: " + ", ".join(f"{k} {v.rows:,} rows" for k, v in manifest.datasets.items()))


@scope_app.command("schema")
def scope_schema() -> None:
    """Print the JSON Schema of permit scope files."""
    from permits.scope import scope_json_schema

    sys.stdout.write(json.dumps(scope_json_schema(), indent=2) + "\n")


@scope_app.command("check")
def scope_check(path: Path) -> None:
    """Validate a scope file and print its SHA-256."""
    from permits.scope import ScopeError, load_scope

    try:
        s = load_scope(path)
    except ScopeError as exc:
        _fail(str(exc))
    console.print(f"{path}: valid scope for {s.permit_id}, sha256 {s.sha256}")


@audit_app.command("verify")
def audit_verify(
    anchor: str | None = typer.Option(None, "--anchor", help="'SEQ:HASH' printed earlier by 'toisio audit head'"),
) -> None:
    """Check the whole hash chain against its head (kept outside the database), then that every case, user and
    token's stored state is what the chain recorded; exit 1 and name what is broken."""
    from toisio.app.auditing import verify_all
    from toisio.identity import operator
    from toisio.service import service

    svc = service()
    anchor_pair = None
    if anchor:
        seq, _, h = anchor.partition(":")
        anchor_pair = (int(seq), h)
    result = verify_all(svc, operator(), anchor=anchor_pair)
    if not result.ok:
        if anchor_pair is None and result.anchor_missing:
            _fail(f"{result.summary}\nIf the service stopped during a commit (a crash or a power cut) and nothing "
                  f"else explains it, an operator may record the database's chain as the head again: toisio audit "
                  f"reanchor --recorded {result.first_bad_seq} --reason '...'")
        _fail(result.summary)
    console.print(result.summary)


@audit_app.command("head")
def audit_head() -> None:
    """Print the chain head as SEQ:HASH, for anchoring outside the database."""
    from toisio import audit
    from toisio.service import service

    svc = service()
    with svc.engine.connect() as conn:
        seq, h = audit.head(conn)
    sys.stdout.write(f"{seq}:{h}\n")


@audit_app.command("reanchor")
def audit_reanchor(
    recorded: int = typer.Option(..., "--recorded", help="the entry number of the head recorded outside the "
                                                         "database, as 'toisio audit verify' names it"),
    reason: str = typer.Option(..., "--reason", help="what happened (e.g. 'power cut during a commit')"),
) -> None:
    """Operator, after a crash: when the head recorded outside the database is ahead of it (a change wrote it
    and the service stopped before its commit landed), record the database's intact chain as the head again.
    Refused if the database holds the recorded head or its chain is broken; the re-anchoring is itself an
    audit entry."""
    from toisio.audit_access import reanchor
    from toisio.identity import operator
    from toisio.service import service

    done = reanchor(service(), operator(), recorded_seq=recorded, reason=reason)
    database = f"entry {done.database[0]}" if done.database else "no entries"
    console.print(f"The head recorded outside the database was entry {done.recorded[0]}; the database's chain "
                  f"ended at {database} and verified intact. Recorded the re-anchoring as entry {done.entry.seq} "
                  f"(audit.head_reanchored), now the head.", markup=False)


@audit_app.command("show")
def audit_show(subject: str | None = typer.Option(None, "--subject"), limit: int = typer.Option(50, "--limit"),
               as_json: bool = typer.Option(False, "--json", help="print the entries as JSON (for scripts)")) -> None:
    """Operator: show the newest audit events (optionally for one subject, e.g. permit:TOISIO-2026-1)."""
    from toisio import audit
    from toisio.app.cli_common import print_json
    from toisio.service import service

    svc = service()
    with svc.engine.connect() as conn:
        rows = audit.events(conn, subject=subject)[-limit:]
    if as_json:
        return print_json(rows)
    table = Table(title="audit log")
    for col in ("seq", "time", "actor", "action", "subject"):
        table.add_column(col)
    for e in rows:
        table.add_row(str(e.seq), e.ts, e.actor, e.action, e.subject)
    console.print(table)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", "--host"), port: int = typer.Option(8700, "--port"),
          workers: int = typer.Option(1, "--workers", min=1, max=64,
                                      help="server processes (each with its own database connections); more than "
                                           "one needs PostgreSQL or a SQLite file on a local disk")) -> None:
    """Run the web portal and the REST API (portal at /, API at /api/v1, its documentation at /docs).

    Logs where it listens, and each request with its status and the user it ran as."""
    import uvicorn

    from toisio.app.api import configure_serve_logging
    from toisio.service import service

    log = configure_serve_logging()
    svc = service()
    svc.engine  # noqa: B018 - migrate the database once, before the workers start
    base = svc.settings.public_url.rstrip("/") or f"http://{host}:{port}"
    log.info("Toisio listening on http://%s:%d with %d worker%s: the portal at %s/, the API at %s/api/v1 "
             "(documentation %s/docs)", host, port, workers, "s" if workers > 1 else "", base, base, base)
    if workers == 1:
        from toisio.app.api import create_app

        uvicorn.run(create_app(svc, settle=True), host=host, port=port, log_level="warning")
    else:
        uvicorn.run("toisio.app.api:app_from_environment", factory=True, host=host, port=port, workers=workers,
                    log_level="warning")


@app.command("worker")
def worker_cmd(port: int = typer.Option(4200, "--port",
                                        help="the embedded Prefect server's port (its UI too)")) -> None:
    """Run the service's recurring jobs on their schedules as Prefect deployments (notify, expire-permits,
    deadline-digest, estimate-reminders, tidy-drafts), against PREFECT_API_URL or an embedded Prefect server
    whose UI it prints."""
    from flows.worker import run_worker
    from toisio.app.api import configure_serve_logging
    from toisio.service import service

    configure_serve_logging()
    run_worker(service().settings, port=port)


@app.command("notify")
def notify_cmd() -> None:
    """Operator: queue the messages of the audit chain's new entries and send the e-mails (a scheduled job:
    the worker runs it every minute)."""
    from flows.notifications import run_notifier
    from toisio.service import service

    r = run_notifier(service())
    console.print(f"{r.entries} audit entries read, {r.queued} messages queued, {r.sent} e-mails sent, "
                  f"{r.failed} failed" + (f", {r.skipped_forged} forged entries skipped" if r.skipped_forged else ""))


@app.command()
def report(out: Path = typer.Option(Path("var/report"), "--out", help="directory for the CSVs and chart")) -> None:
    """Indicators: applications by kind, purpose and quarter; cycle times; deadline compliance; overdue."""
    from permits.report import build, write
    from toisio.service import service

    start = time.perf_counter()
    r = build(service())
    files = write(r, out)
    table = Table(title=f"Indicators ({len(r.cases):,} cases, {time.perf_counter() - start:.2f} s)")
    for col in ("indicator", "kind", "period", "value", "p90", "n"):
        table.add_column(col)
    for row in r.indicators.fillna("").to_dict("records"):
        if row["indicator"] != "applications":
            table.add_row(row["indicator"], str(row["kind"]), str(row["period"]), str(row["value"]),
                          str(row.get("p90", "")), str(row.get("n", "")))
    console.print(table)
    console.print("written: " + ", ".join(str(f) for f in files))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the database schema (also done automatically on first use)."""
    from toisio.identity import operator, record_baselines
    from toisio.service import service

    svc = service()
    _ = svc.engine
    console.print(f"database at {svc.settings.db_url.split('@')[-1]} is up to date")
    recorded = run_or_exit(lambda: record_baselines(svc, operator()), err)
    if recorded:
        console.print(f"recorded the state of {len(recorded)} existing user(s) in the audit chain")


def main() -> None:
    """The ``toisio`` command: any :class:`~toisio.errors.ToisioError` a command lets through is printed as
    ``refused (code): message`` with exit status 1, never a traceback."""
    run_or_exit(app, err)


if __name__ == "__main__":  # pragma: no cover - run as a script only; the entry point is main()
    main()
