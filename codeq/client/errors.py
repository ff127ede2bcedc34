"""The client's exceptions: one per error the API answers, by HTTP status and code."""

from __future__ import annotations

from typing import Any


class CodeqError(Exception):
    """An error answer of the codeQ API (or no answer at all: ``Unavailable``)."""

    status: int = 0

    def __init__(self, message: str, *, status: int = 0, code: str = "",
                 field: str | None = None, scope: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status or self.status
        self.code = code
        self.field = field
        self.scope = scope


class BadRequest(CodeqError):
    status = 400


class Unauthorized(CodeqError):
    status = 401


class Forbidden(CodeqError):
    """403: a scope or command the token lacks, or another worker's lease (NOT_OWNER)."""

    status = 403


class NotFound(CodeqError):
    status = 404


class Conflict(CodeqError):
    """409: the task is not in the state the call needs (NOT_IN_PROGRESS,
    LEASE_EXPIRED, STALE_LEASE)."""

    status = 409


class PayloadTooLarge(CodeqError):
    status = 413


class RateLimited(CodeqError):
    status = 429

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class Unavailable(CodeqError):
    """503, or no answer: the store or the service is down for now."""

    status = 503


BY_STATUS: dict[int, type[CodeqError]] = {
    cls.status: cls for cls in (BadRequest, Unauthorized, Forbidden, NotFound, Conflict,
                                PayloadTooLarge, RateLimited, Unavailable)}


def error_of(status: int, body: dict[str, Any], retry_after: str | None) -> CodeqError:
    """Return the exception an error answer stands for."""
    cls = BY_STATUS.get(status, CodeqError)
    kw: dict[str, Any] = {"status": status, "code": str(body.get("code", "")),
                          "field": body.get("field"), "scope": body.get("scope")}
    message = str(body.get("error") or f"HTTP {status}")
    if cls is RateLimited:
        try:
            kw["retry_after"] = float(retry_after or 1)
        except ValueError:
            kw["retry_after"] = 1.0
    return cls(message, **kw)
