"""The application lifecycle as data: states, events and the one transition table.

A case's state is never stored as the truth: it is derived by folding its events
through :data:`TRANSITIONS` (:func:`state_after`).  The table follows Findata's
process and CSC REMS's events:

draft → submitted → (returned ↔ resubmitted) → completeness confirmed → controller
estimates requested → estimates received → estimate and extraction description sent
→ accepted by the applicant (scope frozen) → presented → decided (approved or
rejected) → extraction → delivered → active → expired | closed | revoked, and the
applicant may withdraw before the decision.
"""

from __future__ import annotations

from enum import StrEnum

from toisio.errors import Conflict


class State(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"
    RETURNED = "returned"
    COMPLETE = "complete"
    ESTIMATES_REQUESTED = "estimates_requested"
    ESTIMATES_RECEIVED = "estimates_received"
    ESTIMATE_SENT = "estimate_sent"
    ACCEPTED = "accepted"
    PRESENTED = "presented"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXTRACTION = "extraction"
    DELIVERED = "delivered"
    ACTIVE = "active"
    EXPIRED = "expired"
    CLOSED = "closed"
    REVOKED = "revoked"
    WITHDRAWN = "withdrawn"
    DELETED = "deleted"


class Event(StrEnum):
    CREATED = "created"
    SUBMITTED = "submitted"
    RETURNED = "returned"
    RESUBMITTED = "resubmitted"
    SENT_BACK = "sent_back"
    COMPLETENESS_CONFIRMED = "completeness_confirmed"
    ESTIMATES_REQUESTED = "estimates_requested"
    ESTIMATE_RECORDED = "estimate_recorded"
    ESTIMATE_SENT = "estimate_sent"
    ACCEPTED = "accepted"
    PRESENTED = "presented"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXTRACTION_STARTED = "extraction_started"
    DELIVERED = "delivered"
    ACTIVATED = "activated"
    EXPIRED = "expired"
    CLOSED = "closed"
    REVOKED = "revoked"
    WITHDRAWN = "withdrawn"
    DELETED = "deleted"
    # Events that record something without changing the state.
    HANDLER_ASSIGNED = "handler_assigned"
    DEADLINE_EXTENDED = "deadline_extended"
    AMENDED = "amended"
    REMARKED = "remarked"
    REMINDED = "reminded"


S, E = State, Event

# (state, event) -> next state.  Events absent for a state are illegal there.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.DRAFT, E.SUBMITTED): S.SUBMITTED,
    (S.DRAFT, E.DELETED): S.DELETED,
    (S.SUBMITTED, E.RETURNED): S.RETURNED,
    (S.SUBMITTED, E.COMPLETENESS_CONFIRMED): S.COMPLETE,
    (S.RETURNED, E.RESUBMITTED): S.SUBMITTED,
    (S.COMPLETE, E.RETURNED): S.RETURNED,
    (S.COMPLETE, E.ESTIMATES_REQUESTED): S.ESTIMATES_REQUESTED,
    (S.ESTIMATES_REQUESTED, E.ESTIMATE_RECORDED): S.ESTIMATES_REQUESTED,  # until every controller answered
    (S.ESTIMATES_RECEIVED, E.ESTIMATE_SENT): S.ESTIMATE_SENT,
    (S.ESTIMATE_SENT, E.ACCEPTED): S.ACCEPTED,
    (S.ESTIMATE_SENT, E.RETURNED): S.RETURNED,
    (S.COMPLETE, E.PRESENTED): S.PRESENTED,  # amendments need no extraction estimate
    (S.ACCEPTED, E.PRESENTED): S.PRESENTED,
    (S.PRESENTED, E.APPROVED): S.APPROVED,
    (S.PRESENTED, E.REJECTED): S.REJECTED,
    (S.PRESENTED, E.SENT_BACK): S.ACCEPTED,  # the decider sends the presentation back to the handler
    (S.APPROVED, E.EXTRACTION_STARTED): S.EXTRACTION,
    (S.EXTRACTION, E.DELIVERED): S.DELIVERED,
    (S.DELIVERED, E.ACTIVATED): S.ACTIVE,
    (S.ACTIVE, E.EXPIRED): S.EXPIRED,
    (S.ACTIVE, E.CLOSED): S.CLOSED,
    (S.EXPIRED, E.CLOSED): S.CLOSED,
}
# The applicant may withdraw at any point before the decision.
BEFORE_DECISION = (S.DRAFT, S.SUBMITTED, S.RETURNED, S.COMPLETE, S.ESTIMATES_REQUESTED, S.ESTIMATES_RECEIVED,
                   S.ESTIMATE_SENT, S.ACCEPTED, S.PRESENTED)
for _s in BEFORE_DECISION:
    TRANSITIONS[(_s, E.WITHDRAWN)] = S.WITHDRAWN
