"""The portal's plumbing: server-side sessions, sign-in state, CSRF, language and page rendering.

* Sessions are starsessions over :class:`toisio.sessions.DatabaseStore`: the browser keeps a random id in
  an HttpOnly, SameSite=Lax cookie, Secure when ``TOISIO_PUBLIC_URL`` is https.  A signed-in session holds
  a short-lived API token (:data:`SESSION_HOURS`) of the user; every request re-checks it with
  :func:`toisio.identity.authenticate` (expired, revoked, deactivated or tampered: signed out).
* CSRF: fastapi-csrf-protect's double-submit token.  One pair per session: the signed half in an
  HttpOnly, SameSite=Strict cookie, the other in a hidden field of every form (and so of every htmx
  request, which posts the form).  Every POST is refused without it.
* Language: the user's stored choice, else the session's, else the browser's ``Accept-Language``;
  every page is rendered with the Babel catalogue of that language (:mod:`toisio.i18n`).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from importlib import resources
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi_csrf_protect import CsrfProtect
from fastapi_csrf_protect.exceptions import CsrfProtectError
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from toisio import i18n, identity
from toisio.errors import Forbidden, ToisioError, Unauthenticated
from toisio.identity import Actor, Role
from toisio.service import Service

SESSION_HOURS = 8
CSRF_FIELD = "csrf_token"
HTMX = "htmx-2.0.11.min.js"


class CsrfRefused(Forbidden):
    """A form posted without the session's CSRF token."""

    def __init__(self, why: str):
        super().__init__(f"the form was refused ({why}); reload the page and try again", code="csrf_refused")


def _csrf_class(secret: str, secure: bool) -> type[CsrfProtect]:
    """A CsrfProtect configured for one portal (its settings are class attributes, so each portal gets its
    own subclass instead of changing the library's global configuration)."""
    return type("PortalCsrf", (CsrfProtect,), {
        "_secret_key": secret, "_cookie_key": "toisio_csrf", "_cookie_samesite": "strict",
        "_cookie_secure": secure, "_httponly": True, "_max_age": SESSION_HOURS * 3600,
        "_token_location": "body", "_token_key": CSRF_FIELD})


@dataclass
class Page:
    """What every template gets besides its own context."""

    request: Request
    actor: Actor | None
    lang: str
    csrf: str


class Portal:
    """One portal bound to a service."""

    def __init__(self, svc: Service):
        self.svc = svc
        self.secure = svc.settings.public_url.startswith("https://")
        import hashlib

        secret = hashlib.sha256(b"toisio-portal-csrf" + svc.credential_key.value).hexdigest()
        self.csrf = _csrf_class(secret, self.secure)()

    @cached_property
    def templates_dir(self):
        return resources.files("toisio.app.portal").joinpath("templates")

    def env(self, lang: str) -> Environment:
        return _env(str(self.templates_dir), lang)

    # ------------------------------------------------------------ sign-in state

    def actor(self, request: Request) -> Actor | None:
        """The signed-in user, or None (a session whose token no longer authenticates is cleared)."""
        token = request.session.get("token")
        if not token:
            return None
        try:
            actor = identity.authenticate(self.svc, token)
        except Unauthenticated:
            request.session.clear()
            return None
        request.state.user_id = actor.user_id
        return actor

    def require(self, request: Request) -> Actor:
        actor = self.actor(request)
        if actor is None:
            raise NeedsSignIn(request.url.path)
        return actor

    async def signed_in(self, request: Request) -> Actor:
        """:meth:`require` in a worker thread: signing in reads the database, which must not hold up the event
        loop (and with it every other request of this process)."""
        return await run_in_threadpool(self.require, request)

    async def signed_in_or_none(self, request: Request) -> Actor | None:
        """:meth:`actor` in a worker thread."""
        return await run_in_threadpool(self.actor, request)

    def sign_in(self, request: Request, token: str, user_id: str) -> None:
        from starsessions import regenerate_session_id

        regenerate_session_id(request)  # a new id at sign-in: a planted session id is worth nothing
        request.session.clear()
        request.session.update({"token": token, "user_id": user_id, "csrf": None})

    def sign_out(self, request: Request) -> None:
        token = request.session.get("token")
        if token:
            with contextlib.suppress(ToisioError):
                identity.sign_out(self.svc, token)
        request.session.clear()

    # ------------------------------------------------------------ language

    def lang(self, request: Request, actor: Actor | None) -> str:
        if actor is not None:
            chosen = identity.language_of(self.svc, actor)
            if chosen:
                return chosen
        return request.session.get("lang") or i18n.from_accept_language(request.headers.get("accept-language"))

    # ------------------------------------------------------------ CSRF

    def csrf_pair(self, request: Request) -> tuple[str, str]:
        pair = request.session.get("csrf")
        if not pair or time.time() - pair[2] > SESSION_HOURS * 3600 / 2:
            token, signed = self.csrf.generate_csrf_tokens()
            pair = [token, signed, time.time()]
            request.session["csrf"] = pair
        return pair[0], pair[1]

    async def check_csrf(self, request: Request) -> None:
        await request.form()
        try:
            await self.csrf.validate_csrf(request)
        except CsrfProtectError as exc:
            raise CsrfRefused(exc.message if hasattr(exc, "message") else str(exc)) from None

    # ------------------------------------------------------------ rendering

    def render(self, request: Request, template: str, status: int = 200, *, actor: Actor | None = None,
               **context: Any) -> HTMLResponse:
        lang = self.lang(request, actor)
        token, signed = self.csrf_pair(request)
        env = self.env(lang)
        html = env.get_template(template).render(
            page=Page(request, actor, lang, token), actor=actor, lang=lang, languages=i18n.LANGUAGES,
            csrf_field=Markup(f'<input type="hidden" name="{CSRF_FIELD}" value="{token}">'),
            htmx=HTMX, roles=Role, today=date.today(), nonce=secrets.token_urlsafe(8), **context)
        response = HTMLResponse(html, status_code=status)
        self.csrf.set_csrf_cookie(signed, response)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["Cache-Control"] = "no-store"
        return response

    async def page(self, request: Request, template: str, status: int = 200, *, actor: Actor | None = None,
                   **context: Any) -> HTMLResponse:
        """:meth:`render` in a worker thread (the user's language is read from the database, and a large page
        takes a while to render)."""
        return await run_in_threadpool(self.render, request, template, status, actor=actor, **context)

    def redirect(self, url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)


def dig(data: Any, path: str, default: Any = "") -> Any:
    """``data["a"]["b"]`` for ``"a.b"`` (the form's earlier value of a field), or ``default``."""
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return default
        data = data[part]
    return default if data is None else data


class NeedsSignIn(Exception):
    def __init__(self, next_path: str):
        self.next_path = next_path


_ENVS: dict[tuple[str, str], Environment] = {}


def _env(folder: str, lang: str) -> Environment:
    key = (folder, lang)
    if key not in _ENVS:
        env = Environment(loader=FileSystemLoader(folder), autoescape=select_autoescape(["html"]),
                          extensions=["jinja2.ext.i18n"])
        env.install_gettext_translations(i18n.translations(lang), newstyle=True)
        from toisio.app.portal import labels

        env.globals["label"] = lambda value: labels.label(value, i18n.gettext_for(lang))
        env.filters["label"] = env.globals["label"]
        env.globals["dig"] = dig
        from toisio.app.portal.forms import STEPS, step_of

        env.globals["step_of"] = step_of
        env.globals["steps"] = STEPS
        _ENVS[key] = env
    return _ENVS[key]
