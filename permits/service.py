"""The permit service's domain operations.

Every operation loads the case and its events, checks the permission matrix
(:mod:`permits.permissions`), applies the lifecycle table (:mod:`permits.lifecycle`),
appends the case event and the audit event, and updates the cached state, all in
one transaction.  The CLI, the REST API and the Prefect flow call these functions
and hold no rules of their own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select, update

from permits import deadlines
from permits.actions import BodyError, parse_body
from permits.application import ApplicationForm, Kind
from permits.fees import compute_fee
from permits.lifecycle import (
    BEFORE_DECISION,
    PERMIT_IN_FORCE,
    WAITING_FOR,
    Event,
    State,
    next_state,
    state_after,
)
from permits.models import CaseCounter, CaseEventRow, CaseRow, EstimateRow, MemberRow
from permits.permissions import ACTIONS, PermissionDenied, Role, check_can, check_can_see_queue
from permits.rules import RuleViolation, check_form
from permits.scope import PermitScope
from toisio import audit, events
from toisio.db import read_connection
from toisio.documents import CodedError
from toisio.errors import NotFoundError
from toisio.identity import SYSTEM, Actor, actor_for, ensure_user
from toisio.service import Service

CASE_PREFIX = "TOISIO"


class NotFound(NotFoundError):
    """No such case or user."""


class InvalidRequest(CodedError):
    """A request's payload is incomplete or inconsistent (with a stable ``code``)."""


class CaseTampered(CodedError):
    """A case's stored state differs from what the audit chain recorded: it was edited behind the service."""

    default_code = "case_tampered"
    http_status = 409


@dataclass(frozen=True)
class CaseEvent:
    seq: int
    event: str
    actor: str
    role: str
    ts: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class CaseView:
    """A case as its users see it."""

    case_id: str
    kind: str
    title: str
    state: State
    applicant_id: str
    handler_id: str | None
    purpose: str | None
    members: tuple[str, ...]
    submitted_on: date | None
    complete_on: date | None
    decision_due: date | None
    decided_on: date | None
    valid_from: date | None
    valid_until: date | None
    scope_sha256: str | None
    fee: dict | None
    parent_permit_id: str | None
    history: tuple[CaseEvent, ...] = field(default=())


@dataclass(frozen=True)
class PermitAccess:
    """What other stages need to know about a permit: whether it is in force, for whom, on what scope."""

    permit_id: str
    state: State
    in_force: bool
    reason: str
    users: tuple[str, ...]
    valid_until: date | None
    scope: PermitScope | None
    holder: str = ""  # the permit holder (its applicant)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _today() -> date:
    return datetime.now(UTC).date()


# ---------------------------------------------------------------- reading

def _case_row(conn: Connection, case_id: str) -> CaseRow:
    row = conn.execute(select(CaseRow).where(CaseRow.case_id == case_id)).first()
    if row is None:
        raise NotFound(f"no case {case_id!r}")
    return row


def _members(conn: Connection, case_id: str, *, active_only: bool = True) -> list[str]:
    q = select(MemberRow.user_id).where(MemberRow.case_id == case_id)
    if active_only:
        q = q.where(MemberRow.active)
    return [r[0] for r in conn.execute(q.order_by(MemberRow.user_id))]


def _history(conn: Connection, case_id: str) -> list[CaseEventRow]:
    return list(conn.execute(select(CaseEventRow).where(CaseEventRow.case_id == case_id)
                             .order_by(CaseEventRow.seq)))


#: The columns of a case whose every change is recorded in the audit chain (with its members and events):
#: the state that decides permissions (state, people, validity, scope) and what the case says.
DIGEST_FIELDS = ("kind", "title", "purpose", "applicant_id", "handler_id", "parent_permit_id", "form", "state",
                 "submitted_on", "complete_on", "decision_due", "extension_months", "decided_on", "scope",
                 "scope_sha256", "valid_from", "valid_until", "fee")


@dataclass(frozen=True)
class _Snapshot:
    """A case as one read saw it: its row, every member row (by user, then entry) and every event in order."""

    row: Any
    members: tuple[Any, ...]
    events: tuple[Any, ...]

    @property
    def active_members(self) -> tuple[str, ...]:
        return tuple(m.user_id for m in self.members if m.active)

    def digest(self) -> str:
        """SHA-256 over the row, the members and the events (what :func:`case_digest` chains)."""
        members = [[m.user_id, m.name, str(m.undertaking_signed), bool(m.active)] for m in self.members]
        events = [[e.seq, e.event, e.actor, e.role, e.ts, str(e.on_date), e.payload, bool(e.all_estimates_in)]
                  for e in self.events]
        body = {"case_id": self.row.case_id, "members": members, "events": events,
                **{f: (v.isoformat() if isinstance(v := getattr(self.row, f), date) else v) for f in DIGEST_FIELDS}}
        return hashlib.sha256(audit.canonical_json(body).encode()).hexdigest()


def _member_rows(conn: Connection, case_id: str) -> tuple[Any, ...]:
    return tuple(conn.execute(select(MemberRow).where(MemberRow.case_id == case_id)
                              .order_by(MemberRow.user_id, MemberRow.id)))