# The handler may return an application for more information while the estimates are being gathered,
# and may close (with a reason) a case that cannot go on before the decision, so that no open state
# leaves the authority without a way forward or out.
for _s in (S.ESTIMATES_REQUESTED, S.ESTIMATES_RECEIVED, S.ACCEPTED):
    TRANSITIONS[(_s, E.RETURNED)] = S.RETURNED
for _s in BEFORE_DECISION[1:]:
    TRANSITIONS[(_s, E.CLOSED)] = S.CLOSED
# The authority may revoke a granted permit at any point until it ends.
GRANTED = (S.APPROVED, S.EXTRACTION, S.DELIVERED, S.ACTIVE)
for _s in GRANTED:
    TRANSITIONS[(_s, E.REVOKED)] = S.REVOKED
# Events that annotate a case without moving it, allowed in these states.
ANNOTATIONS: dict[Event, tuple[State, ...]] = {
    E.HANDLER_ASSIGNED: (S.SUBMITTED, S.RETURNED, S.COMPLETE, S.ESTIMATES_REQUESTED, S.ESTIMATES_RECEIVED,
                         S.ESTIMATE_SENT, S.ACCEPTED, S.PRESENTED, S.APPROVED, S.EXTRACTION, S.DELIVERED,
                         S.ACTIVE),
    E.DEADLINE_EXTENDED: (S.COMPLETE, S.ESTIMATES_REQUESTED, S.ESTIMATES_RECEIVED, S.ESTIMATE_SENT, S.ACCEPTED,
                          S.PRESENTED),
    E.AMENDED: (S.APPROVED, S.EXTRACTION, S.DELIVERED, S.ACTIVE),
    E.REMARKED: tuple(s for s in State if s is not S.DELETED),
    E.REMINDED: (S.DRAFT,) + BEFORE_DECISION[1:],
}
TERMINAL = frozenset({S.REJECTED, S.CLOSED, S.REVOKED, S.WITHDRAWN, S.DELETED})
DECIDED = frozenset({S.APPROVED, S.REJECTED, S.EXTRACTION, S.DELIVERED, S.ACTIVE, S.EXPIRED, S.CLOSED,
                     S.REVOKED})
PERMIT_IN_FORCE = frozenset({S.APPROVED, S.EXTRACTION, S.DELIVERED, S.ACTIVE})

#: whom a case in each state waits for ("" when it waits for nobody): the queues and the portal's timeline
WAITING_FOR: dict[State, str] = {
    S.DRAFT: "applicant", S.SUBMITTED: "handler", S.RETURNED: "applicant", S.COMPLETE: "handler",
    S.ESTIMATES_REQUESTED: "controller", S.ESTIMATES_RECEIVED: "handler", S.ESTIMATE_SENT: "applicant",
    S.ACCEPTED: "handler", S.PRESENTED: "decider", S.APPROVED: "service", S.EXTRACTION: "service",
    S.DELIVERED: "handler", S.ACTIVE: "", S.REJECTED: "", S.EXPIRED: "", S.CLOSED: "", S.REVOKED: "",
    S.WITHDRAWN: "", S.DELETED: "",
}


class IllegalTransition(Conflict):
    """An event that the case's current state does not allow."""

    code = "illegal_state"

    def __init__(self, state: State, event: Event):
        allowed = sorted(e.value for (s, e) in TRANSITIONS if s == state)
        allowed += sorted(e.value for e, states in ANNOTATIONS.items() if state in states)
        super().__init__(
            f"'{event.value}' is not possible when the case is '{state.value}'; "
            f"possible: {', '.join(allowed) or 'nothing (the case is closed)'}"
        )
        self.state, self.event = state, event


def next_state(state: State, event: Event, *, all_estimates_in: bool = False) -> State:
    """The state after ``event``; raises :class:`IllegalTransition` if the event is not allowed.

    ``all_estimates_in`` moves a case from estimates requested to estimates received when
    the estimate just recorded was the last one outstanding.
    """
    if event in ANNOTATIONS:
        if state not in ANNOTATIONS[event]:
            raise IllegalTransition(state, event)
        return state
    try:
        new = TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(state, event) from None
    if event is E.ESTIMATE_RECORDED and all_estimates_in:
        return S.ESTIMATES_RECEIVED
    return new


def state_after(events: list[tuple[Event, bool]]) -> State:
    """Fold ``(event, all_estimates_in)`` pairs from the start; the first must be ``created``."""
    if not events or events[0][0] is not E.CREATED:
        raise ValueError("a case's history starts with 'created'")
    state = S.DRAFT
    for event, all_in in events[1:]:
        state = next_state(state, event, all_estimates_in=all_in)
    return state


def mermaid() -> str:
    """The state diagram in Mermaid syntax, generated from the table (used in docs)."""
    lines = ["stateDiagram-v2", "    [*] --> draft"]
    for (s, e), t in TRANSITIONS.items():
        lines.append(f"    {s.value} --> {t.value}: {e.value}")
    for s in sorted(TERMINAL, key=lambda x: x.value):
        lines.append(f"    {s.value} --> [*]")
    return "\n".join(lines)
