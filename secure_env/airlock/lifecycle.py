"""Output request states and transitions (modelled on OpenSAFELY's airlock), as one table."""

from __future__ import annotations

from enum import StrEnum

from toisio.errors import Conflict


class RequestState(StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    PARTIALLY_REVIEWED = "partially_reviewed"
    REVIEWED = "reviewed"
    APPROVED = "approved"
    REJECTED = "rejected"
    RETURNED = "returned"
    RELEASED = "released"
    WITHDRAWN = "withdrawn"


class RequestEvent(StrEnum):
    SUBMIT = "submit"
    REVIEW_SUBMITTED = "review_submitted"  # one checker finished voting on every file
    APPROVE = "approve"
    REJECT = "reject"
    RETURN = "return"
    RESUBMIT = "resubmit"
    REVOKE_APPROVAL = "revoke_approval"
    RELEASE = "release"
    WITHDRAW = "withdraw"


S, E = RequestState, RequestEvent
TRANSITIONS: dict[tuple[RequestState, RequestEvent], RequestState] = {
    (S.PENDING, E.SUBMIT): S.SUBMITTED,
    (S.SUBMITTED, E.REVIEW_SUBMITTED): S.PARTIALLY_REVIEWED,
    (S.PARTIALLY_REVIEWED, E.REVIEW_SUBMITTED): S.REVIEWED,
    (S.REVIEWED, E.REVIEW_SUBMITTED): S.REVIEWED,  # a third checker settling a conflict
    (S.REVIEWED, E.APPROVE): S.APPROVED,
    (S.PARTIALLY_REVIEWED, E.APPROVE): S.APPROVED,  # only when every file is DP and the policy needs one checker
    (S.REVIEWED, E.REJECT): S.REJECTED,
    (S.REVIEWED, E.RETURN): S.RETURNED,
    (S.RETURNED, E.RESUBMIT): S.SUBMITTED,
    (S.APPROVED, E.REVOKE_APPROVAL): S.REVIEWED,
    (S.APPROVED, E.RELEASE): S.RELEASED,
}
for _s in (S.PENDING, S.SUBMITTED, S.PARTIALLY_REVIEWED, S.REVIEWED, S.RETURNED, S.APPROVED):
    TRANSITIONS[(_s, E.WITHDRAW)] = S.WITHDRAWN


class IllegalRequestTransition(Conflict):
    """An event that the output request's current state does not allow."""

    code = "illegal_state"

    def __init__(self, state: RequestState, event: RequestEvent):
        allowed = sorted(e.value for (s, e) in TRANSITIONS if s == state)
        super().__init__(f"'{event.value}' is not possible when the output request is '{state.value}'; "
                         f"possible: {', '.join(allowed) or 'nothing'}")


def next_request_state(state: RequestState, event: RequestEvent) -> RequestState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalRequestTransition(state, event) from None
