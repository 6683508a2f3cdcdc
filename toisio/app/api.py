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

import gc
import logging
import sys
import uuid
from contextlib import asynccontextmanager
from datetime import date
from typing import Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from catalogue.api import catalogue_router
from flows.data_request import produce_statistics
from flows.retention import retention
from permits.api import permits_router
from permits.report import indicators
from secure_env.airlock.api import OutputSummary, airlock_router
from secure_env.airlock.api import RequestState as RequestStateOut
from secure_env.airlock.outputs import requests_for_permit
from secure_env.workspace.api import workspace_router
from toisio import identity, notify
from toisio.app.auditing import verify_all
from toisio.audit_access import search
from toisio.db import lost_connection
from toisio.errors import ToisioError, Unauthenticated, Unavailable
from toisio.identity import Actor
from toisio.retention import Held
from toisio.service import Service
from toisio.web import LimitsMiddleware

log = logging.getLogger("toisio.api")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


@asynccontextmanager
async def _stage_reactions(svc: Service, settle: bool = False):
    """While the API runs, a permit that ends through it stops its running workspace at once, and (with a Prefect
    server in ``PREFECT_API_URL``) every step recorded through it resumes or starts the flow run that follows its
    case or output request (:mod:`flows.follow`).  ``settle``: then :func:`settle_memory` (a server process)."""
    from flows import follow
    from secure_env.workspace.server import enforce_permit_events, withdraw_permit_events
    from toisio import events

    handler = enforce_permit_events(lambda: svc)
    follower = follow.install(svc)
    if settle:
        settle_memory()
    try:
        yield
    finally:
        withdraw_permit_events(handler)
        if follower is not None:
            events.unsubscribe("*", follower)


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


async def oidc_claims(oidc, request: Request) -> dict:
    """The provider's answer at the callback, verified by authlib (signature, issuer, audience, nonce), as the
    ID token's claims; a refused or failed answer is a user error, never a traceback (API and portal)."""
    import httpx
    from authlib.integrations.base_client.errors import OAuthError

    try:
        token = await oidc.authorize_access_token(request)
    except OAuthError as exc:
        raise Unauthenticated(f"the identity provider's answer was refused: {exc.error}", code="oidc_failed") from None
    except httpx.HTTPError as exc:
        log.warning("identity provider failed: %s", exc)
        raise Unavailable("the identity provider did not answer properly; try again later",
                          code="oidc_provider_error") from None
    return dict(token.get("userinfo") or {})


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
        claims = await oidc_claims(oidc, request)
        new = await run_in_threadpool(identity.login_oidc, svc, claims, token_name="oidc",
                                      require_mfa=svc.settings.oidc_require_mfa)
        return _new_token_out(new)


