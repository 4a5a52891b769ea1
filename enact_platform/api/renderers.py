"""Renderers for endpoints whose success is not JSON (event streams, artifact bytes): content
negotiation accepts what their clients ask for, and their error bodies are still JSON."""

from __future__ import annotations

import json
from typing import Any

from rest_framework.renderers import BaseRenderer


class _JSONErrors(BaseRenderer):
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        if data is None:
            return b""
        response = (renderer_context or {}).get("response")
        if response is not None:
            response["Content-Type"] = "application/json"
        return json.dumps(data).encode()


class EventStreamRenderer(_JSONErrors):
    media_type = "text/event-stream"
    format = "sse"


class AnyContentRenderer(_JSONErrors):
    media_type = "*/*"
    format = "raw"
