"""The API's errors as exceptions: one class per error code, all under ``EnactError``.

Every 4xx and 5xx answer of the API carries ``{"error": {"code", "message", "details"}}``; the
exception keeps all of it (``status``, ``code``, ``message``, ``details``, and the whole ``body``).
"""

from __future__ import annotations

import json
from typing import Any

import httpx


class EnactError(Exception):
    """An answer of the API that is an error, or no answer at all (``status`` 0)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "error",
        details: dict[str, Any] | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}" if status else f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details or {}
        self.body = body


class InvalidInput(EnactError):
    """400: malformed JSON, wrong types, unknown fields, an input its schema refuses, a bad cursor."""


class Unauthenticated(EnactError):
    """401: no API key, or one the server does not know (revoked)."""


class Forbidden(EnactError):
    """403: a read key writing."""


class NotFound(EnactError):
    """404: unknown, malformed and other tenants' ids alike."""


class MethodNotAllowed(EnactError):
    """405."""


class Conflict(EnactError):
    """409: not legal from the execution's current state (resume of a running execution)."""


class PayloadTooLarge(EnactError):
    """413: a body over the server's limit."""


class _RetryLater(EnactError):
    @property
    def retry_after(self) -> float:
        """Seconds to wait before sending the same request again (``Retry-After``)."""
        value = self.details.get("retry_after")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 1.0


class QuotaExceeded(EnactError):
    """429: the tenant's day quota, or its queue (``max_queued``), is full."""


class RateLimited(_RetryLater):
    """429: too many requests for this API key (or live connections); retry after ``retry_after``."""


class ServerBusy(_RetryLater):
    """429: the server took nothing of this request; send it again after ``retry_after``."""


class ServerError(EnactError):
    """5xx: the server failed."""


class ConnectionFailed(EnactError):
    """No answer: the server could not be reached, or the connection broke (``status`` 0)."""


BY_CODE: dict[str, type[EnactError]] = {
    "invalid_input": InvalidInput,
    "unauthenticated": Unauthenticated,
    "forbidden": Forbidden,
    "not_found": NotFound,
    "method_not_allowed": MethodNotAllowed,
    "conflict": Conflict,
    "payload_too_large": PayloadTooLarge,
    "quota_exceeded": QuotaExceeded,
    "rate_limited": RateLimited,
    "server_busy": ServerBusy,
    "server_error": ServerError,
}

# For an error answer without the error body (a proxy's page): the class its status implies.
BY_STATUS: dict[int, type[EnactError]] = {
    400: InvalidInput,
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
}


def error_from_response(response: httpx.Response) -> EnactError:
    """The exception for an error answer (its body must have been read)."""
    status = response.status_code
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code: str = error["code"]
        message = str(error.get("message", ""))
        raw_details = error.get("details")
        details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
        cls = BY_CODE.get(code) or BY_STATUS.get(status) or (ServerError if status >= 500 else EnactError)
    else:
        code = "server_error" if status >= 500 else f"http_{status}"
        message = response.text[:500] or response.reason_phrase
        details = {}
        cls = ServerError if status >= 500 else BY_STATUS.get(status, EnactError)
        body = response.text
    if issubclass(cls, _RetryLater) and "retry_after" not in details:
        header = response.headers.get("retry-after", "")
        if header.isdigit():
            details = {**details, "retry_after": int(header)}
    return cls(message, status=status, code=code, details=details, body=body)
