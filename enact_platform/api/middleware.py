"""Under ``/api/`` every error answers with the error body, whether DEBUG is on or off.

Django's ``handler404``/``handler500`` are used only with DEBUG off; with it on (the embedded
default) an unknown path or a crash would answer with an HTML page that no API client can read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from enact_platform.api.errors import not_found, server_error

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
        logger.error("Internal Server Error: %s", request.path, exc_info=exception, extra={"request": request})
        return server_error(request)
