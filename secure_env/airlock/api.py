"""The airlock's REST routes: output requests, their files (read by the server from the permit's workspace),
votes, reviews, decisions and release.  A thin layer over :mod:`secure_env.airlock.outputs`; the
application that serves them (authentication, errors) is built by :mod:`toisio.app.api`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from secure_env.airlock import outputs as A
from toisio.identity import Actor
from toisio.service import Service
from toisio.text import MAX_TEXT
from toisio.web import attachment_disposition


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewRequest(_Body):
    permit_id: str = Field(min_length=1, max_length=64)


class AddFile(_Body):
    path: str = Field(min_length=1, max_length=1000,
                      description="the file in the permit's workspace, relative to its root (for example "
                                  "scratch/table.csv); the server reads it there, nothing is uploaded")
    description: str = Field(min_length=1, max_length=MAX_TEXT)
    method: str = Field("", max_length=MAX_TEXT, description="how it was made (required unless supporting)")
    index: str | None = Field(None, max_length=1000)
    statistic: str = Field("count", max_length=64)
    group: str = Field("default", min_length=1, max_length=A.MAX_GROUP_NAME,
                       description="the group the file belongs to (its context and controls are the group's)")
    supporting: bool = Field(False, description="a supporting file: shown to the reviewers, never released; "
                                                "needs only a description")
    exception: str = Field("", max_length=MAX_TEXT,
                           description="a request for an exception to a failed automatic check, with the reason "
                                       "(ACRO's add_exception); without one a failing file cannot be approved")


class DpBudgetIn(_Body):
    epsilon: float = Field(gt=0, le=100, description="the permit's total epsilon (sequential composition)")
    delta: float = Field(0.0, ge=0, lt=1, description="the permit's total delta")


class GroupIn(_Body):
    context: str = Field("", max_length=MAX_TEXT, description="what the group's files are for")
    controls: str = Field("", max_length=MAX_TEXT,
                          description="the disclosure controls applied (suppression, rounding, bands)")


class CommentIn(_Body):
    group: str = Field("default", min_length=1, max_length=A.MAX_GROUP_NAME)
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    visibility: Literal["public", "private"] = Field(
        "public", description="public: the requester sees it once the round's outcome is known; private: output "
                              "checkers only (a requester's reply is always public)")


class VoteOut(BaseModel):
    reviewer: str
    decision: str
    comment: str


class FileOut(BaseModel):
    name: str
    kind: str
    group: str
    supporting: bool
    sha256: str
    check_status: str
    check_report: dict[str, Any]
    context: dict[str, Any]
    status: str
    votes: list[VoteOut]


class CommentOut(BaseModel):
    author: str
    text: str
    visibility: str
    round: int
    at: str


class GroupOut(BaseModel):
    name: str
    context: str
    controls: str
    files: list[str]
    comments: list[CommentOut]


class ReleasedBefore(BaseModel):
    file: str
    sha256: str
    request_id: str
    released_at: str | None


class OutputView(BaseModel):
    """An output request as the caller may see it."""

    request_id: str
    permit_id: str
    requester: str
    state: str
    round: int
    reviews_submitted: int
    files: list[FileOut]
    groups: list[GroupOut]
    released_before: list[ReleasedBefore]


class OutputSummary(BaseModel):
    request_id: str
    permit_id: str
    requester: str
    state: str
    created_at: str
    released_at: str | None
    files: list[str]


class QueueItem(BaseModel):
    request_id: str
    permit_id: str
    state: str
    waiting_since: str


class Vote(_Body):
    file: str = Field(min_length=1, max_length=255)
    decision: Literal["approve", "reject", "request_changes"]
    comment: str = Field("", max_length=MAX_TEXT)


class Decide(_Body):
    outcome: Literal["approve", "reject", "return"]


class Reason(_Body):
    reason: str = Field(min_length=1, max_length=MAX_TEXT)


class DpChargeOut(BaseModel):
    query: str
    epsilon: float
    delta: float
    actor: str
    at: str


class DpBudgetOut(BaseModel):
    permit_id: str
    epsilon: float
    delta: float
    spent_epsilon: float
    spent_delta: float
    remaining_epsilon: float
    remaining_delta: float
    ledger: list[DpChargeOut]


class RequestState(BaseModel):
    request_id: str
    state: str


def _workspace_file(svc: Service, permit_id: str, given: str) -> Path:
    """The file a request names, inside the permit's workspace root (never elsewhere on the server)."""
    from secure_env.workspace.provision import existing

    root = existing(svc, permit_id).root.resolve()
    path = Path(given)
    path = (path if path.is_absolute() else root / path).resolve()
    if not path.is_relative_to(root):
        raise A.AirlockError(f"{given}: outputs of permit {permit_id} must come from its workspace",
                             "outside_workspace")
    return path


