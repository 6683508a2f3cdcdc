"""Server-side refusals for a workspace's Jupyter server (authorizer named in the generated config)."""

from __future__ import annotations

from jupyter_server.auth import Authorizer

REFUSED_RESOURCES = frozenset({"nbconvert", "terminals"})


class WorkspaceAuthorizer(Authorizer):
    """Refuse nbconvert export, terminals and any /files/ route, whatever the browser asks."""

    def is_authorized(self, handler, user, action, resource) -> bool:
        if resource in REFUSED_RESOURCES:
            return False
        return not handler.request.path.startswith(handler.base_url + "files/")