def _snapshot(conn: Connection, case_id: str) -> _Snapshot:
    row = _case_row(conn, case_id)
    return _Snapshot(row, _member_rows(conn, case_id), tuple(_history(conn, case_id)))


def case_digest(conn: Connection, case_id: str) -> str:
    """SHA-256 over the case row, its members and its events, as the service last wrote them.

    Every write appends this digest to the audit chain in the same transaction; reading a case
    for a decision recomputes it and compares (:func:`_verified_row`).
    """
    return _snapshot(conn, case_id).digest()


def _chained_digest(conn: Connection, svc: Service, case_id: str) -> str | None:
    """The digest the newest authentic audit entry of the case recorded (None if there is none)."""
    try:
        return audit.recorded_digest(conn, svc.audit_key, f"case:{case_id}", "case_digest")
    except audit.AuditError as exc:
        raise CaseTampered(str(exc)) from None


def _lock_case(conn: Connection, case_id: str, *, for_update: bool) -> None:
    """PostgreSQL: lock the case row for the rest of the transaction (a writer exclusively, a reader shared), so
    that concurrent writers of one case take turns (each event's number is the next) and a reader's several
    statements see one state of the case, never half of a concurrent change.  SQLite already serialises
    writers, and a reader's snapshot is fixed at its first read."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(CaseRow.case_id).where(CaseRow.case_id == case_id).with_for_update(read=not for_update))


def _verified_row(conn: Connection, svc: Service, case_id: str, *, for_update: bool = False) -> CaseRow:
    """The case row, refused (:class:`CaseTampered`) unless it, its members and its events are exactly what the
    audit chain recorded, and the chain still ends at its recorded head.  The row is locked first (see
    :func:`_lock_case`); ``for_update`` when the transaction will change the case."""
    return _verified_snapshot(conn, svc, case_id, for_update=for_update).row


def _verified_snapshot(conn: Connection, svc: Service, case_id: str, *, for_update: bool = False) -> _Snapshot:
    _lock_case(conn, case_id, for_update=for_update)
    snap = _snapshot(conn, case_id)
    try:
        audit.check_head(conn, svc.audit_key)
    except audit.AuditError as exc:
        raise CaseTampered(str(exc), code="audit_truncated") from None
    chained = _chained_digest(conn, svc, case_id)
    if chained is None or chained != snap.digest():
        raise CaseTampered(f"case {case_id} differs from what the audit log recorded (its state, people, validity "
                           f"or scope were edited outside the service); refusing to use it")
    return snap


def case_vouching(case_id: str) -> list[tuple[str, str]]:
    """The audit entries that vouch for a case's state (:func:`toisio.audit.stamp`); a route that reads the case
    asks for them ahead (:func:`toisio.audit.read_ahead`), with its sign-in's."""
    return [(f"case:{case_id}", "case_digest")]


def _verified_for_reading(svc: Service, case_id: str) -> _Snapshot:
    """The case as the chain vouches for it, for a read: verified in full the first time, and again whenever the
    service has changed the case since (in any process); in between, the verified copy this process kept
    (:class:`toisio.audit.VerifiedCache`), after one indexed look at the chain."""
    key, vouching = ("case", case_id), case_vouching(case_id)
    if svc.verified.peek(key) is not None:
        snap = svc.verified.get(key, audit.current_stamp(svc.engine, vouching))
        if snap is not None:
            return snap
    with read_connection(svc.engine) as conn:
        stamp = audit.stamp(conn, vouching)
        snap = _verified_snapshot(conn, svc, case_id)
    svc.verified.put(key, stamp, snap)
    return snap


def verify_cases(svc: Service) -> list[tuple[str, str]]:
    """Every case whose stored state the audit chain does not vouch for, with the reason (for ``audit verify``)."""
    bad = []
    with read_connection(svc.engine) as conn:
        for (case_id,) in conn.execute(select(CaseRow.case_id).order_by(CaseRow.case_id)):
            try:
                chained = _chained_digest(conn, svc, case_id)
            except CaseTampered as exc:
                bad.append((case_id, str(exc)))
                continue
            if chained is None:
                bad.append((case_id, "no audit entry records this case"))
            elif chained != case_digest(conn, case_id):
                bad.append((case_id, "edited outside the service (differs from the audit log)"))
    return bad


def derived_state(conn: Connection, case_id: str) -> State:
    """The case's state folded from its events (the source of truth)."""
    return state_after([(Event(e.event), e.all_estimates_in) for e in _history(conn, case_id)])


def _for_role(events: tuple[CaseEvent, ...], role: Role) -> tuple[CaseEvent, ...]:
    """The history as ``role`` sees it: the applicant and the named users do not see the authority's internal
    remarks."""
    if role not in (Role.APPLICANT, Role.MEMBER):
        return events
    return tuple(e for e in events if not (e.event == Event.REMARKED.value and e.payload.get("public") is False))


