"""The output airlock: nothing leaves a workspace except files two independent checkers approved.

* An analyst named on the permit creates a request, adds files with their context, and submits.
  Files come in *groups* (OpenSAFELY's model): a group has the context and the disclosure controls its
  files share.  A *supporting* file (the counts behind a figure, a log) is shown to the reviewers to
  judge the outputs and is never voted on or released.
  Each table is checked automatically (:mod:`secure_env.airlock.disclosure`) when it is added; the report
  is stored with the file, so reviewers see it first.
* Comments are made on a group: a checker's comment is ``public`` (the analyst sees it once the round's
  outcome is known) or ``private`` (checkers only); the analyst replies publicly.  Who sees which comment
  is one pure function, :func:`secure_env.airlock.rules.comment_visible`.
* Output checkers review independently: a checker votes on every file, then submits the review;
  until a checker has submitted, the other checkers' votes are hidden from them.  Nobody named on
  the permit (the requester included) may review.  Two submitted reviews make the request
  ``reviewed``; a file on which the two disagree is ``conflicted`` and a third checker's vote
  settles it.
* A request is approved only when every file has two approvals from different checkers (or one
  for a differentially private output when the policy allows); an approval can be revoked until
  release.  A file whose automatic check failed is approved only when the analyst asked for an
  exception with a reason and each approving checker gave their reason for overriding the check
  (:func:`secure_env.airlock.rules.approval_refused`); the policy in force is recorded with every
  decision and in the release's manifest.  Release copies the files with a manifest to the release store, outside every
  workspace.  Every view, vote, comment and release is in the audit log.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, func, select, update

from permits.permissions import PermissionDenied, Role
from permits.service import permit_access
from secure_env.airlock import rules
from secure_env.airlock.disclosure import Table, check_differencing, check_table
from secure_env.airlock.lifecycle import TRANSITIONS, RequestEvent, RequestState, next_request_state
from secure_env.airlock.models import (
    OutputCommentRow,
    OutputFileRow,
    OutputGroupRow,
    OutputRequestRow,
    ReviewSubmissionRow,
    ReviewVoteRow,
)
from secure_env.airlock.profiles import DisclosureProfile, profile, profile_for_permit
from toisio import audit, events
from toisio.documents import CodedError
from toisio.identity import Actor
from toisio.service import Service
from toisio.text import MAX_TEXT

TABLE_SUFFIXES = {".csv", ".parquet"}
FIGURE_SUFFIXES = {".png", ".svg"}
TEXT_SUFFIXES = {".txt", ".md", ".json"}
DECISIONS = ("approve", "reject", "request_changes")
DEFAULT_GROUP = "default"
MAX_GROUP_NAME = 100
#: states in which the requester may still change the request's files and groups
EDITABLE = (RequestState.PENDING, RequestState.RETURNED)
#: states in which checkers review (vote, comment)
UNDER_REVIEW = (RequestState.SUBMITTED, RequestState.PARTIALLY_REVIEWED, RequestState.REVIEWED)


class AirlockError(CodedError):
    """An airlock request that cannot be done, with a stable ``code``."""

    default_code = "airlock"


@dataclass(frozen=True)
class Policy:
    """Release policy: how many approvals a file needs.  Recorded with every decision."""

    approvals_needed: int = 2
    dp_approvals_needed: int = 2  # may be lowered to 1 for differentially private outputs

    def recorded(self) -> dict[str, Any]:
        """The policy as it is written into a decision's audit entry."""
        return {"approvals_needed": self.approvals_needed, "dp_approvals_needed": self.dp_approvals_needed,
                "dp_policy_needs": "a receipt of the service's DP query service, verified against the ledger",
                "automatic_fail": "approved only with the analyst's exception and every approver's override reason"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _store(svc: Service) -> Path:
    return svc.settings.home / "airlock"


def release_store(svc: Service) -> Path:
    """Where released outputs go: outside every workspace."""
    return svc.settings.home / "releases"


def _row(conn: Connection, request_id: str):
    row = conn.execute(select(OutputRequestRow).where(OutputRequestRow.request_id == request_id)).first()
    if row is None:
        raise AirlockError(f"no output request {request_id!r}", "not_found")
    return row


_pending = threading.local()


def _publishes(fn):
    """Publish the request's state changes (``output.<event>``) once ``fn``'s transaction has committed; nothing
    when it raised (the flows that follow a request resume on them, :mod:`flows.follow`)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        outer = getattr(_pending, "events", None)
        _pending.events = []
        try:
            result = fn(*args, **kwargs)
            done = _pending.events
        finally:
            _pending.events = outer
        for topic, payload in done:
            events.publish(topic, payload)
        return result

    return wrapper


def _announce(topic: str, payload: dict) -> None:
    queue = getattr(_pending, "events", None)
    if queue is not None:
        queue.append((topic, payload))


def _move(conn: Connection, svc: Service, row, event: RequestEvent, actor: str, payload: dict | None = None,
          **values: Any) -> RequestState:
    new = next_request_state(RequestState(row.state), event)
    _announce(f"output.{event.value}", {"request_id": row.request_id, "permit_id": row.permit_id, "actor": actor,
                                        "state": new.value})
    conn.execute(update(OutputRequestRow).where(OutputRequestRow.request_id == row.request_id)
                 .values(state=new.value, updated_at=_now(), **values))
    audit.append(conn, svc.audit_key, actor=actor, action=f"output.{event.value}",
                 subject=f"output:{row.request_id}",
                 payload={"permit_id": row.permit_id, "from": row.state, "to": new.value, **(payload or {})})
    return new


def _relations(svc: Service, actor: Actor, permit_id: str, requester: str | None) -> frozenset[str]:
    access = permit_access(svc, permit_id)
    return rules.relations(actor, requester=requester, permit_users=access.users, holder=access.holder)


def check_can(action: str, svc: Service, actor: Actor, permit_id: str, requester: str | None) -> str:
    """Raise :class:`PermissionDenied` saying who may, unless ``actor`` may take ``action`` on a request
    (:data:`secure_env.airlock.rules.OUTPUTS`)."""
    return rules.OUTPUTS.check_can(action, actor, _relations(svc, actor, permit_id, requester))


def can(action: str, svc: Service, actor: Actor, permit_id: str, requester: str | None) -> bool:
    """Bool form of :func:`check_can`."""
    return rules.OUTPUTS.can(action, actor, _relations(svc, actor, permit_id, requester))


def check_can_review(svc: Service, actor: Actor, permit_id: str, requester: str) -> None:
    """Raise unless ``actor`` is an output checker independent of the request and the permit."""
    check_can("review", svc, actor, permit_id, requester)


def can_review(svc: Service, actor: Actor, permit_id: str, requester: str) -> bool:
    return can("review", svc, actor, permit_id, requester)


def request_state(svc: Service, request_id: str) -> RequestState:
    """The current state of an output request."""
    with svc.engine.connect() as conn:
        return RequestState(_row(conn, request_id).state)


@_publishes
def create_request(svc: Service, actor: Actor, permit_id: str, *, service: bool = False) -> str:
    """A new, pending output request of ``permit_id``.

    ``service=True``: the service's own statistics for a data request, requested by a handler.
    """
    check_can("create_for_service" if service else "create", svc, actor, permit_id, None)
    access = permit_access(svc, permit_id)
    if not access.in_force:
        raise PermissionDenied(f"permit {permit_id} is not in force ({access.reason})", action="output.create")
    with svc.engine.begin() as conn:
        n = conn.execute(select(func.count()).select_from(OutputRequestRow)
                         .where(OutputRequestRow.permit_id == permit_id)).scalar() + 1
        request_id = f"OUT-{permit_id}-{n}"
        now = _now()
        conn.execute(OutputRequestRow.__table__.insert().values(
            request_id=request_id, permit_id=permit_id, requester=actor.user_id, state=RequestState.PENDING.value,
            round=1, created_at=now, updated_at=now))
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="output.created",
                     subject=f"output:{request_id}", payload={"permit_id": permit_id})
        _announce("output.created", {"request_id": request_id, "permit_id": permit_id, "actor": actor.user_id,
                                     "state": RequestState.PENDING.value})
    return request_id


def _kind(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix in TABLE_SUFFIXES:
        return "table"
    if suffix in FIGURE_SUFFIXES:
        return "figure"
    if suffix in TEXT_SUFFIXES:
        return "text"
    raise AirlockError(f"{name}: unsupported output type {suffix or '(none)'}; allowed: "
                       f"{', '.join(sorted(TABLE_SUFFIXES | FIGURE_SUFFIXES | TEXT_SUFFIXES))}", "unsupported_type")


def _read_table(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path)


def _released_tables(conn: Connection, svc: Service, permit_id: str) -> list[Table]:
    """Count tables already released for a permit, read back from the release store."""
    out = []
    for r in conn.execute(select(OutputFileRow, OutputRequestRow.release_dir).join(
            OutputRequestRow, OutputRequestRow.request_id == OutputFileRow.request_id).where(
            OutputRequestRow.permit_id == permit_id, OutputRequestRow.state == RequestState.RELEASED.value,
            OutputFileRow.kind == "table", OutputFileRow.supporting.is_(False))):
        ctx = json.loads(r.context)
        path = Path(r.release_dir) / r.name
        if ctx.get("statistic", "count") != "count" or not path.exists():
            continue
        numeric, _ = _table_cells(path, ctx.get("index"))
        out.append(Table(numeric, numeric, "count", name=f"{r.request_id}/{r.name}"))
    return out


def _mostly_numbers(col: pd.Series) -> bool:
    if pd.api.types.is_numeric_dtype(col):
        return True
    filled = col.dropna().astype(str).str.strip()
    filled = filled[filled != ""]
    return bool(len(filled)) and pd.to_numeric(filled, errors="coerce").notna().mean() >= 0.5


def _table_cells(path: Path, index: str | list[str] | None) -> tuple[pd.DataFrame, list[str]]:
    """A table file's cells as numbers, labelled by its row-label columns, and findings for cells that hold text.

    The row labels are the columns named in ``index`` (a list, or comma-separated, for several levels), else every
    column in which fewer than half of the filled cells are numbers (so a count column with a ``<5`` in it stays
    a column of counts).  A cell that is neither a number nor empty (``<5``, ``*``, ``n/a``) cannot be checked:
    it is listed, and the table goes to review.  An empty cell is a suppressed one.
    """
    df = _read_table(path)
    named = index.split(",") if isinstance(index, str) else list(index or [])
    labels = ([str(c).strip() for c in named if str(c).strip()] if named else
              [c for c in df.columns if not _mostly_numbers(df[c])])
    unknown = [c for c in labels if c not in df.columns]
    if unknown:
        raise AirlockError(f"{path.name}: no column {unknown[0]!r} for the row labels; columns: "
                           f"{', '.join(map(str, df.columns))}", "bad_index")
    if labels and len(labels) < len(df.columns):
        df = df.set_index(labels)
    numeric = df.apply(pd.to_numeric, errors="coerce").astype(float)
    text = df.astype("string").apply(lambda col: col.str.strip())
    bad = (numeric.isna() & df.notna() & text.ne("").fillna(False)).to_numpy()
    findings = []
    for i, j in list(zip(*np.nonzero(bad), strict=True))[:20]:
        findings.append(f"cell ({df.index[i]}, {df.columns[j]}) holds {str(df.iat[i, j])[:20]!r}, not a number: "
                        f"the automatic check cannot read it (write suppressed cells empty)")
    if int(bad.sum()) > 20:
        findings.append(f"... and {int(bad.sum()) - 20} more cells that are not numbers")
    return numeric, findings


def _auto_check(path: Path, context: dict, prof: DisclosureProfile,
                released: list[Table] | None = None) -> tuple[str, dict]:
    """Run the disclosure checks on a table file; other files go to manual review."""
    if _kind(path.name) != "table":
        return "review", {"note": "figures and text are checked by the reviewers"}
    numeric, unreadable = _table_cells(path, context.get("index"))
    statistic = context.get("statistic", "count")
    if statistic != "count":
        report = {"status": "review", "note": f"a {statistic} table: the reviewers check it with the counts in "
                                             f"the analyst report", "table_findings": [], "cells": []}
        if "check_report" in context:
            report["analyst_report"] = context["check_report"]
        return report["status"], report
    t = Table(numeric, numeric, "count")
    report = check_table(t, prof).to_dict()
    findings = check_differencing(t, released or [], prof)
    if findings:
        report["table_findings"] = report["table_findings"] + findings
        report["status"] = "fail"
    if unreadable:
        report["table_findings"] = report["table_findings"] + unreadable
        report["status"] = "fail" if report["status"] == "fail" else "review"
    if "check_report" in context:
        # the analyst helpers' report (computed in the workspace with the true counts) is kept for the
        # reviewers, but the verdict is always the server's own check of the numbers that would leave
        report["analyst_report"] = context["check_report"]
    return report["status"], report


def _helper_exception(path: Path) -> str:
    """The exception the analyst asked for with the helper (``acro.add_exception``), from the ``results.json``
    ``finalise`` wrote beside the file; '' when there is none."""
    results = path.parent / "results.json"
    try:
        doc = json.loads(results.read_text()) if results.is_file() else {}
    except (OSError, ValueError):
        return ""
    for out in doc.get("outputs", []) if isinstance(doc, dict) else []:
        if isinstance(out, dict) and out.get("file") == path.name and isinstance(out.get("exception"), str):
            return out["exception"].strip()[:MAX_TEXT]
    return ""


def _spec_of(path: Path) -> tuple | None:
    """The specification a helper wrote beside a table (``(TableSpec, its JSON)``), ``(None, why)`` when one is
    there but unreadable, None when there is none."""
    from pydantic import ValidationError

    from secure_env.airlock import tables

    try:
        spec = tables.spec_beside(path)
    except (ValidationError, ValueError) as e:
        return None, f"its specification file is not valid ({str(e).splitlines()[0]})"
    return None if spec is None else (spec, tables.spec_json(spec))


def _verified_check(svc: Service, permit_id: str, path: Path, spec: tuple, context: dict, prof: DisclosureProfile,
                    released: list[Table]) -> tuple[str, dict]:
    """A helper's table: its specification run again on the delivered data, outside the kernel.  Verified: the
    verdict is the checks on the true table (persons and contributors behind every cell).  Unverified: the checks
    of what is visible, and never better than review."""
    from secure_env.airlock import regression, survival, tables
    from secure_env.workspace.areas import analysis_data

    model = isinstance(spec[0], regression.ModelSpec | survival.SurvivalSpec | tables.FigureSpec)
    if spec[0] is None:
        v = tables.Verification(False, spec[1])
    elif model:
        verify = {regression.ModelSpec: regression.verify, survival.SurvivalSpec: survival.verify,
                  tables.FigureSpec: tables.verify_figure}[type(spec[0])]
        v = verify(path, spec[0], analysis_data(svc, permit_id), prof)
    else:
        v = tables.verify(path, spec[0], analysis_data(svc, permit_id), prof)
    if model:
        report = v.report.to_dict() if v.verified else {
            "status": "review", "table_findings": [], "cells": [],
            "note": "a model, survival table or figure the airlock could not compute again: the reviewers check it"}
        report.update(verified=v.verified, verification=v.reason if v.verified else f"unverified: {v.reason}")
        return report["status"], report
    if v.verified:
        report = v.report.to_dict()
        if spec[0].aggfunc == "count" and not spec[0].normalize:
            numeric, _ = _table_cells(path, list(spec[0].index))
            findings = check_differencing(Table(numeric, numeric, "count"), released, prof)
            if findings:
                report["table_findings"] = report["table_findings"] + findings
                report["status"] = "fail"
        report.update(verified=True, verification=v.reason)
        return report["status"], report
    shape = {} if spec[0] is None else {
        "index": list(spec[0].index),
        "statistic": "count" if spec[0].aggfunc == "count" and not spec[0].normalize else spec[0].aggfunc}
    status, report = _auto_check(path, {**context, **shape}, prof, released)
    report.update(verified=False, verification=f"unverified: {v.reason}")
    report["status"] = status = "fail" if status == "fail" else "review"
    return status, report


def _dp_check(conn: Connection, svc: Service, permit_id: str, path: Path, data: bytes,
              context: dict) -> tuple[str | None, dict, bool]:
    """A DP answer file's check: ``pass`` when its receipt verifies against the ledger (only then may it use the
    DP approval policy), ``fail`` when it claims to be one and does not verify; ``(None, ...)`` for other files."""
    from secure_env.airlock import dp_service

    if path.suffix.lower() != ".json":
        return None, {}, False
    v = dp_service.verify(svc, permit_id, data, conn)
    if v.verified:
        return "pass", {"status": "pass", "dp_verified": True, "note": v.reason, "table_findings": [],
                        "cells": []}, True
    claims = context.get("differentially_private") or dp_service.FORMAT.encode() in data
    if claims:
        return "fail", {"status": "fail", "dp_verified": False, "table_findings": [f"DP receipt refused: {v.reason}"],
                        "cells": []}, False
    return None, {}, False


def _check_source(svc: Service, permit_id: str, path: Path) -> None:
    """Where the permit has a workspace, an output must come from the workspace's Jupyter root."""
    from secure_env.workspace.provision import paths

    root = paths(svc, permit_id).root
    if root.exists() and not path.resolve().is_relative_to(root.resolve()):
        raise AirlockError(f"{path}: outputs of permit {permit_id} must come from its workspace ({root})",
                           "outside_workspace")


