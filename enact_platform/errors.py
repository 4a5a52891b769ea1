"""The platform's one family of domain errors. Interfaces map them to responses in one place."""

from __future__ import annotations

from typing import Any


class PlatformError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidInput(PlatformError):
    code = "invalid_input"
    status = 400


class Unauthenticated(PlatformError):
    code = "unauthenticated"
    status = 401


class Forbidden(PlatformError):
    code = "forbidden"
    status = 403


class NotFound(PlatformError):
    code = "not_found"
    status = 404


class MethodNotAllowed(PlatformError):
    code = "method_not_allowed"
    status = 405


class Conflict(PlatformError):
    code = "conflict"
    status = 409


class PayloadTooLarge(PlatformError):
    code = "payload_too_large"
    status = 413


class QuotaExceeded(PlatformError):
    code = "quota_exceeded"
    status = 429


class ServerBusy(PlatformError):
    """The web process has more requests waiting than it takes, or no database connection came
    free in time: nothing was done, and the same request may be sent again after ``retry_after``."""

    code = "server_busy"
    status = 429

    @classmethod
    def retry_in(cls, seconds: int) -> ServerBusy:
        return cls(f"the server is busy; retry in {seconds} s", details={"retry_after": seconds})


class RateLimited(PlatformError):
    """Too many requests for one API key in the current minute."""

    code = "rate_limited"
    status = 429

    @classmethod
    def after(cls, wait_seconds: float) -> RateLimited:
        retry_after = max(1, int(wait_seconds + 0.999))
        return cls(
            f"too many requests for this API key; retry in {retry_after} s", details={"retry_after": retry_after}
        )
