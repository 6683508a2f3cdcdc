"""What a case holds beyond its state: the application form, its attachments and its messages.

Each read checks the ``view`` permission of the case (:mod:`permits.permissions`) and is audited; the
applicant and the named users see only public messages.  Drafts are updated here; attachments are
uploaded here (size-limited, stored content-addressed, SHA-256 recorded in the audit log).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

from sqlalchemy import update

from permits import attachments as store
from permits.application import ApplicationForm, Attachment
from permits.lifecycle import Event, State
from permits.models import CaseRow, MemberRow
from permits.permissions import PermissionDenied, Role
from permits.rules import check_form
from permits.service import (
    InvalidRequest,
    NotFound,
    _check,
    _for_role,
    _history,
    _members,
    _now,
    _verified_row,
    case_digest,
)
from toisio import audit
from toisio.errors import TooLarge
from toisio.identity import Actor, ensure_user
from toisio.service import Service

#: the largest attachment accepted (a research plan or an ethics statement)
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
#: what an attachment may be: documents, not data
ALLOWED_SUFFIXES = (".pdf", ".md", ".txt", ".docx", ".odt", ".rtf")


@dataclass(frozen=True)
class Message:
    """A message on a case (REMS's "remark"): public to the applicant, or internal to the authority."""

    seq: int
    author: str
    role: str
    at: str
    text: str
    public: bool


def _viewed(svc: Service, actor: Actor, case_id: str, what: str):
    """The verified case row and the role the actor sees it in; the read is audited."""
    with svc.engine.begin() as conn:
        row = _verified_row(conn, svc, case_id)
        role = _check(conn, actor, row, "view")
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="case.viewed", subject=f"case:{case_id}",
                     payload={"role": role.value, "what": what})
        return row, role


def application(svc: Service, actor: Actor, case_id: str) -> ApplicationForm:
    """The application's full content, for those who may see the case."""
    row, _role = _viewed(svc, actor, case_id, "application")
    return ApplicationForm.model_validate_json(row.form)


def messages(svc: Service, actor: Actor, case_id: str) -> list[Message]:
    """The case's messages as the actor may see them (internal remarks only for the authority)."""
    row, role = _viewed(svc, actor, case_id, "messages")
    from permits.service import CaseEvent

    with svc.engine.connect() as conn:
        events = tuple(CaseEvent(e.seq, e.event, e.actor, e.role, e.ts, json.loads(e.payload))
                       for e in _history(conn, case_id) if e.event == Event.REMARKED.value)
    return list(_messages(_for_role(events, role)))


def _messages(history) -> tuple[Message, ...]:
    """The messages among a case's events (already filtered for who reads them)."""
    return tuple(Message(e.seq, e.actor, e.role, e.ts, e.payload.get("text", ""),
                         e.payload.get("public", True) is not False)
                 for e in history if e.event == Event.REMARKED.value)


def update_draft(svc: Service, actor: Actor, case_id: str, form: ApplicationForm, *,
                 today: date | None = None) -> None:
    """Replace a draft's form (only its applicant, only while it is a draft)."""
    del today
    with svc.engine.begin() as conn:
        row = _verified_row(conn, svc, case_id, for_update=True)
        if row.applicant_id != actor.user_id:
            raise PermissionDenied(f"only the applicant ({row.applicant_id}) may edit draft {case_id}",
                                   action="update_draft")
        if State(row.state) is not State.DRAFT:
            raise InvalidRequest(f"{case_id} is '{row.state}'; only a draft can be edited (a returned application "
                                 f"is changed by resubmitting it)", code="illegal_state")
        if form.applicant.user_id != actor.user_id or form.kind.value != row.kind:
            raise InvalidRequest("a draft keeps its applicant and its kind", code="invalid_body")
        check_form(form)
        store.verify_form(svc, form)
        conn.execute(update(CaseRow).where(CaseRow.case_id == case_id).values(
            form=form.model_dump_json(), title=form.title, purpose=form.purpose.value if form.purpose else None,
            updated_at=_now()))
        conn.execute(MemberRow.__table__.delete().where(MemberRow.case_id == case_id))
        for p in form.processors:
            ensure_user(conn, svc, actor, p.user_id, p.name, "")
            conn.execute(MemberRow.__table__.insert().values(
                case_id=case_id, user_id=p.user_id, name=p.name,
                undertaking_signed=p.confidentiality_undertaking_signed, active=True))
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="case.draft_updated",
                     subject=f"case:{case_id}", payload={"title": form.title,
                                                         "case_digest": case_digest(conn, case_id)})


def upload_attachment(svc: Service, actor: Actor, filename: str, data: bytes) -> Attachment:
    """Store an uploaded document (research plan, ethics statement) and return its reference to put in the
    application.  Anyone signed in may upload; only a case that refers to it makes it readable to others."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or len(name) > 200:
        raise InvalidRequest("an attachment needs a file name of at most 200 characters", code="invalid_filename")
    if not name.lower().endswith(ALLOWED_SUFFIXES):
        raise InvalidRequest(f"{name}: an attachment is a document ({', '.join(ALLOWED_SUFFIXES)}), not data",
                             code="attachment_type")
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise TooLarge(f"{name} is {len(data):,} bytes; attachments are at most {MAX_ATTACHMENT_BYTES:,} bytes",
                       code="attachment_too_large")
    if not data:
        raise InvalidRequest(f"{name} is empty", code="attachment_empty")
    ref = store.store_bytes(svc, name, data)
    with svc.engine.begin() as conn:
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="attachment.stored",
                     subject=f"attachment:{ref.sha256}", payload={"filename": name, "bytes": len(data)})
    return ref


def read_attachment(svc: Service, actor: Actor, case_id: str, sha256: str) -> tuple[Attachment, bytes]:
    """One of the case's attachments, for those who may see the case (the read is audited)."""
    with svc.engine.begin() as conn:
        row = _verified_row(conn, svc, case_id)
        role = _check(conn, actor, row, "view")
        form = ApplicationForm.model_validate_json(row.form)
        found = [a for a in (form.research_plan, form.ethics_statement) if a is not None and a.sha256 == sha256]
        if not found:
            raise NotFound(f"{case_id} has no attachment {sha256[:12]}...", code="not_found")
        store.verify(svc, found[0])
        audit.append(conn, svc.audit_key, actor=actor.user_id, action="attachment.read",
                     subject=f"attachment:{sha256}", payload={"case": case_id, "role": role.value})
        return found[0], store.read(svc, found[0])