def check_can_add_file(svc: Service, actor: Actor, request_id: str) -> str:
    """Raise unless ``actor`` may add files to the request; return its permit id."""
    with svc.engine.connect() as conn:
        row = _row(conn, request_id)
    check_can("add_file", svc, actor, row.permit_id, row.requester)
    return row.permit_id


def group_name(name: str | None) -> str:
    """A group's name, checked: 1 to 100 characters, no path separators or control characters."""
    name = (name or "").strip() or DEFAULT_GROUP
    if len(name) > MAX_GROUP_NAME or any(c in name for c in "/\\") or not name.isprintable():
        raise AirlockError(f"group name {name[:40]!r}: at most {MAX_GROUP_NAME} printable characters, "
                           f"no '/' or '\\'", "bad_group")
    return name


def _check_editable(row) -> None:
    if RequestState(row.state) not in EDITABLE:
        raise AirlockError(f"files and groups can be changed only while the request is pending or returned "
                           f"(it is {row.state})", "illegal_state")


def _ensure_group(conn: Connection, request_id: str, name: str) -> None:
    exists = conn.execute(select(OutputGroupRow.id).where(OutputGroupRow.request_id == request_id,
                                                          OutputGroupRow.name == name)).first()
    if exists is None:
        conn.execute(OutputGroupRow.__table__.insert().values(request_id=request_id, name=name, context="",
                                                              controls="", updated_at=_now()))


