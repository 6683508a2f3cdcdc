"""Who may do what to an output request: one table, checked by the airlock's own domain functions,
and the rule that turns checkers' votes into a file's status (a pure function of the votes, the
submitted reviews and the policy).

Relations: ``requester`` (who made the request) and ``named`` (an analyst named on the permit).  A
reviewer must be an output checker who is neither; the service's own statistics for a data request
are put forward by a handler.
"""

from __future__ import annotations

from collections.abc import Sequence

from toisio.authz import Table, rule
from toisio.identity import Actor, Role

REQUESTER = "requester"
NAMED = "named"
HOLDER = "holder"

OUTPUTS = Table("output", {
    "create": rule("ask for outputs from this permit", {NAMED}),
    "create_for_service": rule("put the service's statistics forward for release", {Role.HANDLER, Role.SYSTEM}),
    "add_file": rule("add files to this request", {REQUESTER}),
    "describe_group": rule("give a group's context and disclosure controls", {REQUESTER}),
    "reply": rule("reply to the checkers' comments", {REQUESTER}),
    "submit": rule("submit this request", {REQUESTER}),
    "withdraw": rule("withdraw this request", {REQUESTER}),
    "view": rule("see this request", {REQUESTER, HOLDER, Role.OUTPUT_CHECKER, Role.AUDITOR}),
    "list": rule("list this permit's output requests (each still shown only to those who may see it)",
                 {NAMED, HOLDER, Role.HANDLER, Role.OUTPUT_CHECKER, Role.AUDITOR, Role.SYSTEM}),
    "review": rule("review this request's outputs", {Role.OUTPUT_CHECKER}, barred={REQUESTER, NAMED}),
    "release": rule("release this request's outputs", {Role.OUTPUT_CHECKER}, barred={REQUESTER, NAMED}),
    "download": rule("download this request's released files", {NAMED, HOLDER}),
    "discard": rule("discard a permit's unreleased outputs at its end", {Role.OPERATOR, Role.SYSTEM}),
}, {REQUESTER: "the request's author", NAMED: "an analyst named on the permit", HOLDER: "the permit holder"})

check_can_review, can_review_ = OUTPUTS.pair("review")


def relations(actor: Actor, *, requester: str | None, permit_users: Sequence[str],
              holder: str = "") -> frozenset[str]:
    """The actor's relations to an output request (its author; named on its permit; the permit's holder)."""
    out = set()
    if requester is not None and actor.user_id == requester:
        out.add(REQUESTER)
    if actor.user_id in permit_users:
        out.add(NAMED)
    if holder and actor.user_id == holder:
        out.add(HOLDER)
    return frozenset(out)


PUBLIC, PRIVATE = "public", "private"
#: who sees a comment of each visibility (besides its author and auditors), for the docs
VISIBILITIES = {
    PUBLIC: "the requester and the permit's holder, once the round's outcome is known; "
            "other checkers once they have submitted their own review",
    PRIVATE: "output checkers only, once they have submitted their own review",
}


def comment_visible(*, author: str, visibility: str, comment_round: int, viewer: str, requester: str,
                    viewer_reviews: bool, viewer_audits: bool, viewer_submitted: bool, current_round: int,
                    outcome_known: bool) -> bool:
    """Whether ``viewer`` sees a comment on an output request.

    * Its author and auditors always do; the requester's replies are seen by everyone who sees the request.
    * A checker's comment is blind to the other checkers until they have submitted their own review of that
      round (earlier rounds are open to them).
    * The requester (and the permit's holder) never see a private comment, and see a public one only once its
      round's outcome is known (the request returned, rejected or approved), as with the votes.
    """
    if visibility not in VISIBILITIES:
        raise ValueError(f"unknown comment visibility {visibility!r}")
    if author in (viewer, requester) or viewer_audits:
        return True
    if viewer_reviews:
        return comment_round < current_round or viewer_submitted
    return visibility == PUBLIC and (comment_round < current_round or outcome_known)


#: Why an approval of a file is refused, by the file's automatic check (ACRO's exceptions, SACRO's guidance: a
#: failing output leaves only when the analyst asked for an exception with a reason and every approving checker
#: recorded why they override the check).  ``None``: the approval may be recorded.
OVERRIDE_NEEDS = {
    "exception_missing": "the automatic check failed: the analyst must ask for an exception with a reason first",
    "override_reason_missing": "approving a file that failed the automatic check needs your reason for overriding "
                               "it",
}


def approval_refused(check_status: str, *, exception: str, reason: str) -> str | None:
    """The code from :data:`OVERRIDE_NEEDS` that refuses an approval of a file, or ``None`` when it may be approved.

    Only a ``fail`` of the automatic check blocks: ``pass`` and ``review`` files are approved on the checkers'
    judgement alone (a ``review`` is what they are there for).
    """
    if check_status != "fail":
        return None
    if not exception.strip():
        return "exception_missing"
    if not reason.strip():
        return "override_reason_missing"
    return None


#: what a panel that agrees decides
OUTCOME = {"approve": "approved", "reject": "rejected", "request_changes": "changes_requested"}


def file_status(decisions: Sequence[str], needed: int) -> str:
    """A file's status from the votes of the checkers who submitted their review, in the order they voted.

    The first ``needed`` votes (at least the first two when two have voted: a second opinion that
    disagrees is never ignored) form the panel.  A panel that agrees decides (approved only with at
    least ``needed`` approvals); a panel that disagrees is settled by the next vote, else the file is
    ``conflicted``.  Fewer than ``needed`` votes: ``pending``.
    """
    if needed < 1:
        raise ValueError("a file needs at least one approval")
    if len(decisions) < needed:
        return "pending"
    panel = list(decisions[:max(needed, min(len(decisions), 2))])
    if len(set(panel)) == 1:
        return OUTCOME[panel[0]]
    if len(decisions) > len(panel):
        return OUTCOME[decisions[len(panel)]]
    return "conflicted"
