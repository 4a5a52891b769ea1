"""Log records that say which tenant and execution they are about, as text or as JSON."""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.utils import timezone

_log_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("enact_log_context", default=None)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Within it, every log record of this thread (or task) carries these fields (tenant, execution)."""
    token = _log_context.set({**(_log_context.get() or {}), **{k: str(v) for k, v in fields.items()}})
    try:
        yield
    finally:
        _log_context.reset(token)


class ContextFilter(logging.Filter):
    """Puts the log context on each record: ``tenant_id`` and ``execution_id`` ("-" when none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _log_context.get() or {}
        record.tenant_id = context.get("tenant_id", "-")
        record.execution_id = context.get("execution_id", "-")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log collectors (``ENACT_LOG_FORMAT=json``)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": timezone.now().isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "tenant_id": getattr(record, "tenant_id", "-"),
            "execution_id": getattr(record, "execution_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)
