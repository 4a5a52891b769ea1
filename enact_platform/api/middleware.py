"""Under ``/api/`` every error answers with the error body, whether DEBUG is on or off.

Django's ``handler404``/``handler500`` are used only with DEBUG off; with it on (the embedded
default) an unknown path or a crash would answer with an HTML page that no API client can read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from enact_platform.api.errors import error_body, not_found, out_of_connections, server_error
from enact_platform.errors import ServerBusy

logger = logging.getLogger("django.request")


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/v1/")


class ApiErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if _is_api(request) and response.status_code == 404 and "json" not in response.get("Content-Type", ""):
            return not_found(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not _is_api(request):
            return None
        if out_of_connections(exception):
            busy = ServerBusy.retry_in(1)
            logger.warning("no database connection came free in time for %s: answered 429", request.path)
            response = JsonResponse(error_body(busy.code, busy.message, busy.details), status=busy.status)
            response["Retry-After"] = str(busy.details["retry_after"])
            return response
        logger.error("Internal Server Error: %s", request.path, exc_info=exception, extra={"request": request})
        return server_error(request)