def airlock_router(svc: Service, actor: Callable[..., Actor]) -> APIRouter:
    r = APIRouter(tags=["output requests"])

    def state(request_id: str, s) -> RequestState:
        return RequestState(request_id=request_id, state=getattr(s, "value", s))

    @r.post("/api/v1/outputs", status_code=201)
    def create(body: NewRequest, a: Actor = Depends(actor)) -> RequestState:
        """Start an output request for a permit (an analyst named on it)."""
        request_id = A.create_request(svc, a, body.permit_id)
        return state(request_id, "pending")

    @r.get("/api/v1/outputs/queue")
    def queue(a: Actor = Depends(actor)) -> list[QueueItem]:
        """Requests awaiting this output checker's review, across all permits."""
        return A.checker_queue(svc, a)

    @r.get("/api/v1/permits/{permit_id}/dp", tags=["differential privacy"])
    def dp_budget(permit_id: str, a: Actor = Depends(actor)) -> DpBudgetOut:
        """The permit's privacy budget, what is left, and the ledger of charged queries."""
        from secure_env.airlock import dp

        b = dp.budget(svc, a, permit_id)
        return DpBudgetOut(permit_id=permit_id, epsilon=b.epsilon, delta=b.delta, spent_epsilon=b.spent_epsilon,
                           spent_delta=b.spent_delta, remaining_epsilon=b.remaining_epsilon,
                           remaining_delta=b.remaining_delta,
                           ledger=[DpChargeOut(**c.__dict__) for c in dp.ledger(svc, a, permit_id)])

    @r.put("/api/v1/permits/{permit_id}/dp", tags=["differential privacy"])
    def set_dp_budget(permit_id: str, body: DpBudgetIn, a: Actor = Depends(actor)) -> DpBudgetOut:
        """Set the permit's privacy budget (the decider, at or after the decision); the DP query service charges
        every query to it."""
        from secure_env.airlock import dp

        dp.set_budget(svc, a, permit_id, body.epsilon, body.delta)
        return dp_budget(permit_id, a)

    @r.get("/api/v1/outputs")
    def mine(a: Actor = Depends(actor)) -> list[OutputSummary]:
        """The requests the caller made, and those of permits they hold or are named on, newest first."""
        return A.requests_of(svc, a)

    @r.get("/api/v1/outputs/{request_id}/files/{name}", response_class=Response,
           responses={200: {"content": {"application/octet-stream": {}}}})
    def preview(request_id: str, name: str, a: Actor = Depends(actor)) -> Response:
        """One submitted file, for the requester and the request's independent checkers (audited)."""
        return Response(A.read_file(svc, a, request_id, name), media_type="application/octet-stream")

    @r.get("/api/v1/outputs/{request_id}/released/{name}", response_class=Response,
           responses={200: {"content": {"application/octet-stream": {}}}})
    def download(request_id: str, name: str, a: Actor = Depends(actor)) -> Response:
        """A released file (or manifest.json), for the permit's holder and named users only (audited)."""
        return Response(A.released_file(svc, a, request_id, name), media_type="application/octet-stream",
                        headers={"Content-Disposition": attachment_disposition(name)})

    @r.get("/api/v1/outputs/{request_id}")
    def show(request_id: str, a: Actor = Depends(actor)) -> OutputView:
        """The request as the caller may see it (other checkers' votes and comments hidden until they submit
        their own review; private comments never shown to the requester)."""
        return OutputView.model_validate(A.view(svc, a, request_id))

    @r.post("/api/v1/outputs/{request_id}/files", status_code=201)
    def add(request_id: str, body: AddFile, a: Actor = Depends(actor)) -> dict[str, Any]:
        """Add a file from the permit's workspace with its context; a table is checked at once."""
        permit_id = A.check_can_add_file(svc, a, request_id)
        path = _workspace_file(svc, permit_id, body.path)
        context = {"description": body.description, "method": body.method, "statistic": body.statistic}
        if body.index:
            context["index"] = body.index
        if body.exception.strip():
            context["exception"] = body.exception.strip()
        A.add_file(svc, a, request_id, path, context, group=body.group, supporting=body.supporting)
        return {"request_id": request_id, "file": path.name}

    @r.put("/api/v1/outputs/{request_id}/groups/{group}")
    def describe_group(request_id: str, group: str, body: GroupIn, a: Actor = Depends(actor)) -> dict[str, str]:
        """Give a group the context its files share and the disclosure controls applied (the requester)."""
        A.describe_group(svc, a, request_id, group, context=body.context, controls=body.controls)
        return {"request_id": request_id, "group": A.group_name(group)}

    @r.post("/api/v1/outputs/{request_id}/comments", status_code=201)
    def comment(request_id: str, body: CommentIn, a: Actor = Depends(actor)) -> dict[str, str]:
        """Comment on a group: a checker publicly or privately, the requester replies publicly."""
        A.comment(svc, a, request_id, body.group, body.text, body.visibility)
        return {"request_id": request_id, "group": body.group, "visibility": body.visibility}

    def step(fn, doc: str):
        def endpoint(request_id: str, a: Actor = Depends(actor)) -> RequestState:
            return state(request_id, fn(svc, a, request_id))

        endpoint.__doc__, endpoint.__name__ = doc, fn.__name__
        return endpoint

    for fn, doc in ((A.submit, "Submit (or resubmit) for review."), (A.withdraw, "Withdraw before release."),
                    (A.submit_review, "Finish your review (after voting on every file).")):
        r.add_api_route(f"/api/v1/outputs/{{request_id}}/{fn.__name__}", step(fn, doc), methods=["POST"],
                        name=f"output_{fn.__name__}")

    @r.post("/api/v1/outputs/{request_id}/votes")
    def vote(request_id: str, body: Vote, a: Actor = Depends(actor)) -> dict[str, str]:
        """Vote on one file (replacing your earlier vote on it in this round)."""
        A.vote(svc, a, request_id, body.file, body.decision, body.comment)
        return {"request_id": request_id, "file": body.file, "decision": body.decision}

    @r.post("/api/v1/outputs/{request_id}/decide")
    def decide(request_id: str, body: Decide, a: Actor = Depends(actor)) -> RequestState:
        """Approve, reject or return a reviewed request."""
        return state(request_id, A.decide(svc, a, request_id, body.outcome))

    @r.post("/api/v1/outputs/{request_id}/revoke_approval")
    def revoke(request_id: str, body: Reason, a: Actor = Depends(actor)) -> RequestState:
        """Take your approval back before release."""
        return state(request_id, A.revoke_approval(svc, a, request_id, body.reason))

    @r.post("/api/v1/outputs/{request_id}/release")
    def release(request_id: str, a: Actor = Depends(actor)) -> dict[str, str]:
        """Release an approved request to the release store."""
        target = A.release(svc, a, request_id)
        return {"request_id": request_id, "state": "released", "released_to": str(target)}

    return r
