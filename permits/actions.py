"""What each case action takes: one pydantic model per action (rules as data, one table).

The REST API publishes these models in its OpenAPI (one path per action); the service validates
every payload against them before anything else, whoever calls (API, CLI, flow).  Unknown keys
are refused, numbers have ranges, text has a size limit and must be valid Unicode (no unpaired
surrogates), and dates are dates.  The audit entry of an action is built by the service from the
validated fields and server-side facts only, never from what a client sent.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from permits.application import ApplicationForm
from toisio.text import MAX_TEXT, check_unicode

Reason = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
UserId = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._@-]+$")]


class ActionBody(BaseModel):
    """Base of every action body: frozen, no unknown keys, bounded valid text."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_max_length=MAX_TEXT)

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        return check_unicode(data)


class Empty(ActionBody):
    """The action takes nothing."""


class OptionalReason(ActionBody):
    reason: Reason | None = None


class NeedsReason(ActionBody):
    reason: Reason


class Resubmit(ActionBody):
    form: ApplicationForm | None = None


class RecordEstimate(ActionBody):
    registry: Annotated[str, Field(min_length=1, max_length=64)]
    cost_eur: Annotated[Decimal, Field(ge=0, le=10_000_000, max_digits=12, decimal_places=2)]
    working_days: Annotated[int, Field(ge=0, le=365)]


class Present(ActionBody):
    summary: Annotated[str, Field(max_length=MAX_TEXT)] = ""


class Approve(ActionBody):
    valid_from: date | None = None  # default: the decision date
    valid_until: date | None = None  # default: the end of the validity the application asked for
    work_hours: Annotated[float, Field(ge=0, le=2000)] = 0


class Reject(ActionBody):
    reasons: Reason


class MarkDelivered(ActionBody):
    manifest_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class AssignHandler(ActionBody):
    handler_id: UserId


class ExtendDeadline(ActionBody):
    months: Annotated[int, Field(ge=1, le=3)]  # the Act allows one extension of at most 3 months
    reason: Reason


class Remark(ActionBody):
    text: Reason
    public: bool = True  # False: internal to the authority


#: action -> the body it takes.  A test keeps this complete against permits.permissions.ACTIONS.
ACTION_BODIES: dict[str, type[ActionBody]] = {
    "submit": Empty,
    "delete_draft": OptionalReason,
    "return": NeedsReason,
    "resubmit": Resubmit,
    "confirm_complete": Empty,
    "request_estimates": Empty,
    "record_estimate": RecordEstimate,
    "send_estimate": Empty,
    "accept": Empty,
    "present": Present,
    "send_back": NeedsReason,
    "approve": Approve,
    "reject": Reject,
    "start_extraction": Empty,
    "mark_delivered": MarkDelivered,
    "activate": Empty,
    "expire": Empty,
    "close": OptionalReason,
    "revoke": NeedsReason,
    "withdraw": OptionalReason,
    "assign_handler": AssignHandler,
    "extend_deadline": ExtendDeadline,
    "amend": Empty,
    "remark": Remark,
    "remind": OptionalReason,
}


class BodyError(ValueError):
    """An action body that does not validate; ``errors`` holds every problem with its field path."""

    def __init__(self, action: str, errors: list[dict[str, Any]]):
        self.action, self.errors = action, errors
        detail = "; ".join(f"{e['field'] or '(body)'}: {e['message']}" for e in errors)
        super().__init__(f"'{action}' was given an invalid body: {detail}")


def parse_body(action: str, payload: dict[str, Any]) -> ActionBody:
    """The validated body of ``action`` (raises :class:`BodyError` naming every bad field)."""
    model = ACTION_BODIES[action]
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise BodyError(action, [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"],
                                  "type": e["type"]} for e in exc.errors(include_url=False)]) from None
