"""What the OpenAPI schema says of errors: every endpoint's error answers share one body."""

from __future__ import annotations

from drf_spectacular.utils import inline_serializer
from rest_framework import serializers as drf

ERROR = inline_serializer(
    "Error",
    {
        "error": inline_serializer(
            "ErrorDetail",
            {"code": drf.CharField(), "message": drf.CharField(), "details": drf.DictField()},
        )
    },
)
# 400 too: a session user in several tenants who names none.
READ_ERRORS = {400: ERROR, 401: ERROR, 403: ERROR, 404: ERROR, 429: ERROR}
WRITE_ERRORS = {**READ_ERRORS, 400: ERROR, 409: ERROR, 413: ERROR}
# For endpoints whose success is not JSON, the schema needs each response's media type spelled out.
READ_ERRORS_JSON = {(status, "application/json"): ERROR for status in READ_ERRORS}
