"""Who may do what to a permit's workspace: one table, with a ``check_can``/``can`` pair.

``named`` means an analyst named on the permit (the permit's users); the other entries are
service roles.  The analysts themselves log in to the server with their own tokens; this table
is for the ``toisio workspace`` operations around it.
"""

from __future__ import annotations

from permits.permissions import PermissionDenied, Role

NAMED = "named"

WORKSPACE_ACTIONS: dict[str, frozenset[str]] = {
    "create": frozenset({Role.HANDLER, Role.SYSTEM}),
    "start": frozenset({Role.HANDLER, Role.SYSTEM, NAMED}),
    "stop": frozenset({Role.HANDLER, Role.SYSTEM, NAMED}),
    "status": frozenset({Role.HANDLER, Role.SYSTEM, Role.AUDITOR, NAMED}),
    "token": frozenset({Role.HANDLER, Role.SYSTEM}),
    "destroy": frozenset({Role.HANDLER, Role.SYSTEM}),
    "audit": frozenset({Role.HANDLER, Role.AUDITOR, Role.SYSTEM}),
}


def check_can_workspace(action: str, *, user: str, roles: frozenset[Role] | set[Role], named: bool) -> str:
    """Raise :class:`PermissionDenied` saying who may, unless ``user`` may take ``action``; return the role."""
    allowed = WORKSPACE_ACTIONS[action]
    held = {str(r) for r in roles} | ({NAMED} if named else set())
    usable = sorted(held & {str(r) for r in allowed})
    if not usable:
        who = ", ".join(sorted("analyst named on the permit" if r == NAMED else str(r) for r in allowed))
        raise PermissionDenied(f"{user} may not {action} this workspace: only {who} may", action=f"workspace.{action}")
    return usable[0]


def can_workspace(action: str, **kwargs) -> bool:
    """Bool form of :func:`check_can_workspace`."""
    try:
        check_can_workspace(action, **kwargs)
    except PermissionDenied:
        return False
    return True


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


def check_actor(svc, actor, permit_id: str, action: str) -> str:
    """:func:`check_can_workspace` for an :class:`~permits.service.Actor` on a permit (named from the permit)."""
    from permits.service import permit_access

    named = actor.user_id in permit_access(svc, permit_id).users
    return check_can_workspace(action, user=actor.user_id, roles=actor.roles, named=named)
