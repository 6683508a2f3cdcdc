"""REST API of the permit service (FastAPI).  ``toisio serve`` runs it; ``/docs`` has the OpenAPI UI.

Authentication is ``Authorization: Bearer <token>`` (tokens from ``toisio users add``; only their
hashes are stored); roles come from the user table.  Errors are JSON
``{"error": {"code": ..., "message": ...}}`` with a stable code.  The API is a thin layer over
:mod:`permits.service`.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from datetime import date
from typing import Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from permits import service as S
from permits.application import ApplicationForm
from permits.attachments import AttachmentMissing
from permits.lifecycle import IllegalTransition
from permits.permissions import PermissionDenied
from permits.rules import RuleViolation
from toisio.service import Service


class Unauthenticated(Exception):
    pass


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


def create_app(svc: Service) -> FastAPI:
    """The API bound to one service instance."""
    app = FastAPI(title="Toisio permit service", version="1",
                  description="Applications, decisions and permits for secondary use of health and social data.",
                  lifespan=lambda _app: _stage_reactions(svc))
    bearer = HTTPBearer(auto_error=False)

    def actor(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> S.Actor:
        if creds is None or not creds.credentials:
            raise Unauthenticated("missing bearer token")
        with svc.engine.connect() as conn:
            a = S.actor_for_token(conn, creds.credentials)
        if a is None:
            raise Unauthenticated("unknown or revoked token")
        return a

    @app.exception_handler(Unauthenticated)
    async def _unauth(request: Request, exc: Unauthenticated):
        return _error(401, "unauthenticated", str(exc))

    @app.exception_handler(PermissionDenied)
    async def _denied(request: Request, exc: PermissionDenied):
        return _error(409 if exc.code == "illegal_state" else 403, exc.code, str(exc))

    @app.exception_handler(IllegalTransition)
    async def _illegal(request: Request, exc: IllegalTransition):
        return _error(409, "illegal_state", str(exc))

    @app.exception_handler(S.NotFound)
    async def _missing(request: Request, exc: S.NotFound):
        return _error(404, "not_found", str(exc))

    @app.exception_handler(RuleViolation)
    async def _rule(request: Request, exc: RuleViolation):
        return _error(422, exc.code, str(exc))

    @app.exception_handler(AttachmentMissing)
    async def _attachment(request: Request, exc: AttachmentMissing):
        return _error(422, exc.code, str(exc))

    @app.exception_handler(S.InvalidRequest)
    async def _invalid(request: Request, exc: S.InvalidRequest):
        return _error(422, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", []))
        return _error(422, "invalid_document", f"{where}: {first.get('msg', 'invalid')}")

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

    @app.post("/api/v1/cases/{case_id}/actions/{action}")
    def take_action(case_id: str, action: str, payload: dict[str, Any] = Body(default_factory=dict),
                    a: S.Actor = Depends(actor)) -> dict:
        if action == "resubmit" and "form" in payload:
            payload["form"] = ApplicationForm.model_validate(payload["form"])
        return _case_json(S.act(svc, a, case_id, action, **payload))

    @app.get("/api/v1/queue")
    def queue(all_handlers: bool = False, a: S.Actor = Depends(actor)) -> list[dict]:
        items = S.queue(svc, None if all_handlers else a.user_id)
        return [{**i.__dict__, "deadline": i.deadline.isoformat() if i.deadline else None} for i in items]

    @app.get("/api/v1/permits/{permit_id}/access")
    def access(permit_id: str, a: S.Actor = Depends(actor)) -> dict:
        S.show(svc, a, permit_id)  # same visibility as the case (and audited)
        p = S.permit_access(svc, permit_id)
        return {"permit_id": p.permit_id, "state": p.state.value, "in_force": p.in_force, "reason": p.reason,
                "users": list(p.users), "valid_until": p.valid_until.isoformat() if p.valid_until else None,
                "scope_sha256": p.scope.sha256 if p.scope else None}

    return app