def _view(conn: Connection, row: CaseRow, with_history: bool) -> CaseView:
    return _view_of(_Snapshot(row, _member_rows(conn, row.case_id),
                              tuple(_history(conn, row.case_id)) if with_history else ()), with_history)


def _view_of(snap: _Snapshot, with_history: bool) -> CaseView:
    row = snap.row
    history = tuple(CaseEvent(e.seq, e.event, e.actor, e.role, e.ts, json.loads(e.payload))
                    for e in snap.events) if with_history else ()
    return CaseView(
        row.case_id, row.kind, row.title, State(row.state), row.applicant_id, row.handler_id, row.purpose,
        snap.active_members, row.submitted_on, row.complete_on, row.decision_due, row.decided_on,
        row.valid_from, row.valid_until, row.scope_sha256, json.loads(row.fee) if row.fee else None,
        row.parent_permit_id, history)


def show(svc: Service, actor: Actor, case_id: str) -> CaseView:
    """A case with its history; the read itself is audited (on the chain before the case is returned)."""
    snap = _verified_for_reading(svc, case_id)
    role = check_can("view", **_facts_of(actor, snap))
    view = _view_of(snap, with_history=True)
    svc.reads.record(actor=actor.user_id, action="case.viewed", subject=f"case:{case_id}",
                     payload={"role": role.value})
    return replace(view, history=_for_role(view.history, role))


def list_cases(svc: Service, actor: Actor, *, state: str | None = None) -> list[CaseView]:
    """Cases the actor may see: all for handlers, deciders and auditors, otherwise their own."""
    with read_connection(svc.engine) as conn:
        q = select(CaseRow).order_by(CaseRow.case_id)
        if state:
            q = q.where(CaseRow.state == state)
        rows = list(conn.execute(q))
        staff = actor.roles & {Role.HANDLER, Role.DECIDER, Role.AUDITOR}
        out = [_view(conn, r, False) for r in rows
               if staff or r.applicant_id == actor.user_id or actor.user_id in _members(conn, r.case_id)]
    svc.reads.record(actor=actor.user_id, action="case.listed", subject="cases",
                     payload={"count": len(out), "state": state})
    return out


# ---------------------------------------------------------------- writing

#: the version of the terms of use an applicant accepts with the estimate and the extraction description
TERMS_OF_USE_VERSION = "toisio-terms-2026-1"

_ACTION_OF_EVENT = {a.event.value: name for name, a in ACTIONS.items() if a.event is not None}


def _facts(conn: Connection, actor: Actor, row: CaseRow) -> dict[str, Any]:
    """What the permission matrix needs to know about the actor and the case (read once per decision)."""
    return _facts_of(actor, _Snapshot(row, _member_rows(conn, row.case_id), tuple(_history(conn, row.case_id))))


def _facts_of(actor: Actor, snap: _Snapshot) -> dict[str, Any]:
    """:func:`_facts` from a snapshot already read."""
    took = {_ACTION_OF_EVENT[e.event]: e.actor for e in snap.events if e.event in _ACTION_OF_EVENT}
    return {"user": actor.user_id, "roles": set(actor.roles), "state": State(snap.row.state),
            "applicant": snap.row.applicant_id, "members": {m.user_id for m in snap.members}, "took": took}


def _check(conn: Connection, actor: Actor, row: CaseRow, action: str) -> Role:
    return check_can(action, **_facts(conn, actor, row))


def _allowed_of(facts: dict[str, Any]) -> list[str]:
    """The actions (that record an event, and that a person takes) the actor of ``facts`` (:func:`_facts_of`)
    may take on the case now."""
    from permits.permissions import can

    return [name for name, a in ACTIONS.items()
            if a.event is not None and not a.roles <= {Role.SYSTEM} and can(name, **facts)]


def check_can_act(svc: Service, actor: Actor, case_id: str, action: str) -> Role:
    """Raise :class:`PermissionDenied` unless ``actor`` may take ``action`` on the case now (without taking it);
    return the role it would be taken in.  For a stage that does work before recording it on the permit."""
    with svc.engine.connect() as conn:
        return _check(conn, actor, _verified_row(conn, svc, case_id), action)


def can_act(svc: Service, actor: Actor, case_id: str, action: str) -> bool:
    """Bool form of :func:`check_can_act`."""
    try:
        check_can_act(svc, actor, case_id, action)
    except PermissionDenied:
        return False
    return True


def _append_event(conn: Connection, svc: Service, row: CaseRow, event: Event, actor: Actor, role: Role,
                  payload: dict[str, Any], today: date, *, all_estimates_in: bool = False) -> State:
    new_state = next_state(State(row.state), event, all_estimates_in=all_estimates_in)
    seq = (conn.execute(select(func.max(CaseEventRow.seq)).where(CaseEventRow.case_id == row.case_id)
                        ).scalar() or 0) + 1
    conn.execute(CaseEventRow.__table__.insert().values(
        case_id=row.case_id, seq=seq, event=event.value, actor=actor.user_id, role=role.value, ts=_now(),
        on_date=today, payload=json.dumps(payload, sort_keys=True, default=str), all_estimates_in=all_estimates_in))
    conn.execute(update(CaseRow).where(CaseRow.case_id == row.case_id).values(state=new_state.value,
                                                                              updated_at=_now()))
    audit.append(conn, svc.audit_key, actor=actor.user_id, action=f"case.{event.value}",
                 subject=f"case:{row.case_id}",
                 payload={**payload, "role": role.value, "from": row.state, "to": new_state.value,
                          "case_digest": case_digest(conn, row.case_id)})
    return new_state


