"""JSON bodies, read with a cap: a body over ``ENACT_API_MAX_BODY_BYTES`` is refused with 413
before it is parsed, whether or not the client said how long it was."""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from rest_framework.parsers import JSONParser

from enact_platform.errors import InvalidInput, PayloadTooLarge


class LimitedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: dict[str, Any] | None = None) -> Any:
        limit = settings.ENACT_API_MAX_BODY_BYTES
        raw = stream.read(limit + 1) if stream is not None else b""
        if len(raw) > limit:
            raise PayloadTooLarge(f"request body is over {limit} bytes", details={"maximum": limit})
        if not raw:
            return {}
        try:
            value = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(f"malformed JSON: {exc}") from None
        except RecursionError:
            raise InvalidInput("malformed JSON: nested too deeply") from None
        refuse_unstorable_text(value)
        return value


def refuse_unstorable_text(value: Any) -> None:
    """JSON can carry text no database stores: NUL (``\\u0000``, which PostgreSQL refuses in
    text and jsonb) and lone surrogates (not UTF-8 at all). Refused as bad input, before anything
    is written, rather than failing half way on the database."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise InvalidInput("text may not contain NUL (\\u0000)")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidInput("text may not contain a lone surrogate (\\ud800 to \\udfff)") from None


# NaN and infinity are not JSON; let in, they would fail later, on the database or on the way out.
def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value
