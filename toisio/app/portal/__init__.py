"""The web portal: server-rendered pages (Jinja2, htmx served locally) for every role, in Finnish, Swedish
and English.  Mounted at ``/`` by :func:`toisio.app.api.create_app`, beside the REST API under ``/api``;
both call the same domain functions.  Pages are in :mod:`toisio.app.portal.pages`, the plumbing
(sessions, CSRF, language) in :mod:`toisio.app.portal.web`."""

from __future__ import annotations

import logging
import uuid
from importlib import resources
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starsessions import SessionAutoloadMiddleware, SessionMiddleware

from toisio.app.portal import pages
from toisio.app.portal.web import SESSION_HOURS, NeedsSignIn, Portal
from toisio.db import lost_connection
from toisio.errors import ToisioError
from toisio.service import Service
from toisio.sessions import DatabaseStore

log = logging.getLogger("toisio.portal")


def create_portal(svc: Service) -> FastAPI:
    """The portal bound to one service instance."""
    portal = Portal(svc)
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    static = resources.files("toisio.app.portal").joinpath("static")
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    pages.register(app, portal)
    _oidc(app, portal)

    @app.exception_handler(NeedsSignIn)
    async def _sign_in(request: Request, exc: NeedsSignIn):
        return portal.redirect(f"/login?next={quote(exc.next_path)}")

    @app.exception_handler(ToisioError)
    async def _coded(request: Request, exc: ToisioError):
        """A user's error: its message on a page, in the layout, with the status of the error."""
        actor = await portal.signed_in_or_none(request)
        return await portal.page(request, "error.html", exc.http_status, actor=actor, code=exc.code, message=str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return await portal.page(request, "error.html", 422, actor=await portal.signed_in_or_none(request),
                                 code="invalid_request", message=message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        actor = await portal.signed_in_or_none(request)
        return await portal.page(request, "error.html", exc.status_code, actor=actor,
                                 code="not_found" if exc.status_code == 404 else "http_error", message=str(exc.detail))

    @app.exception_handler(DBAPIError)  # answered inside the app, so the browser's connection stays open
    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        lost = lost_connection(exc)
        if lost is not None:
            log.warning("%s on %s %s", lost, request.method, request.url.path)
            return await portal.page(request, "error.html", lost.http_status, actor=None, code=lost.code,
                                     message=str(lost))
        ref = uuid.uuid4().hex[:12]
        log.exception("unexpected error (reference %s) on %s %s", ref, request.method, request.url.path)
        return await portal.page(request, "error.html", 500, actor=None, code="internal",
                                 message=f"reference {ref}")

    app.add_middleware(SessionAutoloadMiddleware)
    app.add_middleware(SessionMiddleware, store=DatabaseStore(svc.engine, max_lifetime=SESSION_HOURS * 3600),
                       lifetime=SESSION_HOURS * 3600, rolling=False, cookie_name="toisio_session",
                       cookie_same_site="lax", cookie_https_only=portal.secure, cookie_path="/")
    return app


def _oidc(app: FastAPI, portal: Portal) -> None:
    """Sign-in through the configured OpenID Connect provider (only when one is configured)."""
    from toisio.app.api import _oidc_client, oidc_claims

    oidc = _oidc_client(portal.svc)
    if oidc is None:
        return

    @app.get("/login/oidc")
    async def oidc_login(request: Request, next: str = "/"):
        request.session["oidc_next"] = pages._safe_next(next)
        base = portal.svc.settings.public_url.rstrip("/") or str(request.base_url).rstrip("/")
        return await oidc.authorize_redirect(request, base + "/login/oidc/callback")

    @app.get("/login/oidc/callback")
    async def oidc_callback(request: Request):
        from fastapi.concurrency import run_in_threadpool

        from toisio import identity

        claims = await oidc_claims(oidc, request)
        new = await run_in_threadpool(identity.login_oidc, portal.svc, claims, token_name="portal", days=1,
                                      require_mfa=portal.svc.settings.oidc_require_mfa)
        nxt = request.session.get("oidc_next", "/")
        portal.sign_in(request, new.value, new.info.user_id)
        return portal.redirect(nxt)
