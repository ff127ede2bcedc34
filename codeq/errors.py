"""Every failure codeQ reports, each with a stable code and HTTP status.

Lua scripts return small integer codes; ``SCRIPT_ERRORS`` maps them to these
classes, and one falcon error handler turns any of them into
``{"error": message, "code": code}``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CodeqError(Exception):
    """Base of every error codeQ reports to a client."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL"
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, **detail: Any) -> None:
        self.message = message or self.default_message
        self.detail = detail
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        body.update(self.detail)
        return body


class BadRequest(CodeqError):
    status = 400
    code = "BAD_REQUEST"
    default_message = "invalid request"


class Unauthorized(CodeqError):
    status = 401
    code = "UNAUTHORIZED"
    default_message = "missing or invalid credentials"
    challenge: ClassVar[str] = 'Bearer realm="codeq"'  # the WWW-Authenticate header


class InvalidToken(Unauthorized):
    code = "INVALID_TOKEN"
    default_message = "invalid token"
    challenge = 'Bearer realm="codeq", error="invalid_token"'


class Forbidden(CodeqError):
    status = 403
    code = "FORBIDDEN"
    default_message = "not allowed"


class MissingScope(Forbidden):
    code = "MISSING_SCOPE"
    default_message = "the token lacks a scope this call needs"


class CommandNotAllowed(Forbidden):
    code = "COMMAND_NOT_ALLOWED"
    default_message = "the token may not take this command"


class NotOwner(CodeqError):
    status = 403
    code = "NOT_OWNER"
    default_message = "the task's lease belongs to another worker"


class NotFound(CodeqError):
    status = 404
    code = "NOT_FOUND"
    default_message = "not found"


class TaskNotFound(NotFound):
    code = "TASK_NOT_FOUND"
    default_message = "task not found"


class ResultNotFound(NotFound):
    code = "RESULT_NOT_FOUND"
    default_message = "the task has no result yet"


class RateLimited(CodeqError):
    status = 429
    code = "RATE_LIMITED"
    default_message = "too many requests"

    def __init__(self, message: str | None = None, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SubscriptionNotFound(NotFound):
    code = "SUBSCRIPTION_NOT_FOUND"
    default_message = "subscription not found (unknown, deleted or expired)"


class MethodNotAllowed(CodeqError):
    status = 405
    code = "METHOD_NOT_ALLOWED"
    default_message = "method not allowed"


class Conflict(CodeqError):
    status = 409
    code = "CONFLICT"


class NotInProgress(Conflict):
    code = "NOT_IN_PROGRESS"
    default_message = "the task is not in progress"


class LeaseExpired(Conflict):
    code = "LEASE_EXPIRED"
    default_message = "the lease has expired"


class StaleLease(Conflict):
    code = "STALE_LEASE"
    default_message = "the lease token is not the task's current lease"


class RequestTimeout(CodeqError):
    status = 408
    code = "REQUEST_TIMEOUT"
    default_message = "the request was not received in time"


class PayloadTooLarge(CodeqError):
    status = 413
    code = "PAYLOAD_TOO_LARGE"
    default_message = "request body too large"


class UnsupportedMediaType(CodeqError):
    status = 415
    code = "UNSUPPORTED_MEDIA_TYPE"
    default_message = "request body must be application/json"


class HeadersTooLarge(CodeqError):
    status = 431
    code = "HEADERS_TOO_LARGE"
    default_message = "request line and headers too large"


class StoreUnavailable(CodeqError):
    status = 503
    code = "STORE_UNAVAILABLE"
    default_message = "store unavailable"


class ScriptError(CodeqError):
    """A script returned a code the table does not know (a bug, not input)."""

    code = "SCRIPT_ERROR"


# Codes returned by the Lua scripts as {code, ...}; 0 is success.
SCRIPT_ERRORS: dict[int, type[CodeqError]] = {
    1: TaskNotFound,
    2: NotInProgress,
    3: NotOwner,
    4: StaleLease,
    5: LeaseExpired,
    6: ResultNotFound,
}


def script_error(code: int) -> CodeqError:
    """Return the error for a script's status code."""
    cls = SCRIPT_ERRORS.get(code)
    if cls is None:
        return ScriptError(f"script returned unknown code {code}")
    return cls()
