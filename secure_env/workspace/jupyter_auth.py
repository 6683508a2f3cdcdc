"""Who is acting in a workspace's Jupyter server, and what the server refuses whatever the browser asks.

Loaded by the generated server config (:mod:`secure_env.workspace.lockdown`).  Each analyst logs in with
their own token; the server never accepts a shared token.  A token or login cookie stops working
as soon as the analyst is no longer named on the permit or the permit is no longer in force: the
check runs on every request (cached for a few seconds).
"""

from __future__ import annotations

import contextvars
import time
from functools import cache

from jupyter_server.auth import Authorizer, IdentityProvider, User
from jupyter_server.base.handlers import JupyterHandler
from jupyter_server.utils import url_path_join
from tornado import web
from traitlets import default

from toisio.service import Service, service

REFUSED_RESOURCES = frozenset({"nbconvert", "terminals"})
#: Routes refused to everyone, whatever the method: installed ahead of every other route by the server
#: extension (some JupyterLab handlers never consult the authorizer).
REFUSED_ROUTES: tuple[str, ...] = (
    "files/",  # raw file download (the route is also removed)
    "lab/api/build",  # rebuilding JupyterLab
    "lab/api/extensions",  # installing or enabling extensions
    "lab/api/plugins",  # re-enabling locked plugins
)
RECHECK_SECONDS = 5.0
LOGIN_SESSION_SECONDS = 1800.0  # token requests from one analyst and address within this count as one login

#: The analyst behind the request being handled: set by the authorizer, read by the audit hooks.
current_analyst: contextvars.ContextVar[str] = contextvars.ContextVar("toisio_analyst", default="unknown")


@cache
def server_service() -> Service:
    """The service, built once per server process from the environment the workspace was started with."""
    return service()


def permit_of(handler) -> str:
    return handler.settings["toisio_permit"]


class WorkspaceIdentityProvider(IdentityProvider):
    """Maps a per-analyst token (or the login cookie it set) to the analyst, re-checking the permit."""

    _checked: dict[str, float]

    @default("token")
    def _token_default(self) -> str:
        # No shared server token: each analyst has their own (see _get_user).  Empty, so that the page
        # does not hand the browser a token to echo back; the browser then uses the login cookie.
        self.token_generated = False
        return ""

    def _authorised(self, permit: str, analyst: str) -> bool:
        from secure_env.workspace.provision import still_authorised

        checked = self.__dict__.setdefault("_checked", {})
        if time.monotonic() - checked.get(analyst, -1e9) < RECHECK_SECONDS:
            return True
        if still_authorised(server_service(), permit, analyst):
            checked[analyst] = time.monotonic()
            return True
        checked.pop(analyst, None)
        return False

    def _analyst_for(self, handler, token: str) -> str | None:
        from permits.permissions import PermissionDenied
        from secure_env.workspace.provision import WorkspaceError, analyst_for_token

        svc, permit = server_service(), permit_of(handler)
        try:
            return analyst_for_token(svc, permit, token)
        except (PermissionDenied, WorkspaceError) as exc:
            svc.record(actor="unknown", action="workspace.login_refused", subject=f"permit:{permit}",
                       payload={"reason": str(exc), "remote_ip": handler.request.remote_ip,
                                "path": handler.request.path})
            return None

    async def _get_user(self, handler) -> User | None:
        if getattr(handler, "_jupyter_current_user", None):
            return handler._jupyter_current_user
        permit = permit_of(handler)
        token = self.get_token(handler)
        cookie_user = self.get_user_cookie(handler)
        if token:
            analyst = self._analyst_for(handler, token)
            if analyst is None:
                return None
            user = User(username=analyst, name=analyst, display_name=analyst)
            if cookie_user is None or cookie_user.username != analyst:
                self.set_login_cookie(handler, user)
                logins = self.__dict__.setdefault("_logins", {})
                key = (analyst, handler.request.remote_ip)
                if time.monotonic() - logins.get(key, -1e9) > LOGIN_SESSION_SECONDS:
                    logins[key] = time.monotonic()
                    server_service().record(actor=analyst, action="workspace.login", subject=f"permit:{permit}",
                                            payload={"remote_ip": handler.request.remote_ip, "method": "token"})
            handler._token_authenticated = True
            self.__dict__.setdefault("_checked", {})[analyst] = time.monotonic()
            return user
        if cookie_user is not None:
            if self._authorised(permit, cookie_user.username):
                return cookie_user
            self.clear_login_cookie(handler)
        return None

    def process_login_form(self, handler) -> User | None:
        """The login page: the analyst types their token into the password field."""
        typed = handler.get_argument("password", default="")
        analyst = self._analyst_for(handler, typed) if typed else None
        if analyst is None:
            return None
        server_service().record(actor=analyst, action="workspace.login", subject=f"permit:{permit_of(handler)}",
                                payload={"remote_ip": handler.request.remote_ip, "method": "login form"})
        return User(username=analyst, name=analyst, display_name=analyst)

    @property
    def auth_enabled(self) -> bool:
        return True

    @property
    def login_available(self) -> bool:
        return True


class WorkspaceAuthorizer(Authorizer):
    """Refuse nbconvert, terminals and the :data:`REFUSED_ROUTES`; remember who is acting for the audit hooks."""

    def is_authorized(self, handler, user, action, resource) -> bool:
        current_analyst.set(user.username)
        if resource in REFUSED_RESOURCES:
            return False
        return not any(handler.request.path.startswith(handler.base_url + prefix) for prefix in REFUSED_ROUTES)


class RefusedRouteHandler(JupyterHandler):
    """Answers 403 on a refused route, for every method (a plain JSON body: the HTML error page would ask
    for the current user in a way jupyter_server 2 refuses, and log a traceback)."""

    def prepare(self):
        raise web.HTTPError(403, f"{self.request.path} is not available in a secure workspace")

    def write_error(self, status_code: int, **kwargs) -> None:
        import json

        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, web.HTTPError) and exc.log_message else self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message, "reason": self._reason}))


def refuse_routes(web_app, base_url: str) -> None:
    """Put :data:`REFUSED_ROUTES` in front of every other route of the server."""
    handlers = [(url_path_join(base_url, prefix) + ".*", RefusedRouteHandler) for prefix in REFUSED_ROUTES]
    web_app.add_handlers(".*$", handlers)
    rules = web_app.default_router.rules
    rules.insert(0, rules.pop(-2))  # add_handlers put it just before the catch-all; move it first
