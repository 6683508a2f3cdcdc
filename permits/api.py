"""REST API of the permit service (FastAPI).  ``toisio serve`` runs it; ``/docs`` has the OpenAPI UI.

Authentication is ``Authorization: Bearer <token>`` (tokens from ``toisio users add``; only their
hashes are stored); roles come from the user table.  Errors are JSON
``{"error": {"code": ..., "message": ...}}`` with a stable code.  The API is a thin layer over
:mod:`permits.service`.
"""

from __future__ import annotations

import inspect
import logging
import uuid
from contextlib import asynccontextmanager
from datetime import date
from typing import Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from permits import service as S
from permits.actions import ACTION_BODIES
from permits.application import ApplicationForm
from permits.permissions import ACTIONS, Role
from toisio.errors import ToisioError, Unauthenticated
from toisio.service import Service
from toisio.web import LimitsMiddleware

log = logging.getLogger("toisio.api")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


def _case_json(v: S.CaseView) -> dict[str, Any]:
    out = {k: (x.isoformat() if isinstance(x, date) else x) for k, x in v.__dict__.items() if k != "history"}
    out["state"] = v.state.value
    out["members"] = list(v.members)
    out["history"] = [e.__dict__ for e in v.history]
    return out


@asynccontextmanager
async def _stage_reactions(svc: Service):
    """While the API runs, a permit that ends through it stops its running workspace at once."""
    from secure_env.workspace_server import enforce_permit_events, withdraw_permit_events

    handler = enforce_permit_events(lambda: svc)
    try:
        yield
    finally:
        withdraw_permit_events(handler)


def _action_endpoint(svc: Service, name: str, model: type, actor):
    """One endpoint per action, its body typed by the action's model (so the OpenAPI shows what it takes)."""

    def endpoint(case_id: str, body, a: S.Actor) -> dict:
        given = body.model_dump(exclude_unset=True) if body is not None else {}
        return _case_json(S.act(svc, a, case_id, name, **given))

    required = any(f.is_required() for f in model.model_fields.values())
    endpoint.__signature__ = inspect.Signature([
        inspect.Parameter("case_id", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str),
        inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=model if required
                          else model | None, default=Body(...) if required else Body(None)),
        inspect.Parameter("a", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=S.Actor, default=Depends(actor)),
    ])
    endpoint.__annotations__ = {}
    endpoint.__name__ = f"action_{name}"
    return endpoint


def create_app(svc: Service) -> FastAPI:
    """The API bound to one service instance."""
    app = FastAPI(title="Toisio permit service", version="1",
                  description="Applications, decisions and permits for secondary use of health and social data.",
                  lifespan=lambda _app: _stage_reactions(svc))
    app.add_middleware(LimitsMiddleware)
    bearer = HTTPBearer(auto_error=False)

    def actor(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> S.Actor:
        if creds is None or not creds.credentials:
            raise Unauthenticated("missing bearer token")
        with svc.engine.connect() as conn:
            a = S.actor_for_token(conn, creds.credentials)
        if a is None:
            raise Unauthenticated("unknown or revoked token")
        return a

    @app.exception_handler(ToisioError)
    async def _coded(request: Request, exc: ToisioError):
        """The one handler for every error a user can cause: its code, its status, its message."""
        response = _error(exc.http_status, exc.code, str(exc))
        if exc.http_status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="toisio"'
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                   "message": e.get("msg", "invalid")} for e in exc.errors()]
        summary = "; ".join(f"{e['field'] or '(body)'}: {e['message']}" for e in errors)
        return JSONResponse(status_code=422, content={"error": {"code": "invalid_document", "message": summary,
                                                                "errors": errors}})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        ref = uuid.uuid4().hex[:12]
        log.exception("unexpected error (reference %s) on %s %s", ref, request.method, request.url.path)
        return _error(500, "internal", f"the service could not complete this request (reference {ref}); "
                                       f"it was logged")

    @app.get("/api/v1/health")
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/v1/me")
    def me(a: S.Actor = Depends(actor)) -> dict:
        return {"user_id": a.user_id, "roles": sorted(r.value for r in a.roles), "registries": sorted(a.registries)}

    @app.get("/api/v1/cases")
    def list_cases(state: str | None = None, a: S.Actor = Depends(actor)) -> list[dict]:
        return [_case_json(v) for v in S.list_cases(svc, a, state=state)]

    @app.post("/api/v1/cases", status_code=201)
    def submit(form: ApplicationForm, draft: bool = False, a: S.Actor = Depends(actor)) -> dict:
        if draft:
            return {"case_id": S.create_draft(svc, a, form), "state": "draft"}
        return _case_json(S.submit_form(svc, a, form))

    @app.get("/api/v1/cases/{case_id}")
    def show(case_id: str, a: S.Actor = Depends(actor)) -> dict:
        return _case_json(S.show(svc, a, case_id))

    for name, model in ACTION_BODIES.items():
        if ACTIONS[name].roles <= {Role.SYSTEM}:
            continue  # taken only by the service's own jobs
        app.add_api_route(f"/api/v1/cases/{{case_id}}/actions/{name}", _action_endpoint(svc, name, model, actor),
                          methods=["POST"], name=f"action_{name}", summary=ACTIONS[name].description,
                          tags=["case actions"])

    @app.get("/api/v1/queue")
    def queue(all_handlers: bool = False, a: S.Actor = Depends(actor)) -> list[dict]:
        items = S.queue(svc, a, all_handlers=all_handlers)
        return [{**i.__dict__, "deadline": i.deadline.isoformat() if i.deadline else None} for i in items]

    @app.get("/api/v1/permits/{permit_id}/access")
    def access(permit_id: str, a: S.Actor = Depends(actor)) -> dict:
        S.show(svc, a, permit_id)  # same visibility as the case (and audited)
        p = S.permit_access(svc, permit_id)
        return {"permit_id": p.permit_id, "state": p.state.value, "in_force": p.in_force, "reason": p.reason,
                "users": list(p.users), "valid_until": p.valid_until.isoformat() if p.valid_until else None,
                "scope_sha256": p.scope.sha256 if p.scope else None}

    return app