def add_file(svc: Service, actor: Actor, request_id: str, path: str | Path, context: dict[str, Any], *,
             group: str | None = None, supporting: bool = False, profile_name: str | None = None) -> int:
    """Add a file with its context (what it shows, the counts behind it, how it was produced) to a group
    (``default`` unless named).  A ``supporting`` file needs only a description: the reviewers see it,
    nobody votes on it, and it is never released."""
    path = Path(path)
    group = group_name(group)
    if not supporting and not context.get("exception"):
        helper_exception = _helper_exception(path)
        if helper_exception:
            context = {**context, "exception": helper_exception}
    exception = context.get("exception", "")
    if not isinstance(exception, str) or len(exception) > MAX_TEXT:
        raise AirlockError(f"{path.name}: an exception is a reason in words, at most {MAX_TEXT} characters",
                           "bad_exception")
    if exception.strip() and supporting:
        raise AirlockError(f"{path.name}: a supporting file is never released, so it needs no exception",
                           "bad_exception")
    for key in ("description",) if supporting else ("description", "method"):
        if not str(context.get(key, "")).strip():
            raise AirlockError(f"{path.name}: context needs '{key}' (what the file shows and how it was made)",
                               f"missing_{key}")
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        check_can("add_file", svc, actor, row.permit_id, row.requester)
        _check_editable(row)
        _check_source(svc, row.permit_id, path)
        prof = profile(profile_name) if profile_name else profile_for_permit(
            svc.settings.home, row.permit_id, svc.settings.disclosure_profile)
        data = path.read_bytes()
        dp_verified = False
        if supporting:
            _kind(path.name)
            status, report = "supporting", {"status": "supporting",
                                            "note": "a supporting file: shown to the reviewers, never released"}
        else:
            status, report, dp_verified = _dp_check(conn, svc, row.permit_id, path, data, context)
            spec = _spec_of(path) if status is None and _kind(path.name) in ("table", "figure") else None
            if spec is not None:
                context = {**context, "spec": spec[1]} if spec[0] is not None else context
                status, report = _verified_check(svc, row.permit_id, path, spec, context, prof,
                                                 _released_tables(conn, svc, row.permit_id))
            elif status is None:
                status, report = _auto_check(path, context, prof, _released_tables(conn, svc, row.permit_id))
                if _kind(path.name) == "table":
                    report.update(verified=False, verification="unverified: no specification beside the file (it "
                                                               "was not made with the helpers)")
                if context.get("differentially_private"):
                    report["dp_claim"] = ("the context says differentially private, but the file is not an answer "
                                          "of the service's DP query service with a receipt: an ordinary output")
        target = _store(svc) / request_id / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        conn.execute(OutputFileRow.__table__.delete().where(OutputFileRow.request_id == request_id,
                                                            OutputFileRow.name == path.name))
        res = conn.execute(OutputFileRow.__table__.insert().values(
            request_id=request_id, name=path.name, kind=_kind(path.name), sha256=hashlib.sha256(data).hexdigest(),
            size=len(data), context=json.dumps(context, default=str), check_status=status,
            check_report=json.dumps(report, default=str),
            differentially_private=dp_verified,
            group_name=group, supporting=supporting))
        _ensure_group(conn, request_id, group)
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="output.file_added",
                     subject=f"output:{request_id}",
                     payload={"file": path.name, "sha256": hashlib.sha256(data).hexdigest(), "check": status,
                              "group": group, "supporting": supporting})
        return int(res.inserted_primary_key[0])