def _next_case_id(conn: Connection, today: date) -> str:
    row = conn.execute(select(CaseCounter).where(CaseCounter.year == today.year)).first()
    if row is None:
        conn.execute(CaseCounter.__table__.insert().values(year=today.year, last=1))
        n = 1
    else:
        n = row.last + 1
        conn.execute(update(CaseCounter).where(CaseCounter.year == today.year).values(last=n))
    return f"{CASE_PREFIX}-{today.year}-{n}"


def create_draft(svc: Service, actor: Actor, form: ApplicationForm, *, today: date | None = None) -> str:
    """Store a validated application form as a draft case; returns its id."""
    today = today or _today()
    if form.applicant.user_id != actor.user_id:
        raise PermissionDenied(f"{actor.user_id} can only file applications in their own name "
                               f"(the form names {form.applicant.user_id})", action="create")
    check_form(form)
    from permits.attachments import verify_form

    verify_form(svc, form)
    with svc.engine.begin() as conn:
        if form.kind is Kind.AMENDMENT:
            parent = _case_row(conn, form.permit_id)
            if State(parent.state) not in PERMIT_IN_FORCE:
                raise RuleViolation("amendment_needs_permit",
                                    f"permit {form.permit_id} is '{parent.state}'; only a permit in force can be "
                                    f"amended")
            if actor.user_id != parent.applicant_id:
                raise PermissionDenied(f"only the permit holder ({parent.applicant_id}) may amend "
                                       f"{form.permit_id}", action="create")
        ensure_user(conn, svc, actor, form.applicant.user_id, form.applicant.name, form.applicant.email)
        case_id = _next_case_id(conn, today)
        now = _now()
        conn.execute(CaseRow.__table__.insert().values(
            case_id=case_id, kind=form.kind.value, title=form.title,
            purpose=form.purpose.value if form.purpose else None, applicant_id=actor.user_id, handler_id=None,
            parent_permit_id=form.permit_id, form=form.model_dump_json(), state=State.DRAFT.value,
            created_at=now, updated_at=now, extension_months=0))
        for p in form.processors:
            ensure_user(conn, svc, actor, p.user_id, p.name, "")
            conn.execute(MemberRow.__table__.insert().values(
                case_id=case_id, user_id=p.user_id, name=p.name,
                undertaking_signed=p.confidentiality_undertaking_signed, active=True))
        conn.execute(CaseEventRow.__table__.insert().values(
            case_id=case_id, seq=1, event=Event.CREATED.value, actor=actor.user_id, role=Role.APPLICANT.value,
            ts=now, on_date=today, payload="{}", all_estimates_in=False))
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="case.created", subject=f"case:{case_id}",
                     payload={"kind": form.kind.value, "title": form.title,
                              "case_digest": case_digest(conn, case_id)})
    return case_id


def submit_form(svc: Service, actor: Actor, form: ApplicationForm, *, today: date | None = None) -> CaseView:
    """Create a case from a form and submit it at once (a form that cannot be submitted stores nothing)."""
    _check_extraction(form)
    case_id = create_draft(svc, actor, form, today=today)
    return act(svc, actor, case_id, "submit", today=today)


def form_of(svc: Service, case_id: str) -> ApplicationForm:
    with svc.engine.connect() as conn:
        return ApplicationForm.model_validate_json(_case_row(conn, case_id).form)


def _scope_from_form(case_id: str, form: ApplicationForm) -> PermitScope:
    ext = form.extraction
    return PermitScope.model_validate({
        "permit_id": case_id,
        "delivery": "pseudonymised" if form.kind is Kind.DATA_PERMIT else "aggregate",
        "registries": {k: v.model_dump(mode="json") for k, v in ext.registries.items()},
        "cohort": ext.cohort.model_dump(mode="json") if ext.cohort else None,
        "generalise": ext.generalise.model_dump(mode="json"),
    })


