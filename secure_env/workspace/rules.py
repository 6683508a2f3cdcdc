"""Who may do what to a permit's workspace: one table, checked by the workspace's own domain functions.

``named`` is the relation of an analyst named on the permit; the rest are service roles.  The
analysts themselves sign in to the running server with their workspace tokens; this table is for
the operations around it (create, start, stop, tokens, destroy, audit).  An operator on the service
host may control the processes (start, stop, status, destroy).
"""

from __future__ import annotations

from toisio.authz import PermissionDenied, Table, rule
from toisio.identity import Actor, Role

NAMED = "named"

WORKSPACE = Table("workspace", {
    "create": rule("create this workspace", {Role.HANDLER, Role.SYSTEM}),
    "start": rule("start this workspace", {Role.HANDLER, Role.SYSTEM, Role.OPERATOR, NAMED}),
    "stop": rule("stop this workspace", {Role.HANDLER, Role.SYSTEM, Role.OPERATOR, NAMED}),
    "status": rule("see this workspace's status", {Role.HANDLER, Role.SYSTEM, Role.AUDITOR, Role.OPERATOR, NAMED}),
    "token": rule("issue workspace login tokens", {Role.HANDLER, Role.SYSTEM}),
    "own_token": rule("get their own login link to this workspace (replacing their token)", {NAMED}),
    "destroy": rule("destroy this workspace", {Role.HANDLER, Role.SYSTEM, Role.OPERATOR}),
    "audit": rule("read this workspace's audit trail", {Role.HANDLER, Role.AUDITOR, Role.SYSTEM}),
}, {NAMED: "an analyst named on the permit"})

#: kept for the docs and older callers: action -> the roles and relations that may take it
WORKSPACE_ACTIONS = {a: r.allowed for a, r in WORKSPACE.rules.items()}


def relations(svc, actor: Actor, permit_id: str) -> frozenset[str]:
    """The actor's relations to the permit's workspace (``named`` if they are named on the permit)."""
    from permits.service import permit_access

    return frozenset({NAMED}) if actor.user_id in permit_access(svc, permit_id).users else frozenset()


def check_can_workspace(svc, actor: Actor, permit_id: str, action: str) -> str:
    """Raise :class:`PermissionDenied` saying who may, unless ``actor`` may take ``action`` on the permit's
    workspace; return the role or relation that grants it."""
    return WORKSPACE.check_can(action, actor, relations(svc, actor, permit_id))


def can_workspace(svc, actor: Actor, permit_id: str, action: str) -> bool:
    """Bool form of :func:`check_can_workspace`."""
    return WORKSPACE.can(action, actor, relations(svc, actor, permit_id))


def check_named_on_permit_in_force(svc, actor, permit_id: str, *, action: str, doing: str) -> None:
    """Raise :class:`PermissionDenied` unless the permit is in force and ``actor`` is named on it (who may ask
    for outputs from, or imports into, a permit's workspace); ``doing`` completes "may ..." in the message."""
    from permits.service import permit_access

    access = permit_access(svc, permit_id)
    if not access.in_force:
        raise PermissionDenied(f"permit {permit_id} is not in force ({access.reason})", action=action)
    if actor.user_id not in access.users:
        raise PermissionDenied(f"only the analysts named on permit {permit_id} ({', '.join(access.users)}) "
                               f"may {doing}", action=action)