def describe_group(svc: Service, actor: Actor, request_id: str, group: str, *, context: str, controls: str) -> None:
    """Give a group the context its files share (what they are for) and the disclosure controls applied."""
    group = group_name(group)
    for what, text in (("context", context), ("controls", controls)):
        if len(text) > MAX_TEXT:
            raise AirlockError(f"group {group}: {what} is longer than {MAX_TEXT} characters", "too_long")
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        check_can("describe_group", svc, actor, row.permit_id, row.requester)
        _check_editable(row)
        _ensure_group(conn, request_id, group)
        conn.execute(update(OutputGroupRow).where(OutputGroupRow.request_id == request_id,
                                                  OutputGroupRow.name == group)
                     .values(context=context.strip(), controls=controls.strip(), updated_at=_now()))
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="output.group_described",
                     subject=f"output:{request_id}",
                     payload={"group": group, "context": context.strip(), "controls": controls.strip()})


def comment(svc: Service, actor: Actor, request_id: str, group: str, text: str,
            visibility: str = rules.PUBLIC) -> None:
    """Comment on a group of a request.  A checker's comment is ``public`` or ``private``
    (:func:`secure_env.airlock.rules.comment_visible`); the requester replies, always publicly."""
    text = (text or "").strip()
    if not text:
        raise AirlockError("a comment needs some text", "missing_comment")
    if len(text) > MAX_TEXT:
        raise AirlockError(f"a comment is at most {MAX_TEXT} characters", "too_long")
    if visibility not in rules.VISIBILITIES:
        raise AirlockError(f"visibility must be one of {', '.join(rules.VISIBILITIES)}", "bad_visibility")
    group = group_name(group)
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        state = RequestState(row.state)
        if actor.user_id == row.requester:
            check_can("reply", svc, actor, row.permit_id, row.requester)
            if visibility != rules.PUBLIC:
                raise AirlockError("the requester's replies are public; private comments are for checkers",
                                   "bad_visibility")
            if state not in (*EDITABLE, *UNDER_REVIEW):
                raise AirlockError(f"replies are taken until the request is decided (it is {row.state})",
                                   "illegal_state")
        else:
            check_can_review(svc, actor, row.permit_id, row.requester)
            if state not in (*UNDER_REVIEW, RequestState.APPROVED):
                raise AirlockError(f"checkers comment while the request is under review (it is {row.state})",
                                   "illegal_state")
        known = {g.name for g in _groups(conn, request_id)}
        if group not in known:
            raise AirlockError(f"{request_id} has no group {group!r}; groups: {', '.join(sorted(known)) or 'none'}",
                               "not_found")
        conn.execute(OutputCommentRow.__table__.insert().values(
            request_id=request_id, group_name=group, round=row.round, author=actor.user_id, text=text,
            visibility=visibility, ts=_now()))
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="output.commented",
                     subject=f"output:{request_id}",
                     payload={"group": group, "visibility": visibility, "round": row.round, "comment": text})