def act(svc: Service, actor: Actor, case_id: str, action: str, *, today: date | None = None,
        **payload: Any) -> CaseView:
    """Take ``action`` on a case (see :data:`permits.permissions.ACTIONS`)."""
    if action not in ACTIONS or ACTIONS[action].event is None:
        raise InvalidRequest(f"unknown action {action!r}", code="unknown_action")
    try:
        payload = parse_body(action, payload).model_dump(exclude_none=True)
    except BodyError as exc:
        raise InvalidRequest(str(exc), code="invalid_body") from None
    today = today or _today()
    with svc.engine.begin() as conn:
        row = _verified_row(conn, svc, case_id, for_update=True)
        role = _check(conn, actor, row, action)
        handler = _HANDLERS.get(action)
        extra: dict[str, Any] = {}
        all_in = False
        if handler is not None:
            result = handler(conn, svc, actor, row, today, payload)
            if result:
                extra, all_in = result
        else:
            extra = _clean(payload)
        _append_event(conn, svc, row, ACTIONS[action].event, actor, role, extra, today, all_estimates_in=all_in)
        view = _view(conn, _case_row(conn, case_id), with_history=False)
    # every step, after its commit: the secure environment reacts to a permit's end, the flows that follow the
    # case resume (flows.follow)
    events.publish(f"permit.{ACTIONS[action].event.value}", {"permit_id": case_id, "actor": actor.user_id,
                                                              "state": view.state.value, **_clean(extra)})
    return view


def _clean(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in payload.items() if v is not None}


def _need(payload: dict[str, Any], name: str, what: str) -> Any:
    value = payload.get(name)
    if value in (None, "", []):
        raise InvalidRequest(f"{what} is required ({name})", code=f"missing_{name}")
    return value


def _check_extraction(form: ApplicationForm) -> None:
    """Refuse an application whose extraction description names unknown registries or variables (every
    problem at once), so that it cannot fail later at send-estimate with the case stuck."""
    if form.extraction is None:
        return
    from permits.scope import extraction_problems

    ext = form.extraction
    problems = extraction_problems(ext.registries, ext.cohort, ext.generalise)
    if problems:
        raise RuleViolation("extraction_invalid", f"the extraction description has {len(problems)} problem(s): "
                            + "; ".join(f"extraction.{p}" for p in problems))


def _on_submit(conn, svc, actor, row, today, payload):
    _check_extraction(ApplicationForm.model_validate_json(row.form))
    conn.execute(update(CaseRow).where(CaseRow.case_id == row.case_id).values(submitted_on=today))
    return {}, False


def _on_return(conn, svc, actor, row, today, payload):
    return {"reason": _need(payload, "reason", "a reason for returning the application")}, False


def _on_resubmit(conn, svc, actor, row, today, payload):
    form = payload.get("form")
    if form is not None:
        if not isinstance(form, ApplicationForm):
            form = ApplicationForm.model_validate(form)
        check_form(form)
        from permits.attachments import verify_form

        verify_form(svc, form)
        _check_extraction(form)
        old = ApplicationForm.model_validate_json(row.form)
        if form.kind != old.kind:
            raise RuleViolation("kind_unchanged", "a resubmission keeps the application's kind")
        conn.execute(update(CaseRow).where(CaseRow.case_id == row.case_id).values(
            form=form.model_dump_json(), title=form.title))
        conn.execute(MemberRow.__table__.delete().where(MemberRow.case_id == row.case_id))
        for p in form.processors:
            ensure_user(conn, svc, actor, p.user_id, p.name, "")
            conn.execute(MemberRow.__table__.insert().values(
                case_id=row.case_id, user_id=p.user_id, name=p.name,
                undertaking_signed=p.confidentiality_undertaking_signed, active=True))
    return {"form_updated": form is not None}, False


def _on_complete(conn, svc, actor, row, today, payload):
    due = deadlines.decision_due(today)
    values = {"complete_on": today, "decision_due": due}
    if row.handler_id is None:
        values["handler_id"] = actor.user_id
    conn.execute(update(CaseRow).where(CaseRow.case_id == row.case_id).values(**values))
    return {"decision_due": due.isoformat()}, False


def _on_request_estimates(conn, svc, actor, row, today, payload):
    form = ApplicationForm.model_validate_json(row.form)
    if form.kind is Kind.AMENDMENT:
        raise InvalidRequest("an amendment needs no extraction estimate", code="no_estimates_for_amendment")
    registries = sorted(form.extraction.registries)
    due = deadlines.estimate_due(today)
    # Estimates asked for an earlier version of the application (before a return) are superseded.
    superseded = conn.execute(EstimateRow.__table__.delete().where(EstimateRow.case_id == row.case_id)).rowcount
    for r in registries:
        conn.execute(EstimateRow.__table__.insert().values(case_id=row.case_id, registry=r, requested_on=today,
                                                           due_on=due))
    return {"registries": registries, "due": due.isoformat(), "superseded_estimates": superseded}, False


def _on_record_estimate(conn, svc, actor, row, today, payload):
    registry = _need(payload, "registry", "the registry the estimate is for")
    if Role.CONTROLLER in actor.roles and Role.HANDLER not in actor.roles and registry not in actor.registries:
        controls = ", ".join(sorted(actor.registries)) or "no registry"
        raise PermissionDenied(f"{actor.user_id} is the controller of {controls}, not of {registry}",
                               action="record_estimate")
    cost = Decimal(str(_need(payload, "cost_eur", "the estimated cost in euros")))
    days = int(_need(payload, "working_days", "the estimated extraction time in working days"))
    est = conn.execute(select(EstimateRow).where(EstimateRow.case_id == row.case_id,
                                                 EstimateRow.registry_name == registry)).first()
    if est is None:
        raise InvalidRequest(f"no estimate was requested for registry {registry!r}", code="no_such_estimate")
    conn.execute(update(EstimateRow).where(EstimateRow.id == est.id).values(
        cost_eur=str(cost), working_days=days, recorded_by=actor.user_id, recorded_on=today))
    outstanding = conn.execute(select(func.count()).select_from(EstimateRow).where(
        EstimateRow.case_id == row.case_id, EstimateRow.recorded_on.is_(None))).scalar()
    late = today > est.due_on
    return {"registry": registry, "cost_eur": str(cost), "working_days": days, "late": late}, outstanding == 0


