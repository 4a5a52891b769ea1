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
            return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(f"malformed JSON: {exc}") from None
        except RecursionError:
            raise InvalidInput("malformed JSON: nested too deeply") from None


# NaN and infinity are not JSON; let in, they would fail later, on the database or on the way out.
def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a JSON number")
    return value
