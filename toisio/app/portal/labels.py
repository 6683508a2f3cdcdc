"""Plain words for the codes the portal shows (states, events, purposes, roles, outcomes), as translatable
English; the Babel catalogues give them in Finnish and Swedish.  ``tests/unit/test_i18n.py`` checks
that every state, event, purpose, kind and role of the stages has a label here."""

from __future__ import annotations

from collections.abc import Callable

from permits.decision import WORDS


def N_(text: str) -> str:
    """Mark a string for extraction without translating it here."""
    return text


LABELS: dict[str, str] = {
    # case states, as the applicant reads them
    "draft": N_("Draft"), "submitted": N_("Submitted"), "returned": N_("Returned for more information"),
    "complete": N_("Complete"), "estimates_requested": N_("Estimates asked from the data controllers"),
    "estimates_received": N_("Estimates received"), "estimate_sent": N_("Estimate sent to the applicant"),
    "accepted": N_("Estimate accepted"), "presented": N_("Presented for decision"), "approved": N_("Approved"),
    "rejected": N_("Rejected"), "extraction": N_("Data being extracted"), "delivered": N_("Data delivered"),
    "active": N_("Permit in force"), "expired": N_("Expired"), "closed": N_("Closed"), "revoked": N_("Revoked"),
    "withdrawn": N_("Withdrawn"), "deleted": N_("Deleted"),
    # events of the timeline
    "created": N_("Application started"), "resubmitted": N_("Resubmitted"), "sent_back": N_("Sent back to the handler"),
    "completeness_confirmed": N_("Found complete"), "estimate_recorded": N_("A controller's estimate recorded"),
    "extraction_started": N_("Extraction started"), "activated": N_("Workspace opened"),
    "handler_assigned": N_("Handler assigned"), "deadline_extended": N_("Decision deadline extended"),
    "amended": N_("Permit amended"), "remarked": N_("Message"), "reminded": N_("Reminder sent"),
    # roles and whom a case waits for
    "applicant": N_("Applicant"), "member": N_("Named user"), "handler": N_("Handler"), "decider": N_("Decider"),
    "controller": N_("Data controller"), "output_checker": N_("Output checker"), "auditor": N_("Auditor"),
    "system": N_("The service"), "operator": N_("Operator"), "service": N_("The service"),
    # output requests and files
    "pending": N_("Being prepared"), "partially_reviewed": N_("One review in"), "reviewed": N_("Reviewed"),
    "released": N_("Released"), "changes_requested": N_("Changes requested"), "conflicted": N_("Reviewers disagree"),
    "approve": N_("Approve"), "reject": N_("Reject"), "request_changes": N_("Request changes"),
    "pass": N_("Passed"), "fail": N_("Failed"), "review": N_("Needs review"),
    "supporting": N_("Supporting file (not released)"), "public": N_("Public"),
    "private": N_("Private to the output checkers"), "requested": N_("Waiting for a data steward"),
    # deadlines
    "near": N_("Due soon"), "overdue": N_("Overdue"), "ok": N_("On time"), "decision": N_("Decision"),
    "controller estimate": N_("Controller estimate"), "completeness check": N_("Completeness check"),
    # kinds, purposes and the generalisations a decision states (one list, in permits.decision)
    **WORDS,
}

#: the actions a user takes on a case, as buttons
ACTION_LABELS: dict[str, str] = {
    "submit": N_("Submit"), "delete_draft": N_("Delete the draft"), "return": N_("Return for more information"),
    "resubmit": N_("Resubmit"), "confirm_complete": N_("Confirm complete"),
    "request_estimates": N_("Ask the controllers for estimates"), "record_estimate": N_("Record an estimate"),
    "send_estimate": N_("Send the estimate to the applicant"),
    "accept": N_("Accept the estimate, the extraction description and the terms of use"),
    "present": N_("Present for decision"), "send_back": N_("Send back to the handler"),
    "approve": N_("Approve"), "reject": N_("Reject"), "start_extraction": N_("Start the extraction"),
    "mark_delivered": N_("Record the delivery"), "activate": N_("Open the workspace"), "close": N_("Close the case"),
    "revoke": N_("Revoke the permit"), "withdraw": N_("Withdraw the application"),
    "assign_handler": N_("Assign a handler"), "extend_deadline": N_("Extend the decision deadline"),
    "amend": N_("Amend"), "expire": N_("Expire"), "remind": N_("Remind"), "remark": N_("Write a message"),
}

#: the fields of the actions' forms
FIELD_LABELS: dict[str, str] = {
    "reason": N_("Reason"), "reasons": N_("Reasons"), "summary": N_("Summary for the decider"),
    "registry": N_("Registry"), "cost_eur": N_("Cost (EUR)"), "working_days": N_("Working days"),
    "valid_from": N_("Valid from"), "valid_until": N_("Valid until"), "work_hours": N_("Handling work (hours)"),
    "manifest_sha256": N_("Delivery manifest SHA-256"), "handler_id": N_("Handler's user id"),
    "months": N_("Months"), "text": N_("Message"), "public": N_("Visible to the applicant"),
}


def label(value: object, gettext: Callable[[str], str]) -> str:
    """The translated plain word for a code (the code itself, spaced, when it has none)."""
    text = str(getattr(value, "value", value))
    return gettext(LABELS[text]) if text in LABELS else text.replace("_", " ")