def _offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc with their scripts served from the installed package (no CDN:
    the pages work on a host without internet)."""
    from importlib import resources

    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    static = resources.files("fastapi_offline").joinpath("static")
    app.mount("/api/docs-static", StaticFiles(directory=str(static)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    def swagger():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Toisio API",
                                   swagger_js_url="/api/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url="/api/docs-static/swagger-ui.css",
                                   swagger_favicon_url="/api/docs-static/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc():
        return get_redoc_html(openapi_url="/openapi.json", title="Toisio API",
                              redoc_js_url="/api/docs-static/redoc.standalone.js",
                              redoc_favicon_url="/api/docs-static/favicon.png", with_google_fonts=False)


class AuditEventOut(BaseModel):
    seq: int
    ts: str
    actor: str
    action: str
    subject: str
    payload: dict
    entry_hash: str


class VerificationOut(BaseModel):
    ok: bool
    checked: int
    first_bad_seq: int | None
    summary: str
    changed_behind_the_log: list[tuple[str, str]]


class IndicatorOut(BaseModel):
    indicator: str
    kind: str
    purpose: str
    period: str
    value: float
    p90: float | None
    n: int | None


def _audit_routes(app: FastAPI, svc: Service, actor) -> None:

    @app.get("/api/v1/audit", tags=["audit"])
    def audit_search(response: Response, subject: str | None = Query(None, max_length=200),
                     action: str | None = Query(None, max_length=100), by: str | None = Query(None, max_length=200),
                     since: str | None = Query(None, max_length=32), limit: int = Query(100, ge=1, le=500),
                     offset: int = Query(0, ge=0), a: Actor = Depends(actor)) -> list[AuditEventOut]:
        """Audit events, newest first (auditors; the search is itself audited)."""
        found = search(svc, a, subject=subject, action=action, by=by, since=since, limit=limit, offset=offset)
        response.headers["X-Total-Count"] = str(found.total)
        return [AuditEventOut(seq=e.seq, ts=e.ts, actor=e.actor, action=e.action, subject=e.subject,
                              payload=e.payload, entry_hash=e.entry_hash) for e in found.events]

    @app.get("/api/v1/audit/verify", tags=["audit"])
    def audit_verify(a: Actor = Depends(actor)) -> VerificationOut:
        """Verify the whole chain against its head, then every case, user and token against the chain."""
        v = verify_all(svc, a)
        return VerificationOut(ok=v.ok, checked=v.checked, first_bad_seq=v.first_bad_seq, summary=v.summary,
                               changed_behind_the_log=list(v.changed_behind_the_log))

    @app.get("/api/v1/indicators", tags=["audit"])
    def indicators_json(a: Actor = Depends(actor)) -> list[IndicatorOut]:
        """The indicators report (handlers, deciders, auditors)."""
        return [IndicatorOut(**i.__dict__) for i in indicators(svc, a)]


class ChannelBody(BaseModel):
    channel: Literal["email", "inbox"] = Field(description="email: by e-mail and in the inbox; inbox: the inbox only")


class RetentionOut(BaseModel):
    permit_id: str
    state: str
    ended_on: date | None
    delete_after: date | None = Field(description="from when it is deleted (none while the permit is in force)")
    held: list[Held]


def _retention_routes(app: FastAPI, svc: Service, actor) -> None:
    @app.get("/api/v1/permits/{permit_id}/retention", tags=["data lifecycle"])
    def permit_retention(permit_id: str, a: Actor = Depends(actor)) -> RetentionOut:
        """What each stage holds for the permit (workspace, deliveries, quarantines, unreleased outputs) and from
        when it is deleted (handlers, auditors)."""
        r = retention(svc, a, permit_id)
        return RetentionOut(permit_id=r.permit_id, state=r.state, ended_on=r.ended_on, delete_after=r.delete_after,
                            held=list(r.held))


def _notification_routes(app: FastAPI, svc: Service, actor) -> None:
    @app.get("/api/v1/notifications", tags=["notifications"])
    def inbox(limit: int = Query(50, ge=1, le=500), a: Actor = Depends(actor)) -> list[notify.Notification]:
        """Your messages, newest first, in your language (the notifier job queues them from the audit chain)."""
        return notify.inbox(svc, a, limit=limit)

    @app.post("/api/v1/notifications/read", tags=["notifications"])
    def read_all(a: Actor = Depends(actor)) -> dict[str, int]:
        """Mark all your messages read."""
        return {"marked": notify.mark_read(svc, a)}

    @app.put("/api/v1/me/notifications", tags=["notifications"])
    def channel(body: ChannelBody, a: Actor = Depends(actor)) -> ChannelBody:
        """How you are told: by e-mail (and in the inbox), or in the inbox only."""
        notify.set_channel(svc, a, body.channel)
        return body


def _statistics_routes(app: FastAPI, svc: Service, actor) -> None:
    """A data request's statistics: produced by the service from the data in its own area, then reviewed and
    released through the output routes like any output (two independent checkers)."""
    @app.post("/api/v1/permits/{permit_id}/statistics", tags=["data requests"], status_code=201)
    def produce(permit_id: str, a: Actor = Depends(actor)) -> RequestStateOut:
        """Compute the tabulation plan's tables with the disclosure checks, and submit them for two-person review
        (a handler or the service; the data request must be in force and its extraction delivered)."""
        return RequestStateOut(request_id=produce_statistics(svc, a, permit_id), state="submitted")

    @app.get("/api/v1/permits/{permit_id}/statistics", tags=["data requests"])
    def statistics(permit_id: str, a: Actor = Depends(actor)) -> list[OutputSummary]:
        """The output requests of a permit the caller may see (for a data request: its statistics, and once
        released, the files its holder downloads from /api/v1/outputs/{request_id}/released/{name})."""
        return [OutputSummary(**r) for r in requests_for_permit(svc, a, permit_id)]


class RequestLog:
    """Every request is logged with its status and the authenticated user it ran as (the audit log has what it
    changed).  Plain ASGI: it wraps ``send`` only, without copying the response as ``BaseHTTPMiddleware`` does."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = [500]

        async def sending(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info("%s %s -> %s as %s", scope["method"], scope["path"], status[0],
                     scope.get("state", {}).get("user_id", "(not signed in)"))


class DatabaseLost:
    """A database connection lost under a request (:func:`toisio.db.lost_connection`) is answered 503
    ``database_unavailable``, as JSON under /api and as a page elsewhere, by this middleware around the whole
    app: also when it happens before a route runs (the portal loading its session), and without the connection
    to the client being closed, as it is after an unexpected error."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = [False]

        async def sending(message):
            if message["type"] == "http.response.start":
                started[0] = True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            lost = lost_connection(exc)
            if lost is None or started[0]:
                raise
            log.warning("%s on %s %s", lost, scope["method"], scope["path"])
            if scope["path"].startswith("/api/"):
                response = _error(lost.http_status, lost.code, str(lost))
            else:  # the portal may not have its session, nor with it the language: all three
                response = HTMLResponse(_UNAVAILABLE_PAGE, status_code=lost.http_status)
            await response(scope, receive, send)


def configure_serve_logging() -> logging.Logger:
    """INFO logging to standard error for ``toisio serve`` (unless the process configured logging already)."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("toisio").setLevel(min(logging.getLogger().level, logging.INFO) or logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a client's every request (the Prefect worker's polls)
    return logging.getLogger("toisio.serve")


# A portal page for a database lost before the portal could load the session (and with it the language): the
# three languages at once, nothing that needs the database.
_UNAVAILABLE_PAGE = """<!doctype html>
<html lang="fi"><head><meta charset="utf-8"><title>Toisio</title></head>
<body><main><h1>Toisio</h1>
<p>Yhteys tietokantaan katkesi ennen kuin pyynt\u00f6 valmistui: yrit\u00e4 uudelleen.
Jos l\u00e4hetit muutoksen, tarkista ensin, tallentuiko se.</p>
<p lang="sv">Anslutningen till databasen br\u00f6ts innan beg\u00e4ran var klar: f\u00f6rs\u00f6k igen.
Om du skickade en \u00e4ndring, kontrollera f\u00f6rst om den sparades.</p>
<p lang="en">The connection to the database was lost before the request finished: try again.
If you sent a change, check first whether it was saved.</p>
<p><a href="">Yrit\u00e4 uudelleen / F\u00f6rs\u00f6k igen / Try again</a></p>
<p><small>database_unavailable</small></p></main></body></html>
"""


def app_from_environment() -> FastAPI:
    """The app of the service configured in the environment: what each worker process of
    ``toisio serve --workers N`` runs."""
    from toisio.service import service

    configure_serve_logging()
    return create_app(service(), settle=True)


def settle_memory() -> None:
    """Before a server process takes requests (its app built and started, Prefect's modules imported): collect
    once, then move every object alive (modules, routes, models: about 400,000) out of the collector's sight
    (``gc.freeze``), and collect the youngest generation after 20,000 new objects instead of 700.

    Without it each full collection walks the startup's objects again.  Measured in the server process over 10 s
    of 50 clients reading a case (one process, PostgreSQL, two runs each): without either, 5-6 full collections
    of 240 ms each and about 800 young ones, 1.3-1.7 s of the 10 s in all, every request of the process stalled
    during each; frozen, full collections took 10-14 ms and all of them 0.35-0.4 s; frozen with the larger
    threshold, none ran.  Nearly every object a request makes is freed by its reference count, so few are left
    for the collector; the threshold only spaces out its visits.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def create_app(svc: Service, *, settle: bool = False) -> FastAPI:
    """The API bound to one service instance; ``settle`` for a server process (:func:`settle_memory` once
    started; not in tests, where frozen objects would outlive each test's app)."""
    app = FastAPI(title="Toisio", version="1",
                  description="Secondary use of health and social data: the catalogue, applications, decisions, "
                              "permits, workspaces, output requests and the audit log.",
                  lifespan=lambda _app: _stage_reactions(svc, settle), docs_url=None, redoc_url=None)
    _offline_docs(app)
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

    app.add_middleware(DatabaseLost)
    app.add_middleware(RequestLog)  # outside it, so that the log has the status the client got

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
    def rotate_token(token_id: str, days: int = Query(identity.TOKEN_DAYS, ge=1, le=identity.TOKEN_MAX_DAYS),
                     a: Actor = Depends(actor)) -> NewTokenOut:
        return _new_token_out(identity.rotate_token(svc, a, token_id, days=days))

    @app.delete("/api/v1/tokens/{token_id}", tags=["identity"])
    def revoke_token(token_id: str, a: Actor = Depends(actor)) -> TokenOut:
        return _token_out(identity.revoke_token(svc, a, token_id))

    _audit_routes(app, svc, actor)
    _statistics_routes(app, svc, actor)
    _notification_routes(app, svc, actor)
    _retention_routes(app, svc, actor)
    app.include_router(catalogue_router())
    app.include_router(permits_router(svc, actor))
    app.include_router(workspace_router(svc, actor))
    app.include_router(airlock_router(svc, actor))
    from toisio.app.portal import create_portal

    app.mount("/", create_portal(svc))  # the portal: everything not under /api, /docs, /redoc or /openapi.json
    return app