@_publishes
def submit(svc: Service, actor: Actor, request_id: str) -> RequestState:
    """Submit (or resubmit after a return) for review."""
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        check_can("submit", svc, actor, row.permit_id, row.requester)
        files = conn.execute(select(func.count()).select_from(OutputFileRow)
                             .where(OutputFileRow.request_id == request_id,
                                    OutputFileRow.supporting.is_(False))).scalar()
        if not files:
            raise AirlockError("a request needs at least one file to release (supporting files are not released)",
                               "empty_request")
        if RequestState(row.state) is RequestState.RETURNED:
            return _move(conn, svc, row, RequestEvent.RESUBMIT, actor.user_id, round=row.round + 1)
        return _move(conn, svc, row, RequestEvent.SUBMIT, actor.user_id)


@_publishes
def withdraw(svc: Service, actor: Actor, request_id: str) -> RequestState:
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        check_can("withdraw", svc, actor, row.permit_id, row.requester)
        return _move(conn, svc, row, RequestEvent.WITHDRAW, actor.user_id)


def _files(conn: Connection, request_id: str, *, outputs_only: bool = False) -> list:
    """The request's files; ``outputs_only``: without the supporting files (those that would be released)."""
    q = select(OutputFileRow).where(OutputFileRow.request_id == request_id)
    if outputs_only:
        q = q.where(OutputFileRow.supporting.is_(False))
    return list(conn.execute(q.order_by(OutputFileRow.id)))


def _groups(conn: Connection, request_id: str) -> list:
    return list(conn.execute(select(OutputGroupRow).where(OutputGroupRow.request_id == request_id)
                             .order_by(OutputGroupRow.id)))


def _comments(conn: Connection, request_id: str) -> list:
    return list(conn.execute(select(OutputCommentRow).where(OutputCommentRow.request_id == request_id)
                             .order_by(OutputCommentRow.id)))


def _votes(conn: Connection, request_id: str, round_: int) -> list:
    return list(conn.execute(select(ReviewVoteRow).where(ReviewVoteRow.request_id == request_id,
                                                         ReviewVoteRow.round == round_,
                                                         ReviewVoteRow.revoked.is_(False))
                             .order_by(ReviewVoteRow.id)))


def _submitted(conn: Connection, request_id: str, round_: int) -> list[str]:
    return [r[0] for r in conn.execute(select(ReviewSubmissionRow.reviewer).where(
        ReviewSubmissionRow.request_id == request_id, ReviewSubmissionRow.round == round_)
        .order_by(ReviewSubmissionRow.id))]


