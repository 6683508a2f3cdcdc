"""One authorisation model: a table per stage, and the ``check_can`` / ``can`` pair built from it.

Each stage states who may take each of its actions as a :class:`Rule`: the service roles
(:class:`~toisio.identity.Role`) or *relations* to the object (``named`` on the permit, the
``requester`` of an output request...) that grant it, and the relations that bar it even then (an
output checker may not review a request they made or a permit they are named on).  The stage's
domain function computes the actor's relations to the object and calls the table's ``check_can``,
which raises :class:`PermissionDenied` saying who may; ``can`` is the same question as a bool for
screens that show or hide a button.  Whether the object's *state* allows the action is the stage's
lifecycle table's business.

Every table gets an exhaustive test (every action x every role x every relation) and is printed in
the docs from the same data (:func:`describe`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from toisio.errors import Forbidden
from toisio.identity import Actor, Role

#: how each service role reads in a message ("only a handler or the service may ...")
ROLE_READS = {
    Role.APPLICANT: "the applicant", Role.MEMBER: "a member of the case", Role.HANDLER: "a handler",
    Role.DECIDER: "a decider", Role.CONTROLLER: "a data controller", Role.OUTPUT_CHECKER: "an output checker",
    Role.AUDITOR: "an auditor", Role.SYSTEM: "the service", Role.OPERATOR: "an operator on the service host",
}


def either(words: Iterable[str]) -> str:
    """``a, b or c``."""
    words = sorted(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


class PermissionDenied(Forbidden):
    """An action refused to a user, saying who may take it (409 when the state, not the person, is wrong)."""

    def __init__(self, message: str, *, action: str, code: str = "forbidden"):
        super().__init__(message, code=code, http_status=409 if code == "illegal_state" else 403)
        self.action = action


@dataclass(frozen=True)
class Rule:
    """Who may take one action."""

    #: what the action does, completing "may ..." ("start this workspace")
    doing: str
    #: service roles or relations that grant the action
    allowed: frozenset[str]
    #: relations that bar the action even to someone allowed (conflicts of interest)
    barred: frozenset[str] = frozenset()


def rule(doing: str, allowed: Iterable[str], barred: Iterable[str] = ()) -> Rule:
    return Rule(doing, frozenset(str(a) for a in allowed), frozenset(str(b) for b in barred))


@dataclass(frozen=True)
class Table:
    """A stage's permission table with its relation names (as they read in messages)."""

    stage: str
    rules: Mapping[str, Rule]
    relations: Mapping[str, str]  # relation -> how it reads: "named" -> "an analyst named on the permit"

    def __post_init__(self) -> None:
        known = {r.value for r in Role} | set(self.relations)
        for action, r in self.rules.items():
            unknown = (r.allowed | r.barred) - known
            if unknown:
                raise ValueError(f"{self.stage}.{action}: unknown roles or relations {sorted(unknown)}")
            if r.barred - set(self.relations):
                raise ValueError(f"{self.stage}.{action}: only relations can bar an action")

    def _reads(self, grant: str) -> str:
        return self.relations.get(grant) or ROLE_READS.get(grant, grant)

    def check_can(self, action: str, actor: Actor, relations: Iterable[str] = ()) -> str:
        """Raise :class:`PermissionDenied` unless ``actor`` (holding ``relations`` to the object) may take
        ``action``; return the role or relation that grants it."""
        r = self.rules[action]
        held_relations = {str(x) for x in relations}
        unknown = held_relations - set(self.relations)
        if unknown:
            raise ValueError(f"{self.stage}: unknown relations {sorted(unknown)}")
        held = {str(x) for x in actor.roles} | held_relations
        usable = sorted(held & r.allowed)
        if not usable:
            who = either(self._reads(a) for a in r.allowed)
            raise PermissionDenied(f"{actor.user_id} may not {r.doing}: only {who} may",
                                   action=f"{self.stage}.{action}")
        barred = sorted(held_relations & r.barred)
        if barred:
            raise PermissionDenied(
                f"{actor.user_id} is {self._reads(barred[0])} and so may not {r.doing}; someone else who is "
                f"{either(self._reads(a) for a in r.allowed)} must", action=f"{self.stage}.{action}",
                code="conflict_of_interest")
        return usable[0]

    def can(self, action: str, actor: Actor, relations: Iterable[str] = ()) -> bool:
        """Bool form of :meth:`check_can`."""
        try:
            self.check_can(action, actor, relations)
        except PermissionDenied:
            return False
        return True

    def pair(self, action: str) -> tuple[Callable[..., str], Callable[..., bool]]:
        """The ``check_can_<action>`` / ``can_<action>`` pair for one action."""
        def check(actor: Actor, relations: Iterable[str] = ()) -> str:
            return self.check_can(action, actor, relations)

        def can(actor: Actor, relations: Iterable[str] = ()) -> bool:
            return self.can(action, actor, relations)

        check.__name__, can.__name__ = f"check_can_{action}", f"can_{action}"
        check.__doc__ = f"Raise PermissionDenied unless the actor may {self.rules[action].doing}."
        can.__doc__ = f"Whether the actor may {self.rules[action].doing}."
        return check, can

    def describe(self) -> str:
        """The table as Markdown (for the docs)."""
        lines = ["| action | who may | barred if |", "| --- | --- | --- |"]
        for name, r in self.rules.items():
            lines.append(f"| `{name}` ({r.doing}) | {either(self._reads(a) for a in r.allowed)} | "
                         f"{either(self._reads(b) for b in r.barred) if r.barred else '-'} |")
        return "\n".join(lines)