def _on_send_estimate(conn, svc, actor, row, today, payload):
    form = ApplicationForm.model_validate_json(row.form)
    scope = _scope_from_form(row.case_id, form)
    total = sum(Decimal(e.cost_eur) for e in conn.execute(select(EstimateRow).where(
        EstimateRow.case_id == row.case_id)))
    conn.execute(update(CaseRow).where(CaseRow.case_id == row.case_id).values(scope=scope.canonical_json()))
    return {"controller_costs_eur": str(total), "extraction_description_sha256": scope.sha256}, False


def _on_accept(conn, svc, actor, row, today, payload):
    scope = PermitScope.model_validate_json(row.scope)
    conn.execute(update(CaseRow).where(CaseRow.case_id == row.case_id).values(scope_sha256=scope.sha256))
    # accepting is also accepting the terms of use (the portal's button says so); the version is recorded
    return {"scope_sha256": scope.sha256, "terms_of_use": TERMS_OF_USE_VERSION}, False


def _on_present(conn, svc, actor, row, today, payload):
    if row.kind != Kind.AMENDMENT.value and row.scope_sha256 is None:
        raise InvalidRequest("a case is presented only after the applicant accepted the extraction description",
                             code="scope_not_accepted")
    return {"summary": payload.get("summary", "")}, False


def _on_approve(conn, svc, actor, row, today, payload):
    form = ApplicationForm.model_validate_json(row.form)
    valid_from = payload.get("valid_from") or today
    valid_until = payload.get("valid_until") or (form.requested_validity.end if form.requested_validity else None)
    if valid_until is None:
        raise InvalidRequest("the permit's end date is required (valid_until)", code="missing_valid_until")
    if isinstance(valid_until, str):
        valid_until = date.fromisoformat(valid_until)
    if isinstance(valid_from, str):
        valid_from = date.fromisoformat(valid_from)
    if valid_until <= valid_from or valid_until <= today:
        raise InvalidRequest("valid_until must be after valid_from and in the future", code="bad_validity")
    costs = sum((Decimal(e.cost_eur) for e in conn.execute(select(EstimateRow).where(
        EstimateRow.case_id == row.case_id)) if e.cost_eur), Decimal(0))
    fee = compute_fee(form.kind.value, form.fee_category.value, today,
                      work_hours=float(payload.get("work_hours", 0)), controller_costs=costs)
    fee_json = {"schedule": fee.schedule_version, "application_fee": str(fee.application_fee),
                "hourly_work": str(fee.hourly_work), "controller_costs": str(fee.controller_costs),
                "total": str(fee.total), "currency": fee.currency}
    conn.execute(update(CaseRow).where(CaseRow.case_id == row.case_id).values(
        valid_from=valid_from, valid_until=valid_until, decided_on=today, fee=json.dumps(fee_json)))
    if form.kind is Kind.AMENDMENT:
        _apply_amendment(conn, svc, actor, form, today)
    return {"valid_from": valid_from.isoformat(), "valid_until": valid_until.isoformat(), "fee": fee_json}, False


def _apply_amendment(conn, svc, actor, form: ApplicationForm, today: date) -> None:
    parent = _case_row(conn, form.permit_id)
    change = form.change
    values: dict[str, Any] = {}
    if change.new_valid_until is not None:
        values["valid_until"] = change.new_valid_until
        conn.execute(update(CaseRow).where(CaseRow.case_id == parent.case_id).values(**values))
    for p in change.add_users:
        ensure_user(conn, svc, actor, p.user_id, p.name, "")
        existing = conn.execute(select(MemberRow).where(MemberRow.case_id == parent.case_id,
                                                        MemberRow.user_id == p.user_id)).first()
        if existing is None:
            conn.execute(MemberRow.__table__.insert().values(
                case_id=parent.case_id, user_id=p.user_id, name=p.name,
                undertaking_signed=p.confidentiality_undertaking_signed, active=True))
        else:
            conn.execute(update(MemberRow).where(MemberRow.id == existing.id).values(active=True))
    for uid in change.remove_users:
        conn.execute(update(MemberRow).where(MemberRow.case_id == parent.case_id, MemberRow.user_id == uid)
                     .values(active=False))
    payload = {"amendment": form.title, "new_valid_until": change.new_valid_until,
               "added_users": [p.user_id for p in change.add_users], "removed_users": list(change.remove_users)}
    _append_event(conn, svc, parent, Event.AMENDED, actor, Role.DECIDER, _clean(payload), today)
    events.publish("permit.amended", {"permit_id": parent.case_id, **_clean(payload)})


