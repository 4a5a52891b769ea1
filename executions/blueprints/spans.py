"""The spans node kinds open inside their step's span: a model call (GenAI semantic conventions)
and an http call (a CLIENT span, HTTP semantic conventions).

Tracing is set up per process by ``executions.ops.tracing``, which hands the tracer in with
:func:`use_tracer` and keeps each running step's span here (:func:`step_opened`,
:func:`step_closed`) so a call made by the step's node hangs under it. With no tracer (no
``OTEL_EXPORTER_OTLP_ENDPOINT``) or no span for the step, :func:`llm_call` and :func:`http_call`
hand out one shared do-nothing recorder: no span object is built.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

__all__ = ["http_call", "llm_call", "redact_url", "step_closed", "step_opened", "use_tracer"]

_tracer: trace.Tracer | None = None
# The span of each step running in this process, by step id (ids are unique across executions).
_steps: dict[str, trace.Span] = {}

REDACTED = "REDACTED"
# Query parameters whose values are credentials: the semantic conventions' list (AWSAccessKeyId,
# Signature, sig, X-Goog-Signature) and any name that says key, token, secret, password or auth.
_SECRET_PARAM = re.compile(
    r"^(awsaccesskeyid|signature|sig|x-goog-signature|x-amz-signature|x-amz-credential|code)$"
    r"|key|token|secret|passw|auth|credential|session",
    re.IGNORECASE,
)


def use_tracer(tracer: trace.Tracer | None) -> None:
    """The process's tracer, or None: tracing off."""
    global _tracer
    _tracer = tracer
    _steps.clear()


def step_opened(step_id: str, span: trace.Span) -> None:
    _steps[step_id] = span


def step_closed(step_id: str) -> trace.Span | None:
    return _steps.pop(step_id, None)


def step_span(step_id: str | None) -> trace.Span | None:
    return _steps.get(step_id) if step_id else None


class _Recorder:
    """What a call tells its span; the shared instance of this class records nothing."""

    __slots__ = ("span",)

    def __init__(self, span: trace.Span | None = None) -> None:
        self.span = span

    def response(self, status_code: int) -> None:
        if self.span is not None:
            self.span.set_attribute("http.response.status_code", status_code)
            if status_code >= 400:
                self.span.set_attribute("error.type", str(status_code))
                self.span.set_status(Status(StatusCode.ERROR))

    def usage(self, *, response_model: str | None, input_tokens: int, output_tokens: int) -> None:
        if self.span is not None:
            if response_model:
                self.span.set_attribute("gen_ai.response.model", response_model)
            self.span.set_attribute("gen_ai.usage.input_tokens", input_tokens)
            self.span.set_attribute("gen_ai.usage.output_tokens", output_tokens)


_NOTHING = _Recorder()


@contextmanager
def _span(step_id: str | None, name: str, attributes: dict[str, Any]) -> Iterator[_Recorder]:
    parent = step_span(step_id) if _tracer is not None else None
    if parent is None or _tracer is None:
        yield _NOTHING
        return
    context = trace.set_span_in_context(parent)
    with _tracer.start_as_current_span(name, context=context, kind=SpanKind.CLIENT, attributes=attributes) as span:
        recorder = _Recorder(span)
        try:
            yield recorder
        except BaseException as exc:
            if not span.attributes or "error.type" not in span.attributes:  # type: ignore[attr-defined]
                span.set_attribute("error.type", getattr(exc, "code", None) or type(exc).__name__)
            raise


def llm_call(
    step_id: str | None,
    *,
    provider: str,
    model: str,
    base_url: str | None = None,
    temperature: float | None = None,
    max_tokens: int | None = None,
) -> Any:
    """A model call of the step: ``with llm_call(...) as call: ...; call.usage(...)``."""
    if _tracer is None:
        return _nothing()
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.system": provider,  # the older name of the attribute, which many backends still read
        "gen_ai.request.model": model,
    }
    if temperature is not None:
        attributes["gen_ai.request.temperature"] = float(temperature)
    if max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = max_tokens
    if base_url:
        parts = urlsplit(base_url)
        if parts.hostname:
            attributes["server.address"] = parts.hostname
            attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return _span(step_id, f"chat {model}", attributes)


def http_call(step_id: str | None, *, method: str, url: str) -> Any:
    """An http call of the step: ``with http_call(...) as call: ...; call.response(status)``."""
    if _tracer is None:
        return _nothing()
    parts = urlsplit(url)
    attributes: dict[str, Any] = {"http.request.method": method, "url.full": redact_url(url)}
    if parts.hostname:
        attributes["server.address"] = parts.hostname
        attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return _span(step_id, method, attributes)


@contextmanager
def _nothing() -> Iterator[_Recorder]:
    yield _NOTHING


def redact_url(url: str) -> str:
    """``url`` without credentials: a user and password become REDACTED:REDACTED, and the values
    of query parameters named like credentials REDACTED (as the semantic conventions ask)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}:{REDACTED}@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe=REDACTED)
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, ""))
