"""One error type for everything a user (or an operator) can cause.

Every such error is a :class:`ToisioError` with a stable ``code`` (for API clients and scripts) and an
HTTP status; its message says what is wrong and where.  The REST API turns any of them into
``{"error": {"code", "message"}}`` with the status, and every CLI prints ``refused (code): message``
and exits 1: one handler each, never a traceback for a user error.

The subclasses below carry the status; each stage's errors derive from the one that fits (and from
the built-in exception they used to be, so older ``except ValueError`` code keeps working).
"""

from __future__ import annotations


class ToisioError(Exception):
    """Base of every error with a stable code and an HTTP status."""

    code: str = "invalid_request"
    http_status: int = 400

    def __init__(self, message: str = "", *, code: str | None = None, http_status: int | None = None):
        super().__init__(message)
        if code:
            self.code = code
        if http_status:
            self.http_status = http_status


class Invalid(ToisioError, ValueError):
    """The input is malformed or breaks a rule (422)."""

    code, http_status = "invalid_request", 422


class Unauthenticated(ToisioError):
    """No, an unknown, an expired or a revoked credential (401)."""

    code, http_status = "unauthenticated", 401


class Forbidden(ToisioError, PermissionError):
    """Authenticated, but not allowed to do this (403)."""

    code, http_status = "forbidden", 403


class NotFoundError(ToisioError, LookupError):
    """No such thing (404)."""

    code, http_status = "not_found", 404


class Conflict(ToisioError, ValueError):
    """Not possible in the current state (409)."""

    code, http_status = "conflict", 409


class TooLarge(ToisioError):
    """The request or a part of it is over its size limit (413)."""

    code, http_status = "request_too_large", 413


class Unavailable(ToisioError, RuntimeError):
    """A part of the service this needs is not available here (503): a sandbox, Spark, a key store."""

    code, http_status = "unavailable", 503
