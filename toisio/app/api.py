"""The REST API application: authentication, one error handler, and every stage's routes.

``toisio serve`` runs it; ``/docs`` has the OpenAPI UI.  Every route but sign-in and health needs
``Authorization: Bearer <token>``; the token resolves to an authenticated
:class:`~toisio.identity.Actor` (:func:`toisio.identity.authenticate`), and every domain function
checks its own permissions against it.  Errors are JSON ``{"error": {"code", "message"}}`` with a
stable code; a 401 carries ``WWW-Authenticate``.

Sign-in: ``POST /api/v1/auth/login`` (user id, password, one-time code) or, when an OpenID Connect
provider is configured (``TOISIO_OIDC_ISSUER`` and client), ``GET /api/v1/auth/oidc/login`` which
redirects to the provider and returns to ``/api/v1/auth/oidc/callback``.  Either gives an API token.
"""

from __future__ import annotations

import logging
import uuid
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from permits.api import permits_router
from secure_env.airlock.api import airlock_router
from secure_env.workspace.api import workspace_router
from toisio import identity
from toisio.errors import ToisioError, Unauthenticated, Unavailable
from toisio.identity import Actor
from toisio.service import Service
from toisio.web import LimitsMiddleware

log = logging.getLogger("toisio.api")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


@asynccontextmanager
async def _stage_reactions(svc: Service):
    """While the API runs, a permit that ends through it stops its running workspace at once."""
    from secure_env.workspace.server import enforce_permit_events, withdraw_permit_events

    handler = enforce_permit_events(lambda: svc)
    try:
        yield
    finally:
        withdraw_permit_events(handler)


class LoginBody(BaseModel):
    user_id: str = Field(min_length=1, max_length=100)
    password: str = Field(min_length=1, max_length=1000)
    code: str = Field(min_length=6, max_length=10, description="the one-time code from the authenticator app")
    token_name: str = Field("api", min_length=1, max_length=100)
    days: int = Field(identity.TOKEN_DAYS, ge=1, le=identity.TOKEN_MAX_DAYS)