def named_users(svc: Service, case_id: str) -> tuple[str, ...]:
    """The users named on a case (for the stages that release things to them)."""
    with svc.engine.connect() as conn:
        return tuple(_members(conn, case_id))


__all__ = ["Message", "application", "messages", "update_draft", "upload_attachment", "read_attachment",
           "named_users", "MAX_ATTACHMENT_BYTES", "Role"]


@dataclass(frozen=True)
class EstimateRequest:
    """A controller's estimate asked for one registry of a case, and its answer once recorded."""

    case_id: str
    title: str
    state: str
    registry: str
    requested_on: date
    due_on: date
    cost_eur: str | None
    working_days: int | None
    recorded_by: str | None
    recorded_on: date | None

    @property
    def answered(self) -> bool:
        return self.recorded_on is not None


def estimate_requests(svc: Service, actor: Actor, *, case_id: str | None = None) -> list[EstimateRequest]:
    """Estimate requests addressed to the actor: a controller sees those for the registries they answer for;
    a handler or decider sees all (every case's, or one case's)."""
    from sqlalchemy import select

    from permits.models import EstimateRow

    staff = bool(actor.roles & {Role.HANDLER, Role.DECIDER, Role.AUDITOR})
    if not staff and Role.CONTROLLER not in actor.roles:
        raise PermissionDenied("only a data controller (for their registries), a handler, a decider or an auditor "
                               "may see estimate requests", action="estimate_requests")
    with svc.engine.connect() as conn:
        q = select(EstimateRow.__table__, CaseRow.title, CaseRow.state).join(
            CaseRow, CaseRow.case_id == EstimateRow.case_id)
        if case_id is not None:
            q = q.where(EstimateRow.case_id == case_id)
        rows = conn.execute(q.order_by(EstimateRow.due_on, EstimateRow.case_id, EstimateRow.registry_name)).all()
    return [EstimateRequest(r.case_id, r.title, r.state, r.registry, r.requested_on, r.due_on, r.cost_eur,
                            r.working_days, r.recorded_by, r.recorded_on)
            for r in rows if staff or r.registry in actor.registries]


@dataclass(frozen=True)
class Notification:
    """Something that happened on one of the user's cases, done by someone else."""

    case_id: str
    title: str
    event: str
    by: str
    at: str
    text: str


def notifications(svc: Service, actor: Actor, *, limit: int = 30) -> list[Notification]:
    """What others did on the cases the actor applied for, is named on, or handles; newest first.  The
    applicant and named users are not told of the authority's internal remarks."""
    from sqlalchemy import or_, select

    from permits.models import CaseEventRow

    with svc.engine.connect() as conn:
        member_of = select(MemberRow.case_id).where(MemberRow.user_id == actor.user_id)
        cases = {r.case_id: r for r in conn.execute(select(CaseRow).where(or_(
            CaseRow.applicant_id == actor.user_id, CaseRow.handler_id == actor.user_id,
            CaseRow.case_id.in_(member_of))))}
        if not cases:
            return []
        rows = conn.execute(select(CaseEventRow).where(CaseEventRow.case_id.in_(list(cases)),
                                                       CaseEventRow.actor != actor.user_id)
                            .order_by(CaseEventRow.ts.desc()).limit(limit * 2)).all()
    out = []
    for e in rows:
        payload = json.loads(e.payload)
        authority = cases[e.case_id].handler_id == actor.user_id
        if e.event == Event.REMARKED.value and payload.get("public") is False and not authority:
            continue
        out.append(Notification(e.case_id, cases[e.case_id].title, e.event, e.actor, e.ts,
                                str(payload.get("text") or payload.get("reason") or payload.get("reasons") or "")))
    return out[:limit]


@dataclass(frozen=True)
class CaseFile:
    """Everything the case page shows, read in one transaction with one audited view: the case as the actor
    may see it, its application, its messages, and the actions the actor may take on it now."""

    view: object  # permits.service.CaseView
    form: ApplicationForm
    messages: tuple[Message, ...]
    actions: tuple[str, ...]
    role: str


def case_file(svc: Service, actor: Actor, case_id: str) -> CaseFile:
    """The case page's content: the case as the chain vouches for it (verified afresh whenever it has changed,
    :func:`permits.service._verified_for_reading`), and the read recorded on the chain before it is returned."""
    from dataclasses import replace

    from permits.permissions import check_can
    from permits.service import _allowed_of, _facts_of, _verified_for_reading, _view_of

    snap = _verified_for_reading(svc, case_id)
    facts = _facts_of(actor, snap)
    role = check_can("view", **facts)
    view = _view_of(snap, with_history=True)
    history = _for_role(view.history, role)
    svc.reads.record(actor=actor.user_id, action="case.viewed", subject=f"case:{case_id}",
                     payload={"role": role.value, "what": "case page"})
    return CaseFile(replace(view, history=history), ApplicationForm.model_validate_json(snap.row.form),
                    _messages(history), tuple(_allowed_of(facts)), role.value)
