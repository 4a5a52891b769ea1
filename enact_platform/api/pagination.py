"""Cursor pagination, newest first: ``{"results": [...], "next": url-or-null}``.

A cursor is a position, not a page number, so rows created while a client pages do not shift
what it sees next; a cursor that was tampered with is refused as invalid input.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from enact_platform.errors import InvalidInput


class NewestFirst(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def decode_cursor(self, request: Any) -> Any:
        try:
            return super().decode_cursor(request)
        except Exception:  # DRF raises NotFound for a cursor it cannot read; it is bad input
            cursor = request.query_params.get(self.cursor_query_param)
            raise InvalidInput("invalid cursor", details={"cursor": cursor}) from None

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> Any:
        try:
            return super().paginate_queryset(queryset, request, view)
        except (DjangoValidationError, OverflowError, ValueError):
            # A cursor that decodes but whose position is not a timestamp: forged or corrupted.
            raise InvalidInput("invalid cursor", details={"cursor": request.query_params.get("cursor")}) from None

    def get_page_size(self, request: Any) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= self.max_page_size:
            raise InvalidInput(f"limit must be a whole number from 1 to {self.max_page_size}")
        return int(raw)

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"results": data, "next": self.get_next_link()})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["results", "next"],
            "properties": {
                "results": schema,
                "next": {"type": "string", "nullable": True, "format": "uri"},
            },
        }