def _on_reject(conn, svc, actor, row, today, payload):
    conn.execute(update(CaseRow).where(CaseRow.case_id == row.case_id).values(decided_on=today))
    return {"reasons": _need(payload, "reasons", "the reasons for rejection")}, False


def _on_extend(conn, svc, actor, row, today, payload):
    if row.extension_months:
        raise InvalidRequest("the decision deadline was already extended once", code="already_extended")
    months = int(_need(payload, "months", "the extension in months"))
    reason = _need(payload, "reason", "the reason for the extension")
    due = deadlines.decision_due(row.complete_on, months)
    conn.execute(update(CaseRow).where(CaseRow.case_id == row.case_id).values(extension_months=months,
                                                                              decision_due=due))
    return {"months": months, "reason": reason, "decision_due": due.isoformat()}, False


def _on_assign(conn, svc, actor, row, today, payload):
    handler_id = _need(payload, "handler_id", "the handler to assign")
    handler = actor_for(conn, handler_id)
    if Role.HANDLER not in handler.roles:
        raise InvalidRequest(f"{handler_id} is not a handler", code="not_a_handler")
    if handler_id == row.applicant_id or handler_id in _members(conn, row.case_id, active_only=False):
        raise PermissionDenied(f"{handler_id} applied for or is a member of this case and cannot handle it",
                               action="assign_handler", code="conflict_of_interest")
    conn.execute(update(CaseRow).where(CaseRow.case_id == row.case_id).values(handler_id=handler_id))
    return {"handler_id": handler_id}, False


def _on_close(conn, svc, actor, row, today, payload):
    if State(row.state) in BEFORE_DECISION and not payload.get("reason"):
        raise InvalidRequest("closing a case before its decision needs a reason the applicant can read",
                             code="missing_reason")
    return {"reason": payload.get("reason")} if payload.get("reason") else {}, False


def _on_revoke(conn, svc, actor, row, today, payload):
    return {"reason": _need(payload, "reason", "the reason for revoking the permit")}, False


def _on_remark(conn, svc, actor, row, today, payload):
    """A message on the case: public (the applicant sees it) or internal to the authority."""
    if not payload.get("public", True) and (actor.user_id == row.applicant_id
                                            or actor.user_id in _members(conn, row.case_id)):
        raise InvalidRequest("an applicant's or named user's message is always visible to the authority and the "
                             "applicant; only the authority writes internal remarks", code="internal_remark_refused")
    return {"text": payload["text"], "public": payload.get("public", True)}, False


def _on_delivered(conn, svc, actor, row, today, payload):
    return {"manifest_sha256": payload.get("manifest_sha256")}, False


_HANDLERS = {
    "submit": _on_submit, "return": _on_return, "resubmit": _on_resubmit, "confirm_complete": _on_complete,
    "request_estimates": _on_request_estimates, "record_estimate": _on_record_estimate,
    "send_estimate": _on_send_estimate, "accept": _on_accept, "present": _on_present, "approve": _on_approve,
    "reject": _on_reject, "extend_deadline": _on_extend, "assign_handler": _on_assign, "revoke": _on_revoke,
    "close": _on_close, "mark_delivered": _on_delivered, "remark": _on_remark,
}


# ---------------------------------------------------------------- other stages' interface

def permit_access(svc: Service, permit_id: str, *, today: date | None = None) -> PermitAccess:
    """Whether a permit is in force today, for whom and on what scope.

    Access ends at the end date even if the expiry job has not run yet.
    """
    today = today or _today()
    with read_connection(svc.engine) as conn:
        row = _verified_row(conn, svc, permit_id)
        state = State(row.state)
        scope = PermitScope.model_validate_json(row.scope) if row.scope and row.scope_sha256 else None
        users = tuple(_members(conn, permit_id))
    if row.kind == Kind.AMENDMENT.value:
        return PermitAccess(permit_id, state, False, "an amendment is not a permit", (), None, None)
    if state not in PERMIT_IN_FORCE:
        return PermitAccess(permit_id, state, False, f"permit is {state.value}", users, row.valid_until, scope,
                            row.applicant_id)
    if row.valid_until is not None and today > row.valid_until:
        return PermitAccess(permit_id, state, False, f"permit ended on {row.valid_until}", users,
                            row.valid_until, scope, row.applicant_id)
    if row.valid_from is not None and today < row.valid_from:
        return PermitAccess(permit_id, state, False, f"permit starts on {row.valid_from}", users,
                            row.valid_until, scope, row.applicant_id)
    return PermitAccess(permit_id, state, True, "in force", users, row.valid_until, scope, row.applicant_id)


