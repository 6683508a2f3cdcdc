"""The permit stage's REST routes (FastAPI): cases, their actions, the queue, a permit's access.

The application that serves them (authentication, errors, the other stages) is built by
:mod:`toisio.app.api`.  The routes are a thin layer over :mod:`permits.service`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import date
from typing import Any

from fastapi import APIRouter, Body, Depends

from permits import service as S
from permits.actions import ACTION_BODIES
from permits.application import ApplicationForm
from permits.permissions import ACTIONS, Role
from toisio.identity import Actor
from toisio.service import Service


def _case_json(v: S.CaseView) -> dict[str, Any]:
    out = {k: (x.isoformat() if isinstance(x, date) else x) for k, x in v.__dict__.items() if k != "history"}
    out["state"] = v.state.value
    out["members"] = list(v.members)
    out["history"] = [e.__dict__ for e in v.history]
    return out


def _action_endpoint(svc: Service, name: str, model: type, actor):
    """One endpoint per action, its body typed by the action's model (so the OpenAPI shows what it takes)."""

    def endpoint(case_id: str, body, a: Actor) -> dict:
        given = body.model_dump(exclude_unset=True) if body is not None else {}
        return _case_json(S.act(svc, a, case_id, name, **given))

    required = any(f.is_required() for f in model.model_fields.values())
    endpoint.__signature__ = inspect.Signature([
        inspect.Parameter("case_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
        inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=model if required
                          else model | None, default=Body(...) if required else Body(None)),
        inspect.Parameter("a", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Actor, default=Depends(actor)),
    ])
    endpoint.__annotations__ = {}
    endpoint.__name__ = f"action_{name}"
    return endpoint


def permits_router(svc: Service, actor: Callable[..., Actor]) -> APIRouter:
    """The permit stage's routes; ``actor`` is the dependency that authenticates the caller."""
    app = APIRouter(tags=["permits"])

    @app.get("/api/v1/cases")
    def list_cases(state: str | None = None, a: Actor = Depends(actor)) -> list[dict]:
        return [_case_json(v) for v in S.list_cases(svc, a, state=state)]

    @app.post("/api/v1/cases", status_code=201)
    def submit(form: ApplicationForm, draft: bool = False, a: Actor = Depends(actor)) -> dict:
        if draft:
            return {"case_id": S.create_draft(svc, a, form), "state": "draft"}
        return _case_json(S.submit_form(svc, a, form))

    @app.get("/api/v1/cases/{case_id}")
    def show(case_id: str, a: Actor = Depends(actor)) -> dict:
        return _case_json(S.show(svc, a, case_id))

    for name, model in ACTION_BODIES.items():
        if ACTIONS[name].roles <= {Role.SYSTEM}:
            continue  # taken only by the service's own jobs
        app.add_api_route(f"/api/v1/cases/{{case_id}}/actions/{name}", _action_endpoint(svc, name, model, actor),
                          methods=["POST"], name=f"action_{name}", summary=ACTIONS[name].description,
                          tags=["case actions"])

    @app.get("/api/v1/queue")
    def queue(all_handlers: bool = False, a: Actor = Depends(actor)) -> list[dict]:
        items = S.queue(svc, a, all_handlers=all_handlers)
        return [{**i.__dict__, "deadline": i.deadline.isoformat() if i.deadline else None} for i in items]

    @app.get("/api/v1/permits/{permit_id}/access")
    def access(permit_id: str, a: Actor = Depends(actor)) -> dict:
        S.show(svc, a, permit_id)  # same visibility as the case (and audited)
        p = S.permit_access(svc, permit_id)
        return {"permit_id": p.permit_id, "state": p.state.value, "in_force": p.in_force, "reason": p.reason,
                "users": list(p.users), "valid_until": p.valid_until.isoformat() if p.valid_until else None,
                "scope_sha256": p.scope.sha256 if p.scope else None}

    return app
