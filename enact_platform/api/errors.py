"""One place that turns every error of the API into the error body of the contract:
``{"error": {"code": ..., "message": ..., "details": {...}}}``."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from psycopg_pool import PoolTimeout
from rest_framework import exceptions
from rest_framework.response import Response

from enact_platform.errors import PlatformError, RateLimited, ServerBusy

logger = logging.getLogger(__name__)

# DRF's own exceptions, by class, to the contract's codes.
_CODES: list[tuple[type[exceptions.APIException], str]] = [
    (exceptions.ParseError, "invalid_input"),
    (exceptions.ValidationError, "invalid_input"),
    (exceptions.NotAuthenticated, "unauthenticated"),
    (exceptions.AuthenticationFailed, "unauthenticated"),
    (exceptions.PermissionDenied, "forbidden"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
]


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def out_of_connections(exc: BaseException) -> bool:
    """True for a database error that only says no pooled connection came free in time."""
    return isinstance(exc, OperationalError) and isinstance(exc.__cause__, PoolTimeout)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, exceptions.Throttled):
        exc = RateLimited.after(exc.wait or 1)
    if out_of_connections(exc):
        logger.warning("no database connection came free in time: answered 429 server_busy")
        exc = ServerBusy.retry_in(1)
    if isinstance(exc, PlatformError):
        response = Response(exc.to_body(), status=exc.status)
        if exc.status == 401:
            response["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, RateLimited | ServerBusy):
            response["Retry-After"] = str(exc.details["retry_after"])
        return response
    if isinstance(exc, Http404):
        return Response(error_body("not_found", "not found"), status=404)
    if isinstance(exc, PermissionDenied):
        return Response(error_body("forbidden", "forbidden"), status=403)
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body("payload_too_large", str(exc)), status=413)
    if not isinstance(exc, exceptions.APIException):
        return None  # a bug: Django logs it and answers 500 with the body of ``server_error``
    code = next((c for cls, c in _CODES if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        response = Response(error_body(code, _first_message(exc.detail), {"fields": exc.detail}), status=400)
    else:
        response = Response(error_body(code, str(exc.detail)), status=exc.status_code)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        response.status_code = 401
        response["WWW-Authenticate"] = "Bearer"
    return response


def _first_message(detail: Any, path: str = "") -> str:
    """The first problem, with where it is: ``input.text: This field is required.``"""
    if isinstance(detail, dict):
        for key, value in detail.items():
            where = key if key != "non_field_errors" else ""
            return _first_message(value, f"{path}.{where}".strip(".") if where else path)
    if isinstance(detail, list) and detail:
        return _first_message(detail[0], path)
    return f"{path}: {detail}" if path else str(detail)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Unknown paths under the API answer with the error body; elsewhere, Django's page."""
    if not request.path.startswith("/api/"):
        return defaults.page_not_found(request, exception or Http404())
    return JsonResponse(error_body("not_found", f"no endpoint at {request.path}"), status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if not request.path.startswith("/api/"):
        return defaults.server_error(request)
    return JsonResponse(error_body("server_error", "the server failed; the error was logged"), status=500)
