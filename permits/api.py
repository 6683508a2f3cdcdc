"""The permit stage's REST routes (FastAPI): applications, cases, their actions, messages, attachments,
estimate requests, decisions, the queue and a permit's access.

The application that serves them (authentication, errors, the other stages) is built by
:mod:`toisio.app.api`.  The routes are a thin layer over :mod:`permits.service`,
:mod:`permits.content`, :mod:`permits.validation` and :mod:`permits.decision`; every request and
response has a pydantic model, so the OpenAPI document says exactly what each takes and gives.
Lists take ``limit`` and ``offset`` and report the whole count in ``X-Total-Count``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, File, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from permits import content as C
from permits import decision as D
from permits import service as S
from permits.actions import ACTION_BODIES
from permits.application import ApplicationForm, Attachment
from permits.permissions import ACTIONS, Role
from permits.validation import MAX_DOCUMENT_BYTES, Report, validate_document
from toisio import audit
from toisio.errors import TooLarge
from toisio.identity import Actor
from toisio.service import Service
from toisio.web import attachment_disposition

Limit = Annotated[int, Query(ge=1, le=500, description="at most this many items")]
Offset = Annotated[int, Query(ge=0, description="skip this many items")]


class CaseEventOut(BaseModel):
    seq: int
    event: str
    actor: str
    role: str
    ts: str
    payload: dict[str, Any]


class CaseOut(BaseModel):
    """A case as its users see it (the applicant does not see the authority's internal remarks)."""

    case_id: str
    kind: str
    title: str
    state: str
    applicant_id: str
    handler_id: str | None
    purpose: str | None
    members: list[str]
    submitted_on: date | None
    complete_on: date | None
    decision_due: date | None
    decided_on: date | None
    valid_from: date | None
    valid_until: date | None
    scope_sha256: str | None
    fee: dict[str, Any] | None
    parent_permit_id: str | None
    history: list[CaseEventOut]


class DraftOut(BaseModel):
    case_id: str
    state: Literal["draft"] = "draft"


class QueueItemOut(BaseModel):
    case_id: str
    title: str
    state: str
    handler_id: str | None
    deadline: date | None
    deadline_kind: str
    status: str
    waiting_for: str


class AccessOut(BaseModel):
    permit_id: str
    state: str
    in_force: bool
    reason: str
    users: list[str]
    valid_until: date | None
    scope_sha256: str | None


class AttachmentOut(BaseModel):
    filename: str
    sha256: str
    bytes: int


class MessageIn(BaseModel):
    text: str = Field(min_length=1, max_length=20_000)
    public: bool = Field(True, description="false: internal to the authority (the applicant does not see it)")


class MessageOut(BaseModel):
    seq: int
    author: str
    role: str
    at: str
    text: str
    public: bool


class EstimateRequestOut(BaseModel):
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
    answered: bool


def case_out(v: S.CaseView) -> CaseOut:
    return CaseOut(case_id=v.case_id, kind=v.kind, title=v.title, state=v.state.value, applicant_id=v.applicant_id,
                   handler_id=v.handler_id, purpose=v.purpose, members=list(v.members), submitted_on=v.submitted_on,
                   complete_on=v.complete_on, decision_due=v.decision_due, decided_on=v.decided_on,
                   valid_from=v.valid_from, valid_until=v.valid_until, scope_sha256=v.scope_sha256, fee=v.fee,
                   parent_permit_id=v.parent_permit_id,
                   history=[CaseEventOut(**e.__dict__) for e in v.history])


def page(response: Response, items: list, limit: int, offset: int) -> list:
    """One page of ``items``; the whole count goes in ``X-Total-Count``."""
    response.headers["X-Total-Count"] = str(len(items))
    return items[offset:offset + limit]


def _action_endpoint(svc: Service, name: str, model: type, actor):
    """One endpoint per action, its body typed by the action's model (so the OpenAPI shows what it takes)."""

    def endpoint(case_id: str, body, a: Actor) -> CaseOut:
        given = body.model_dump(exclude_unset=True) if body is not None else {}
        return case_out(S.act(svc, a, case_id, name, **given))

    required = any(f.is_required() for f in model.model_fields.values())
    endpoint.__signature__ = inspect.Signature([
        inspect.Parameter("case_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
        inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=model if required
                          else model | None, default=Body(...) if required else Body(None)),
        inspect.Parameter("a", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Actor, default=Depends(actor)),
    ], return_annotation=CaseOut)
    endpoint.__annotations__ = {"return": CaseOut}
    endpoint.__name__ = f"action_{name}"
    return endpoint


_DOCUMENT_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/ApplicationForm"}},
    "application/yaml": {"schema": {"type": "string"}}}}}