def frozen_scope(svc: Service, permit_id: str) -> PermitScope:
    """The extraction description the applicant accepted (raises if it is not frozen yet)."""
    with svc.engine.connect() as conn:
        row = _verified_row(conn, svc, permit_id)
    if not row.scope or not row.scope_sha256:
        raise InvalidRequest(f"{permit_id} has no accepted extraction description yet (state {row.state})",
                             code="scope_not_accepted")
    scope = PermitScope.model_validate_json(row.scope)
    if scope.sha256 != row.scope_sha256:
        raise InvalidRequest(f"{permit_id}: the stored scope does not match the hash frozen at acceptance",
                             code="scope_tampered")
    return scope


# ---------------------------------------------------------------- scheduled jobs

def expire_due(svc: Service, *, today: date | None = None, by: Actor = SYSTEM) -> list[str]:
    """Expire every active permit whose end date has passed; other stages are told by an event."""
    today = today or _today()
    with svc.engine.connect() as conn:
        due = [r[0] for r in conn.execute(select(CaseRow.case_id).where(
            CaseRow.state == State.ACTIVE.value, CaseRow.valid_until < today))]
    for case_id in due:
        act(svc, by, case_id, "expire", today=today)
    return due


@dataclass(frozen=True)
class QueueItem:
    case_id: str
    title: str
    state: str
    handler_id: str | None
    deadline: date | None
    deadline_kind: str
    status: str
    waiting_for: str = ""


def _deadline_of(conn: Connection, row: CaseRow) -> tuple[date | None, str]:
    state = State(row.state)
    if state is State.ESTIMATES_REQUESTED:
        due = conn.execute(select(func.min(EstimateRow.due_on)).where(
            EstimateRow.case_id == row.case_id, EstimateRow.recorded_on.is_(None))).scalar()
        return due, "controller estimate"
    if row.decision_due and state in (State.COMPLETE, State.ESTIMATES_RECEIVED, State.ESTIMATE_SENT,
                                      State.ACCEPTED, State.PRESENTED, State.ESTIMATES_REQUESTED):
        return row.decision_due, "decision"
    if state in (State.SUBMITTED,) and row.submitted_on:
        return row.submitted_on + timedelta(days=7), "completeness check"
    return None, ""


def queue(svc: Service, actor: Actor, *, all_handlers: bool = False, today: date | None = None) -> list[QueueItem]:
    """Open cases of the actor (or of every handler: handlers and deciders only), earliest deadline first."""
    check_can_see_queue(actor.user_id, actor.roles, all_handlers=all_handlers)
    return _queue(svc, None if all_handlers else actor.user_id, today=today)


def open_states() -> list[str]:
    """The states of a case that is still being handled (before a decision or an extraction is done)."""
    return [s.value for s in State if s not in {State.DRAFT, State.ACTIVE} and s not in
            {State.REJECTED, State.EXPIRED, State.CLOSED, State.REVOKED, State.WITHDRAWN, State.DELETED}]


def _queue(svc: Service, handler_id: str | None, *, today: date | None = None) -> list[QueueItem]:
    today = today or _today()
    with svc.engine.connect() as conn:
        q = select(CaseRow).where(CaseRow.state.in_(open_states()))
        if handler_id:
            q = q.where(CaseRow.handler_id == handler_id)
        items = []
        for row in conn.execute(q):
            due, kind = _deadline_of(conn, row)
            items.append(QueueItem(row.case_id, row.title, row.state, row.handler_id, due, kind,
                                   deadlines.status(due, today), WAITING_FOR[State(row.state)]))
    return sorted(items, key=lambda i: (i.deadline or date.max, i.case_id))


def digest(svc: Service, *, today: date | None = None) -> list[QueueItem]:
    """Cases nearing (within 14 days) or past a deadline."""
    return [i for i in _queue(svc, None, today=today) if i.status in ("near", "overdue")]


def tidy_drafts(svc: Service, *, today: date | None = None, remind_after_days: int = 30,
                delete_after_days: int = 60, by: Actor = SYSTEM) -> dict[str, list[str]]:
    """Remind owners of drafts untouched for ``remind_after_days``; delete those untouched for
    ``delete_after_days`` (each deletion audited)."""
    today = today or _today()
    reminded, deleted = [], []
    with svc.engine.connect() as conn:
        drafts = list(conn.execute(select(CaseRow).where(CaseRow.state == State.DRAFT.value)))
        last_touch = {d.case_id: conn.execute(select(func.max(CaseEventRow.on_date)).where(
            CaseEventRow.case_id == d.case_id)).scalar() for d in drafts}
        was_reminded = {d.case_id for d in drafts if conn.execute(select(CaseEventRow.id).where(
            CaseEventRow.case_id == d.case_id, CaseEventRow.event == Event.REMINDED.value)).first()}
    for d in drafts:
        idle = (today - last_touch[d.case_id]).days
        if idle >= delete_after_days or (d.case_id in was_reminded and idle >= remind_after_days):
            act(svc, by, d.case_id, "delete_draft", today=today, reason=f"untouched for {idle} days")
            deleted.append(d.case_id)
        elif idle >= remind_after_days and d.case_id not in was_reminded:
            act(svc, by, d.case_id, "remind", today=today, reason=f"draft untouched for {idle} days")
            reminded.append(d.case_id)
    return {"reminded": reminded, "deleted": deleted}