class TokenBody(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    days: int = Field(identity.TOKEN_DAYS, ge=1, le=identity.TOKEN_MAX_DAYS)


class TokenOut(BaseModel):
    token_id: str
    name: str
    created_at: str
    expires_at: str
    last_used_at: str | None
    revoked_at: str | None
    status: str


class NewTokenOut(BaseModel):
    user_id: str
    token: str = Field(description="the token's value: shown once, only its hash is kept")
    info: TokenOut


def _token_out(i: identity.TokenInfo) -> TokenOut:
    return TokenOut(token_id=i.token_id, name=i.name, created_at=i.created_at, expires_at=i.expires_at,
                    last_used_at=i.last_used_at, revoked_at=i.revoked_at, status=i.status)


def _new_token_out(t: identity.NewToken) -> NewTokenOut:
    return NewTokenOut(user_id=t.info.user_id, token=t.value, info=_token_out(t.info))


def _oidc_client(svc: Service):
    """authlib's OAuth client for the configured provider, or None when none is configured."""
    st = svc.settings
    if not (st.oidc_issuer and st.oidc_client_id):
        return None
    import warnings

    with warnings.catch_warnings():  # authlib 1.9 asks for httpx2, not in this stack; it works with httpx
        warnings.filterwarnings("ignore", "The httpx module is deprecated", DeprecationWarning)
        from authlib.integrations.starlette_client import OAuth

    oauth = OAuth()
    oauth.register("provider", client_id=st.oidc_client_id, client_secret=st.oidc_client_secret,
                   server_metadata_url=st.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
                   client_kwargs={"scope": "openid email profile"})
    return oauth.provider


def _oidc_routes(app: FastAPI, svc: Service, oidc) -> None:
    """Sign-in through the configured OpenID Connect provider (only when one is configured)."""

    @app.get("/api/v1/auth/oidc/login", tags=["identity"])
    async def oidc_login(request: Request):
        """Redirect to the configured identity provider."""
        base = svc.settings.oidc_redirect_base.rstrip("/") or str(request.base_url).rstrip("/")
        return await oidc.authorize_redirect(request, base + "/api/v1/auth/oidc/callback")

    @app.get("/api/v1/auth/oidc/callback", tags=["identity"])
    async def oidc_callback(request: Request) -> NewTokenOut:
        """The provider returns here; the ID token is verified (signature, issuer, audience, nonce) and the
        linked user signed in with a new API token."""
        import httpx
        from authlib.integrations.base_client.errors import OAuthError

        try:
            token = await oidc.authorize_access_token(request)
        except OAuthError as exc:
            raise Unauthenticated(f"the identity provider's answer was refused: {exc.error}",
                                  code="oidc_failed") from None
        except httpx.HTTPError as exc:
            log.warning("identity provider failed: %s", exc)
            raise Unavailable("the identity provider did not answer properly; try again later",
                              code="oidc_provider_error") from None
        claims = dict(token.get("userinfo") or {})
        new = await run_in_threadpool(identity.login_oidc, svc, claims, token_name="oidc",
                                      require_mfa=svc.settings.oidc_require_mfa)
        return _new_token_out(new)


def create_app(svc: Service) -> FastAPI:
    """The API bound to one service instance."""
    app = FastAPI(title="Toisio", version="1",
                  description="Secondary use of health and social data: applications, decisions, permits.",
                  lifespan=lambda _app: _stage_reactions(svc))
    app.add_middleware(LimitsMiddleware)
    oidc = _oidc_client(svc)
    if oidc is not None:
        from starlette.middleware.sessions import SessionMiddleware

        # holds only the OpenID Connect state and nonce between the redirect and the callback
        app.add_middleware(SessionMiddleware, secret_key=svc.credential_key.value.hex(), session_cookie="toisio_oidc",
                           max_age=600, same_site="lax", https_only=svc.settings.oidc_redirect_base.startswith("https"))
    bearer = HTTPBearer(auto_error=False)

    def actor(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Actor:
        a = identity.authenticate(svc, creds.credentials if creds else None)
        request.state.user_id = a.user_id
        return a

    @app.middleware("http")
    async def _log_request(request: Request, call_next):
        """Every request is logged with the authenticated user it ran as (the audit log has what it changed)."""
        response = await call_next(request)
        log.info("%s %s -> %s as %s", request.method, request.url.path, response.status_code,
                 getattr(request.state, "user_id", "(not signed in)"))
        return response

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

    @app.get("/api/v1/health", tags=["service"])
    def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/v1/me", tags=["identity"])
    def me(a: Actor = Depends(actor)) -> dict:
        return {"user_id": a.user_id, "roles": sorted(r.value for r in a.roles), "registries": sorted(a.registries),
                "method": a.method.value, "mfa": a.mfa}

    @app.post("/api/v1/auth/login", tags=["identity"], status_code=201)
    def login(body: LoginBody) -> NewTokenOut:
        """Sign in with a local account (password and one-time code); returns a new API token."""
        return _new_token_out(identity.login_local(svc, body.user_id, body.password, body.code,
                                                   token_name=body.token_name, days=body.days))

    if oidc is not None:
        _oidc_routes(app, svc, oidc)

    @app.get("/api/v1/tokens", tags=["identity"])
    def tokens(a: Actor = Depends(actor)) -> list[TokenOut]:
        return [_token_out(i) for i in identity.list_tokens(svc, a)]

    @app.post("/api/v1/tokens", tags=["identity"], status_code=201)
    def create_token(body: TokenBody, a: Actor = Depends(actor)) -> NewTokenOut:
        return _new_token_out(identity.create_token(svc, a, body.name, days=body.days))

    @app.post("/api/v1/tokens/{token_id}/rotate", tags=["identity"], status_code=201)
    def rotate_token(token_id: str, a: Actor = Depends(actor)) -> NewTokenOut:
        return _new_token_out(identity.rotate_token(svc, a, token_id))

    @app.delete("/api/v1/tokens/{token_id}", tags=["identity"])
    def revoke_token(token_id: str, a: Actor = Depends(actor)) -> TokenOut:
        return _token_out(identity.revoke_token(svc, a, token_id))

    app.include_router(permits_router(svc, actor))
    app.include_router(workspace_router(svc, actor))
    app.include_router(airlock_router(svc, actor))
    return app