async def _case_ahead(case_id: str) -> None:
    """Read the case's stamp with the caller's sign-in: one statement for both (on the event loop, before the
    sign-in; no I/O here)."""
    audit.read_ahead(S.case_vouching(case_id))


def permits_router(svc: Service, actor: Callable[..., Actor]) -> APIRouter:
    """The permit stage's routes; ``actor`` is the dependency that authenticates the caller."""
    app = APIRouter(tags=["permits"])

    @app.get("/api/v1/cases")
    def list_cases(response: Response, state: str | None = None, limit: Limit = 100, offset: Offset = 0,
                   a: Actor = Depends(actor)) -> list[CaseOut]:
        """Cases the caller may see (every case for handlers, deciders and auditors)."""
        return page(response, [case_out(v) for v in S.list_cases(svc, a, state=state)], limit, offset)

    @app.post("/api/v1/cases", status_code=201, response_model=CaseOut | DraftOut)
    def submit(form: ApplicationForm, draft: bool = False, a: Actor = Depends(actor)):
        """File an application: submitted at once, or kept as a draft with ``?draft=true``."""
        if draft:
            return DraftOut(case_id=S.create_draft(svc, a, form))
        return case_out(S.submit_form(svc, a, form))

    @app.post("/api/v1/applications/validate", tags=["applications"], openapi_extra=_DOCUMENT_BODY)
    async def validate(request: Request) -> Report:
        """Check an application (JSON or YAML) without submitting it: every problem at once, with field
        paths, expected formats and "did you mean".  Repeated keys are refused.  Needs no sign-in."""
        body = await request.body()
        if len(body) > MAX_DOCUMENT_BYTES:
            raise TooLarge(f"the document is over {MAX_DOCUMENT_BYTES:,} bytes", code="request_too_large")
        return validate_document(body)

    @app.get("/api/v1/cases/{case_id}", dependencies=[Depends(_case_ahead)])
    def show(case_id: str, a: Actor = Depends(actor)) -> CaseOut:
        return case_out(S.show(svc, a, case_id))

    @app.get("/api/v1/cases/{case_id}/application", tags=["applications"])
    def application(case_id: str, a: Actor = Depends(actor)) -> ApplicationForm:
        """The application's full content, for those who may see the case."""
        return C.application(svc, a, case_id)

    @app.put("/api/v1/cases/{case_id}/application", tags=["applications"])
    def update_draft(case_id: str, form: ApplicationForm, a: Actor = Depends(actor)) -> DraftOut:
        """Replace a draft's application (its applicant only, while it is a draft)."""
        C.update_draft(svc, a, case_id, form)
        return DraftOut(case_id=case_id)

    @app.post("/api/v1/attachments", tags=["applications"], status_code=201)
    async def upload(file: UploadFile = File(...), a: Actor = Depends(actor)) -> AttachmentOut:
        """Upload a research plan or an ethics statement; put the returned reference in the application."""
        data = await file.read(C.MAX_ATTACHMENT_BYTES + 1)
        ref = await run_in_threadpool(C.upload_attachment, svc, a, file.filename or "", data)
        return AttachmentOut(filename=ref.filename, sha256=ref.sha256, bytes=len(data))

    @app.get("/api/v1/cases/{case_id}/attachments/{sha256}", tags=["applications"],
             response_class=Response, responses={200: {"content": {"application/octet-stream": {}}}})
    def download(case_id: str, sha256: str, a: Actor = Depends(actor)) -> Response:
        """One of the case's attachments (audited)."""
        ref, data = C.read_attachment(svc, a, case_id, sha256)
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": _disposition(ref), "X-Content-SHA256": ref.sha256})

    @app.get("/api/v1/cases/{case_id}/messages", tags=["messages"])
    def messages(case_id: str, a: Actor = Depends(actor)) -> list[MessageOut]:
        """The case's messages as the caller may see them."""
        return [MessageOut(**m.__dict__) for m in C.messages(svc, a, case_id)]

    @app.post("/api/v1/cases/{case_id}/messages", tags=["messages"], status_code=201)
    def post_message(case_id: str, body: MessageIn, a: Actor = Depends(actor)) -> MessageOut:
        """Write to the case: public (the applicant sees it) or, for the authority, internal."""
        S.act(svc, a, case_id, "remark", text=body.text, public=body.public)
        return [MessageOut(**m.__dict__) for m in C.messages(svc, a, case_id)][-1]

    @app.get("/api/v1/estimates", tags=["controllers"])
    def estimates(response: Response, case_id: str | None = None, open_only: bool = False, limit: Limit = 100,
                  offset: Offset = 0, a: Actor = Depends(actor)) -> list[EstimateRequestOut]:
        """Estimate requests addressed to the caller (a controller: their registries), soonest due first."""
        items = [EstimateRequestOut(**e.__dict__, answered=e.answered)
                 for e in C.estimate_requests(svc, a, case_id=case_id) if not (open_only and e.answered)]
        return page(response, items, limit, offset)

    @app.get("/api/v1/cases/{case_id}/decision.html", tags=["decisions"], response_class=HTMLResponse)
    def decision_html(case_id: str, lang: Literal["fi", "sv", "en"] = "fi", a: Actor = Depends(actor)) -> HTMLResponse:
        """The decision document: scope, conditions, fee and how to appeal."""
        return HTMLResponse(D.render_html(D.decision(svc, a, case_id), lang))

    @app.get("/api/v1/cases/{case_id}/decision.pdf", tags=["decisions"], response_class=Response,
             responses={200: {"content": {"application/pdf": {}}}})
    def decision_pdf(case_id: str, lang: Literal["fi", "sv", "en"] = "fi", a: Actor = Depends(actor)) -> Response:
        pdf = D.render_pdf(D.decision(svc, a, case_id), lang)
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="decision-{case_id}-{lang}.pdf"'})

    for name, model in ACTION_BODIES.items():
        if ACTIONS[name].roles <= {Role.SYSTEM}:
            continue  # taken only by the service's own jobs
        app.add_api_route(f"/api/v1/cases/{{case_id}}/actions/{name}", _action_endpoint(svc, name, model, actor),
                          methods=["POST"], name=f"action_{name}", summary=ACTIONS[name].description,
                          tags=["case actions"], response_model=CaseOut)

    @app.get("/api/v1/queue")
    def queue(response: Response, all_handlers: bool = False, limit: Limit = 100, offset: Offset = 0,
              a: Actor = Depends(actor)) -> list[QueueItemOut]:
        """Open cases by deadline, each with whom it waits for."""
        items = [QueueItemOut(**i.__dict__) for i in S.queue(svc, a, all_handlers=all_handlers)]
        return page(response, items, limit, offset)

    @app.get("/api/v1/permits/{permit_id}/access")
    def access(permit_id: str, a: Actor = Depends(actor)) -> AccessOut:
        S.show(svc, a, permit_id)  # same visibility as the case (and audited)
        p = S.permit_access(svc, permit_id)
        return AccessOut(permit_id=p.permit_id, state=p.state.value, in_force=p.in_force, reason=p.reason,
                         users=list(p.users), valid_until=p.valid_until,
                         scope_sha256=p.scope.sha256 if p.scope else None)

    return app


def _disposition(ref: Attachment) -> str:
    from urllib.parse import quote

    return f"{attachment_disposition(ref.filename)}; filename*=UTF-8''{quote(ref.filename)}"