def vote(svc: Service, actor: Actor, request_id: str, file_name: str, decision: str, comment: str = "") -> None:
    """Vote on one file (replacing the checker's earlier vote on it in this round)."""
    if decision not in DECISIONS:
        raise AirlockError(f"decision must be one of {', '.join(DECISIONS)}", "bad_decision")
    if decision != "approve" and not comment.strip():
        raise AirlockError("a rejection or a request for changes needs a comment for the analyst", "missing_comment")
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        check_can_review(svc, actor, row.permit_id, row.requester)
        state = RequestState(row.state)
        if state not in (RequestState.SUBMITTED, RequestState.PARTIALLY_REVIEWED, RequestState.REVIEWED):
            raise AirlockError(f"votes are taken while the request is under review (it is {row.state})",
                               "illegal_state")
        if actor.user_id in _submitted(conn, request_id, row.round) and state is not RequestState.REVIEWED:
            raise AirlockError("you already submitted your review of this round", "already_submitted")
        f = next((f for f in _files(conn, request_id) if f.name == file_name), None)
        if f is None:
            raise AirlockError(f"no file {file_name!r} in {request_id}", "not_found")
        if f.supporting:
            raise AirlockError(f"{file_name} is a supporting file: it is never released, so nobody votes on it",
                               "supporting_file")
        if decision == "approve":
            refused = rules.approval_refused(f.check_status, exception=_exception(f), reason=comment)
            if refused:
                raise AirlockError(f"{file_name}: {rules.OVERRIDE_NEEDS[refused]}", refused)
        conn.execute(update(ReviewVoteRow).where(
            ReviewVoteRow.request_id == request_id, ReviewVoteRow.file_id == f.id, ReviewVoteRow.round == row.round,
            ReviewVoteRow.reviewer == actor.user_id).values(revoked=True))
        conn.execute(ReviewVoteRow.__table__.insert().values(
            request_id=request_id, file_id=f.id, round=row.round, reviewer=actor.user_id, decision=decision,
            comment=comment, ts=_now(), revoked=False))
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="output.voted",
                     subject=f"output:{request_id}", payload={"file": file_name, "decision": decision,
                                                              "comment": comment})


@_publishes
def submit_review(svc: Service, actor: Actor, request_id: str) -> RequestState:
    """Finish a review: allowed only after voting on every file."""
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        check_can_review(svc, actor, row.permit_id, row.requester)
        mine = {v.file_id for v in _votes(conn, request_id, row.round) if v.reviewer == actor.user_id}
        files = _files(conn, request_id, outputs_only=True)
        missing = [f.name for f in files if f.id not in mine]
        state = RequestState(row.state)
        if state is RequestState.REVIEWED:
            conflicted = {f.name for f in files if file_status(conn, row, f) == "conflicted"}
            missing = [m for m in missing if m in conflicted]
        if missing:
            raise AirlockError(f"vote on every file before submitting; not yet voted: {', '.join(missing)}",
                               "votes_missing")
        if actor.user_id in _submitted(conn, request_id, row.round):
            raise AirlockError("you already submitted your review of this round", "already_submitted")
        conn.execute(ReviewSubmissionRow.__table__.insert().values(request_id=request_id, round=row.round,
                                                                   reviewer=actor.user_id, ts=_now()))
        return _move(conn, svc, row, RequestEvent.REVIEW_SUBMITTED, actor.user_id)


def _exception(f) -> str:
    """The analyst's reason for an exception to a failed automatic check (ACRO's ``add_exception``), or ''."""
    return str(json.loads(f.context).get("exception", "") or "")


def file_status(conn: Connection, row, f, policy: Policy = Policy()) -> str:
    """``approved``, ``rejected``, ``changes_requested``, ``conflicted`` or ``pending`` for one file
    (:func:`secure_env.airlock.rules.file_status` over this round's submitted votes); ``supporting`` for a
    supporting file."""
    if f.supporting:
        return "supporting"
    submitted = _submitted(conn, row.request_id, row.round)
    votes = [v for v in _votes(conn, row.request_id, row.round) if v.file_id == f.id and v.reviewer in submitted]
    needed = policy.dp_approvals_needed if f.differentially_private else policy.approvals_needed
    # an approval the override rule refuses does not count (it could not have been recorded, but the rule is
    # applied again here so that no path around :func:`vote` approves a failed file)
    decisions = [v.decision for v in votes if v.decision != "approve" or not rules.approval_refused(
        f.check_status, exception=_exception(f), reason=v.comment)]
    return rules.file_status(decisions, needed)


def _check_can_see(svc: Service, actor: Actor, row) -> None:
    """The requester, auditors and the permit's holder see a request; a checker only one they may review."""
    grant = check_can("view", svc, actor, row.permit_id, row.requester)
    if grant == Role.OUTPUT_CHECKER and actor.user_id != row.requester:
        check_can_review(svc, actor, row.permit_id, row.requester)


def view(svc: Service, actor: Actor, request_id: str) -> dict[str, Any]:
    """A request as ``actor`` may see it: other checkers' votes stay hidden until the viewer has
    submitted their own review.  Every view is audited."""
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        is_requester = actor.user_id == row.requester
        _check_can_see(svc, actor, row)
        submitted = _submitted(conn, request_id, row.round)
        votes = _votes(conn, request_id, row.round)
        outcome_known = RequestState(row.state) in (RequestState.RETURNED, RequestState.REJECTED,
                                                    RequestState.APPROVED, RequestState.RELEASED)
        files = []
        for f in _files(conn, request_id):
            visible = [v for v in votes if v.file_id == f.id and (
                v.reviewer == actor.user_id or actor.user_id in submitted or (is_requester and outcome_known))]
            files.append({"name": f.name, "kind": f.kind, "group": f.group_name, "supporting": bool(f.supporting),
                          "sha256": f.sha256, "check_status": f.check_status,
                          "check_report": json.loads(f.check_report), "context": json.loads(f.context),
                          "status": file_status(conn, row, f, policy_of(svc)),
                          "votes": [{"reviewer": v.reviewer, "decision": v.decision, "comment": v.comment}
                                    for v in visible]})
        reviews = can_review(svc, actor, row.permit_id, row.requester)
        audits = Role.AUDITOR in actor.roles
        comments = [c for c in _comments(conn, request_id) if rules.comment_visible(
            author=c.author, visibility=c.visibility, comment_round=c.round, viewer=actor.user_id,
            requester=row.requester, viewer_reviews=reviews, viewer_audits=audits,
            viewer_submitted=actor.user_id in submitted, current_round=row.round, outcome_known=outcome_known)]
        groups = [{"name": g.name, "context": g.context, "controls": g.controls,
                   "files": [f["name"] for f in files if f["group"] == g.name],
                   "comments": [{"author": c.author, "text": c.text, "visibility": c.visibility,
                                 "round": c.round, "at": c.ts} for c in comments if c.group_name == g.name]}
                  for g in _groups(conn, request_id)]
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="output.viewed",
                     subject=f"output:{request_id}", payload={})
        return {"request_id": row.request_id, "permit_id": row.permit_id, "requester": row.requester,
                "state": row.state, "round": row.round, "reviews_submitted": len(submitted), "files": files,
                "groups": groups, "released_before": released_for_permit(conn, row.permit_id)}


def released_for_permit(conn: Connection, permit_id: str) -> list[dict]:
    """Files already released for a permit (reviewers need them to judge differencing)."""
    rows = conn.execute(select(OutputFileRow.name, OutputFileRow.sha256, OutputRequestRow.request_id,
                               OutputRequestRow.released_at).join(
        OutputRequestRow, OutputRequestRow.request_id == OutputFileRow.request_id).where(
        OutputRequestRow.permit_id == permit_id, OutputRequestRow.state == RequestState.RELEASED.value,
        OutputFileRow.supporting.is_(False)))
    return [{"file": r[0], "sha256": r[1], "request_id": r[2], "released_at": r[3]} for r in rows]


def policy_of(svc: Service) -> Policy:
    """The release policy from the configuration (``TOISIO_DP_APPROVALS_NEEDED``)."""
    return Policy(dp_approvals_needed=max(1, min(2, svc.settings.dp_approvals_needed)))


@_publishes
def decide(svc: Service, actor: Actor, request_id: str, outcome: str, *, policy: Policy | None = None) -> RequestState:
    """Approve, reject or return a reviewed request; approval needs every file approved."""
    policy = policy or policy_of(svc)
    events_ = {"approve": RequestEvent.APPROVE, "reject": RequestEvent.REJECT, "return": RequestEvent.RETURN}
    if outcome not in events_:
        raise AirlockError(f"outcome must be one of {', '.join(events_)}", "bad_outcome")
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        check_can_review(svc, actor, row.permit_id, row.requester)
        statuses = {f.name: file_status(conn, row, f, policy) for f in _files(conn, request_id, outputs_only=True)}
        if outcome == "approve":
            not_ok = {n: s for n, s in statuses.items() if s != "approved"}
            if not_ok:
                raise AirlockError("every file needs two independent approvals before release; not approved: "
                                   + ", ".join(f"{n} ({s})" for n, s in not_ok.items()), "not_approved")
        return _move(conn, svc, row, events_[outcome], actor.user_id,
                     payload={"files": statuses, "dp_approvals_needed": policy.dp_approvals_needed,
                              "policy": policy.recorded()})


@_publishes
def revoke_approval(svc: Service, actor: Actor, request_id: str, reason: str) -> RequestState:
    """Take an approval back before release (a stray click must not release data)."""
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        check_can_review(svc, actor, row.permit_id, row.requester)
        conn.execute(update(ReviewVoteRow).where(ReviewVoteRow.request_id == request_id,
                                                 ReviewVoteRow.round == row.round,
                                                 ReviewVoteRow.reviewer == actor.user_id).values(revoked=True))
        conn.execute(ReviewSubmissionRow.__table__.delete().where(
            ReviewSubmissionRow.request_id == request_id, ReviewSubmissionRow.round == row.round,
            ReviewSubmissionRow.reviewer == actor.user_id))
        return _move(conn, svc, row, RequestEvent.REVOKE_APPROVAL, actor.user_id, payload={"reason": reason})


@_publishes
def release(svc: Service, actor: Actor, request_id: str) -> Path:
    """Copy an approved request's files with a manifest to the release store; nothing else leaves."""
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        check_can("release", svc, actor, row.permit_id, row.requester)
        if RequestState(row.state) is not RequestState.APPROVED:
            raise AirlockError(f"only an approved request is released (it is {row.state})", "illegal_state")
        target = release_store(svc) / row.permit_id / request_id
        target.mkdir(parents=True, exist_ok=True)
        votes = _votes(conn, request_id, row.round)
        manifest_files = []
        for f in _files(conn, request_id, outputs_only=True):
            src = _store(svc) / request_id / f.name
            data = src.read_bytes()
            if hashlib.sha256(data).hexdigest() != f.sha256:
                raise AirlockError(f"{f.name} changed after review (checksum mismatch); not released", "tampered")
            if f.differentially_private:
                from secure_env.airlock import dp_service

                v = dp_service.verify(svc, row.permit_id, data, conn)
                if not v.verified:
                    raise AirlockError(f"{f.name}: its DP receipt no longer verifies ({v.reason}); not released",
                                       "dp_unverified")
            shutil.copyfile(src, target / f.name)
            manifest_files.append({
                "name": f.name, "sha256": f.sha256, "bytes": f.size, "check_status": f.check_status,
                "check_report": json.loads(f.check_report), "differentially_private": bool(f.differentially_private),
                "exception": _exception(f),
                "reviewers": [{"reviewer": v.reviewer, "decision": v.decision, "at": v.ts,
                               **({"override_reason": v.comment} if f.check_status == "fail" else {})}
                              for v in votes if v.file_id == f.id]})
        released_at = _now()
        manifest = {"request_id": request_id, "permit_id": row.permit_id, "requester": row.requester,
                    "submitted_round": row.round, "created_at": row.created_at, "released_at": released_at,
                    "released_by": actor.user_id, "policy": policy_of(svc).recorded(), "files": manifest_files}
        (target / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _move(conn, svc, row, RequestEvent.RELEASE, actor.user_id,
              payload={"files": [f["name"] for f in manifest_files], "release_dir": str(target)},
              released_at=released_at, release_dir=str(target))
    return target


def read_file(svc: Service, actor: Actor, request_id: str, name: str) -> bytes:
    """One file of a request as submitted, for those who may see the request (a checker's preview); audited."""
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        _check_can_see(svc, actor, row)
        f = next((f for f in _files(conn, request_id) if f.name == name), None)
        if f is None:
            raise AirlockError(f"{request_id} has no file {name!r}", "not_found")
        path = _store(svc) / request_id / f.name
        if not path.exists():
            raise AirlockError(f"{f.name} was deleted when its permit ended (see the audit log's data.deleted)",
                               "deleted")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != f.sha256:
            raise AirlockError(f"{f.name} changed after it was submitted (checksum mismatch)", "tampered")
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="output.file_read",
                     subject=f"output:{request_id}", payload={"file": name, "bytes": len(data)})
        return data


def released_file(svc: Service, actor: Actor, request_id: str, name: str) -> bytes:
    """A released file (or the release's ``manifest.json``), for the permit's holder and named users only;
    each download is audited and checked against the checksum recorded at review."""
    with svc.engine.begin() as conn:
        row = _row(conn, request_id)
        check_can("download", svc, actor, row.permit_id, row.requester)
        if RequestState(row.state) is not RequestState.RELEASED or not row.release_dir:
            raise AirlockError(f"{request_id} is {row.state}; only released outputs can be downloaded", "not_released")
        files = {f.name: f for f in _files(conn, request_id, outputs_only=True)}
        if name not in files and name != "manifest.json":
            raise AirlockError(f"{request_id} released no file {name!r}", "not_found")
        data = (Path(row.release_dir) / name).read_bytes()
        if name in files and hashlib.sha256(data).hexdigest() != files[name].sha256:
            raise AirlockError(f"{name} differs from what was reviewed (checksum mismatch)", "tampered")
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="output.downloaded",
                     subject=f"output:{request_id}", payload={"file": name, "bytes": len(data)})
        return data


def requests_of(svc: Service, actor: Actor) -> list[dict]:
    """The output requests the actor made or may download from (their permits'), newest first."""
    with svc.engine.connect() as conn:
        rows = list(conn.execute(select(OutputRequestRow).order_by(OutputRequestRow.created_at.desc())))
    out = []
    for r in rows:
        if r.requester == actor.user_id or can("download", svc, actor, r.permit_id, r.requester):
            with svc.engine.connect() as conn:
                names = [f.name for f in _files(conn, r.request_id, outputs_only=True)]
            out.append({"request_id": r.request_id, "permit_id": r.permit_id, "requester": r.requester,
                        "state": r.state, "created_at": r.created_at, "released_at": r.released_at, "files": names})
    return out


def requests_for_permit(svc: Service, actor: Actor, permit_id: str) -> list[dict]:
    """A permit's output requests that ``actor`` may see, oldest first (for a data request: the statistics the
    service put forward)."""
    from toisio.errors import ToisioError

    check_can("list", svc, actor, permit_id, None)
    with svc.engine.connect() as conn:
        rows = list(conn.execute(select(OutputRequestRow).where(OutputRequestRow.permit_id == permit_id)
                                 .order_by(OutputRequestRow.created_at)))
        out = []
        for r in rows:
            try:
                _check_can_see(svc, actor, r)
            except ToisioError:
                continue
            out.append({"request_id": r.request_id, "permit_id": r.permit_id, "requester": r.requester,
                        "state": r.state, "created_at": r.created_at, "released_at": r.released_at,
                        "files": [f.name for f in _files(conn, r.request_id, outputs_only=True)]})
    return out


def checker_queue(svc: Service, actor: Actor) -> list[dict]:
    """Requests awaiting this checker across all permits (not their own, not their permits')."""
    waiting = (RequestState.SUBMITTED, RequestState.PARTIALLY_REVIEWED, RequestState.REVIEWED)
    with svc.engine.connect() as conn:
        rows = list(conn.execute(select(OutputRequestRow).where(
            OutputRequestRow.state.in_([s.value for s in waiting])).order_by(OutputRequestRow.updated_at)))
        out = []
        for r in rows:
            if not can_review(svc, actor, r.permit_id, r.requester):
                continue
            if actor.user_id in _submitted(conn, r.request_id, r.round):
                continue
            out.append({"request_id": r.request_id, "permit_id": r.permit_id, "state": r.state,
                        "waiting_since": r.updated_at})
    return out


def held(svc: Service, permit_id: str) -> list:
    """The airlock's copies of the permit's requests that were not released (released files are the results,
    kept in the release store), as :class:`toisio.retention.Held`."""
    from toisio.retention import Held, size_of

    with svc.engine.connect() as conn:
        rows = list(conn.execute(select(OutputRequestRow).where(OutputRequestRow.permit_id == permit_id,
                                                                OutputRequestRow.state != RequestState.RELEASED.value)
                                 .order_by(OutputRequestRow.created_at)))
    out = []
    for r in rows:
        path = _store(svc) / r.request_id
        if path.exists():
            files, size = size_of(path)
            out.append(Held("airlock", "unreleased_output", str(path), files, size, r.request_id, None,
                            r.updated_at))
    return out


@_publishes
def discard_unreleased(svc: Service, actor: Actor, permit_id: str, *, reason: str) -> list:
    """At a permit's end: withdraw its open requests and delete every unreleased copy, each deletion with its
    proof in the audit chain (the service or an operator)."""
    from toisio.retention import record_deletion, remove

    check_can("discard", svc, actor, permit_id, None)
    done = []
    for h in held(svc, permit_id):
        with svc.engine.begin() as conn:
            row = _row(conn, h.ref)
            if (RequestState(row.state), RequestEvent.WITHDRAW) in TRANSITIONS:
                _move(conn, svc, row, RequestEvent.WITHDRAW, actor.user_id, payload={"reason": reason})
            remove(Path(h.path))
            record_deletion(conn, svc.audit_key, actor=actor.user_id, permit_id=permit_id, held=h, reason=reason)
        done.append(h)
    return done
