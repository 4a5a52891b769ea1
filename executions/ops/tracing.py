"""Traces, with OpenTelemetry: an execution is a trace, each attempt of a step a span.

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set: spans
go out over OTLP (HTTP/protobuf, or gRPC when ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` and its exporter
is installed), batched; the other standard ``OTEL_*`` variables apply (service name, ``enact``
by default; headers; timeouts; the sampler; ``OTEL_SDK_DISABLED``). Off otherwise, and then free:
no tracer provider is made, kernels get their event sink as it is, and no span object is built.

The shape of a trace:

- ``POST /api/v1/executions``: a SERVER span around the submit view, child of the caller's span
  when the request carries a W3C ``traceparent`` (a malformed one is ignored). Its context is
  stored in the execution's ``metadata.traceparent``.
- ``execution <blueprint>``: the root span of the execution, child of that API span if there is
  one. Its trace id and span id are fixed for the execution's whole life (the trace id is the API
  span's, else derived from the execution id, as is the root's span id), so every run of it (a
  pause and a resume, a worker that died and the one that took over) adds to the same trace. It
  is sent once, by the process that records the execution's end, starting at its submission;
  its events are the execution's pauses, waits, answers and resumes, read from the event log.
  A child execution (a ``subgraph`` node in mode ``child``) joins its parent's trace, its root
  under the parent's root; a rerun or fork has a trace of its own, its root linked to its
  source's root.
- one span per attempt of a step, named after its node, directly under the root (a nested step
  under its parent step): an attempt that failed shows as an ERROR span, its retry as the next
  span, with the backoff between them as a gap. Spans of steps are made from the events the
  kernel emits (:class:`TracingSink` wraps the run's event sink), with their timestamps. Runs
  are not spans of their own: a run ends where a worker happened to stop, and a run lost with
  its worker would never be sent, leaving its steps without a parent.
- under a step: a CLIENT span per model call (GenAI conventions) and per http call (HTTP
  conventions), opened by the node kinds (``executions/blueprints/spans.py``).

Set up once per process: web processes in ``ExecutionsConfig.ready``, worker processes again
after django-q2 forks them (a batch processor's thread does not survive a fork; the parent's
provider is dropped unflushed, it is the parent's); flushed when a worker stops gracefully and,
in other processes, at exit.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import transaction
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from executions.blueprints import spans
from executions.kernel.events import TERMINAL_EVENT_TYPES, EventSink, EventType, StreamEvent
from executions.models import Execution, ExecutionEvent, Step

logger = logging.getLogger(__name__)

__all__ = ["TracingSink", "enabled", "setup", "setup_after_fork", "shutdown", "submission_metadata", "traced"]

METADATA_KEY = "traceparent"
_propagator = TraceContextTextMapPropagator()


class _Ids(RandomIdGenerator):
    """Random ids, but for a span whose ids are fixed ahead (an execution's root): set them with
    :meth:`next_ids` on this thread just before starting it."""

    def __init__(self) -> None:
        self._next = threading.local()

    def next_ids(self, trace_id: int, span_id: int) -> None:
        self._next.trace_id, self._next.span_id = trace_id, span_id

    def generate_trace_id(self) -> int:
        fixed = getattr(self._next, "trace_id", None)
        if fixed:
            self._next.trace_id = None
            return int(fixed)
        return super().generate_trace_id()

    def generate_span_id(self) -> int:
        fixed = getattr(self._next, "span_id", None)
        if fixed:
            self._next.span_id = None
            return int(fixed)
        return super().generate_span_id()


class _Tracing:
    def __init__(self, provider: TracerProvider, ids: _Ids) -> None:
        self.provider = provider
        self.ids = ids
        self.tracer = provider.get_tracer("enact")
        self.pid = os.getpid()


_state: _Tracing | None = None
_lock = threading.Lock()


def enabled() -> bool:
    return _state is not None


def _endpoint() -> str:
    return os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ""


def _exporter() -> SpanExporter | None:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip()
    if protocol == "grpc":
        try:  # only when asked for: the gRPC exporter is not a dependency (it brings grpcio)
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            logger.error("OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc; traces off")
            return None
        return GrpcExporter()  # type: ignore[no-any-return]
    if protocol not in ("", "http/protobuf"):
        logger.warning("OTEL_EXPORTER_OTLP_PROTOCOL=%s is not supported; sending http/protobuf", protocol)
    # Imported here: only a process that sends traces loads the exporter (and protobuf).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()  # reads the endpoint, headers, timeout and compression from OTEL_*


def setup(exporter: SpanExporter | None = None) -> bool:
    """Set tracing up in this process if ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (or ``exporter``
    is given); once. Returns whether tracing is on."""
    global _state
    with _lock:
        if _state is not None and _state.pid == os.getpid():
            return True
        _state = None
        spans.use_tracer(None)
        if exporter is None:
            if not _endpoint() or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
                return False
            if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
                return False
            exporter = _exporter()
            if exporter is None:
                return False
        attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "enact"}
        resource = Resource.create(attributes)
        if "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "") and not os.environ.get(
            "OTEL_SERVICE_NAME"
        ):
            resource = Resource.create({})
        ids = _Ids()
        provider = TracerProvider(resource=resource, id_generator=ids, shutdown_on_exit=True)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        _state = _Tracing(provider, ids)
        spans.use_tracer(_state.tracer)
        return True


def setup_after_fork() -> bool:
    """In a freshly forked worker process: a provider of its own, whose batch thread runs here."""
    global _state
    with _lock:
        _state = None  # the parent's: its queue and thread are the parent's to flush
        spans.use_tracer(None)
    return setup()


def shutdown() -> None:
    """Send what is still queued and stop (a worker stopping gracefully, a test)."""
    global _state
    with _lock:
        state, _state = _state, None
        spans.use_tracer(None)
    if state is not None and state.pid == os.getpid():
        state.provider.shutdown()


def flush(timeout_ms: int = 10_000) -> None:
    state = _state
    if state is not None:
        state.provider.force_flush(timeout_ms)


# --- the submit request -----------------------------------------------------------------------------


def submit_span(view: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps an API view method: a SERVER span for the request, child of its ``traceparent``."""

    @functools.wraps(view)
    def traced_view(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        state = _state
        if state is None:
            return view(self, request, *args, **kwargs)
        carrier = {
            "traceparent": request.META.get("HTTP_TRACEPARENT", ""),
            "tracestate": request.META.get("HTTP_TRACESTATE", ""),
        }
        parent = _propagator.extract({k: v for k, v in carrier.items() if v})  # malformed: a new trace
        route = request.path
        attributes = {"http.request.method": request.method, "http.route": route, "url.path": route}
        with state.tracer.start_as_current_span(
            f"{request.method} {route}", context=parent, kind=SpanKind.SERVER, attributes=attributes
        ) as span:
            try:
                response = view(self, request, *args, **kwargs)
            except Exception as exc:
                status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
                if isinstance(status, int):
                    span.set_attribute("http.response.status_code", status)
                span.set_attribute("error.type", type(exc).__name__)
                raise
            span.set_attribute("http.response.status_code", response.status_code)
            return response

    return traced_view


def submission_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    """``metadata`` with the current span's context (the submit request's) as ``traceparent``,
    which the execution's root span becomes a child of. Unchanged when tracing is off."""
    if _state is None:
        return metadata
    found = trace.get_current_span().get_span_context()
    if not found.is_valid:
        return metadata
    if metadata is not None and not isinstance(metadata, dict):
        return metadata  # the service refuses it
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(found)))
    return {**(metadata or {}), METADATA_KEY: carrier["traceparent"]}


# --- an execution's trace ---------------------------------------------------------------------------


def _derived(kind: bytes, execution_id: str, size: int) -> int:
    return int.from_bytes(hashlib.sha256(kind + execution_id.encode()).digest()[:size], "big") or 1


class ExecutionTrace:
    """Where an execution's spans go: its trace, its root span's id, and that root's parent (the
    submit request's span, from ``metadata.traceparent``), if any."""

    def __init__(self, execution_id: str, metadata: dict[str, Any] | None) -> None:
        self.trace_id = _derived(b"enact-trace:", execution_id, 16)
        self.root_span_id = _derived(b"enact-root:", execution_id, 8)
        self.parent: SpanContext | None = None
        value = (metadata or {}).get(METADATA_KEY) if isinstance(metadata, dict) else None
        if isinstance(value, str):
            found = trace.get_current_span(_propagator.extract({"traceparent": value})).get_span_context()
            if found.is_valid:
                self.parent = found
                self.trace_id = found.trace_id
        sampled = self.parent.trace_flags.sampled if self.parent is not None else True
        self.flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)

    def root(self) -> SpanContext:
        return SpanContext(self.trace_id, self.root_span_id, is_remote=True, trace_flags=self.flags)

    def root_context(self) -> otel_context.Context:
        return trace.set_span_in_context(NonRecordingSpan(self.root()))


# How far up a chain of parents a child execution's trace is looked for.
MAX_ANCESTORS = 10


def execution_trace(execution_id: str, metadata: dict[str, Any] | None, parent_id: str | None) -> ExecutionTrace:
    """An execution's trace. A child execution (a ``subgraph`` node's, in mode ``child``) that was
    not submitted with a trace context of its own joins its parent's trace, its root under the
    parent's root; so does the parent's, up the chain."""
    found = ExecutionTrace(execution_id, metadata)
    chain: list[ExecutionTrace] = []
    while found.parent is None and parent_id and len(chain) < MAX_ANCESTORS:
        row = Execution.objects.filter(pk=parent_id).values_list("metadata", "parent_id").first()
        if row is None:
            break
        chain.append(found)
        found = ExecutionTrace(parent_id, row[0])
        parent_id = row[1]
    for child in reversed(chain):  # from the top down: each child under the root above it
        child.trace_id, child.flags, child.parent = found.trace_id, found.flags, found.root()
        found = child
    return found


def _ns(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000_000)


# Lifecycle events shown as events of the root span.
_ROOT_EVENTS = (
    EventType.EXECUTION_START,
    EventType.EXECUTION_PAUSED,
    EventType.EXECUTION_RESUMED,
    EventType.EXECUTION_WAITING,
    EventType.EXECUTION_INPUT_RECEIVED,
)


class TracingSink:
    """The run's event sink, and spans made from the events it is handed (after the sink took
    them: an event that was not recorded makes no span). A failure to make a span is logged,
    never raised: traces never stop a run."""

    def __init__(self, inner: EventSink, execution: Execution) -> None:
        self.inner = inner
        self.execution_id = execution.pk
        self.tenant_id = execution.tenant_id
        self.blueprint = execution.blueprint
        self.blueprint_version = execution.blueprint_version
        self.created_at = execution.created_at
        self.origin = execution.origin
        self.trace = execution_trace(execution.pk, execution.metadata, execution.parent_id)
        self.source_id = execution.source_id  # a rerun's or fork's: linked from the root span
        self._open: dict[str, trace.Span] = {}

    def __getattr__(self, name: str) -> Any:  # what the stores ask of the sink itself
        return getattr(self.inner, name)

    def append(self, event: StreamEvent) -> None:
        self.inner.append(event)
        try:
            self._observe(event)
        except Exception:
            logger.exception("tracing event %s of %s", event.type.value, self.execution_id)

    def _observe(self, event: StreamEvent) -> None:
        state = _state
        if state is None:
            return
        t, data = event.type, event.data
        if t is EventType.STEP_START and event.step_id:
            parent = self._open.get(data.get("parent_step_id") or "")
            context = trace.set_span_in_context(parent) if parent is not None else self.trace.root_context()
            span = state.tracer.start_span(
                str(data.get("name") or "step"),
                context=context,
                start_time=_ns(event.timestamp),
                attributes={
                    "enact.execution.id": self.execution_id,
                    "enact.step.id": event.step_id,
                    "enact.step.attempt": int(data.get("attempt") or 1),
                    "enact.step.type": str(data.get("step_type") or ""),
                },
            )
            self._open[event.step_id] = span
            spans.step_opened(event.step_id, span)
        elif t in (EventType.STEP_END, EventType.STEP_FAILED) and event.step_id:
            spans.step_closed(event.step_id)
            if event.step_id in self._open:
                span = self._open.pop(event.step_id)
            elif t is EventType.STEP_FAILED:  # started by a run that was lost with its worker
                span = self._lost_attempt(state, event)
            else:  # started by an earlier run, which sent its span
                return
            if t is EventType.STEP_FAILED:
                error = data.get("error") or {}
                span.set_attribute("error.type", str(error.get("code") or error.get("category") or "error"))
                span.set_attribute("enact.error.category", str(error.get("category") or ""))
                span.set_status(Status(StatusCode.ERROR, str(error.get("message") or "")[:500]))
            span.end(end_time=_ns(event.timestamp))
        elif t in TERMINAL_EVENT_TYPES:
            for step_id, span in list(self._open.items()):  # skipped by a cancel
                spans.step_closed(step_id)
                span.set_attribute("enact.step.ended_by", t.value)
                span.end(end_time=_ns(event.timestamp))
            self._open.clear()
            # After the event commits: the root span's events are read from the log then.
            transaction.on_commit(functools.partial(self._end_root, event), robust=True)

    def _lost_attempt(self, state: _Tracing, event: StreamEvent) -> trace.Span:
        """A span for an attempt whose run died with its worker (whose own span never left it),
        from the step's row: it started when the row says, and ends now, failed."""
        row = Step.objects.filter(pk=event.step_id).values_list("started_at", "attempt", "step_type").first()
        started, attempt, step_type = row if row is not None else (event.timestamp, 1, "")
        return state.tracer.start_span(
            str(event.data.get("name") or "step"),
            context=self.trace.root_context(),
            start_time=_ns(started or event.timestamp),
            attributes={
                "enact.execution.id": self.execution_id,
                "enact.step.id": event.step_id or "",
                "enact.step.attempt": int(attempt or 1),
                "enact.step.type": str(step_type or ""),
                "enact.step.recorded_by_later_run": True,
            },
        )

    def _end_root(self, event: StreamEvent) -> None:
        state = _state
        if state is None:
            return
        rows = (
            ExecutionEvent.objects.filter(execution_id=self.execution_id, type__in=[t.value for t in _ROOT_EVENTS])
            .order_by("seq")
            .values_list("type", "timestamp", "data")
        )
        parent = (
            trace.set_span_in_context(NonRecordingSpan(self.trace.parent))
            if self.trace.parent is not None
            else otel_context.Context()
        )
        links = []
        if self.source_id:
            row = Execution.objects.filter(pk=self.source_id).values_list("metadata", "parent_id").first()
            if row is not None:
                source = execution_trace(self.source_id, row[0], row[1]).root()
                links.append(Link(source, {"enact.link": "source", "enact.execution.id": self.source_id}))
        state.ids.next_ids(self.trace.trace_id, self.trace.root_span_id)
        root = state.tracer.start_span(
            f"execution {self.blueprint}",
            context=parent,
            links=links,
            kind=SpanKind.INTERNAL,
            start_time=_ns(self.created_at),
            attributes={
                "enact.execution.id": self.execution_id,
                "enact.tenant.id": str(self.tenant_id),
                "enact.blueprint": self.blueprint,
                "enact.blueprint.version": self.blueprint_version or 0,
                "enact.execution.origin": str(self.origin or ""),
                "enact.execution.state": event.type.value.removeprefix("data-execution-"),
            },
        )
        for kind, at, data in rows:
            attributes = {"reason": str(data.get("reason"))} if isinstance(data, dict) and data.get("reason") else {}
            root.add_event(kind.removeprefix("data-"), attributes=attributes, timestamp=_ns(at))
        if event.type is EventType.EXECUTION_FAILED:
            error = event.data.get("error") or {}
            root.set_attribute("error.type", str(error.get("code") or error.get("category") or "error"))
            root.set_status(Status(StatusCode.ERROR, str(error.get("message") or "")[:500]))
        root.end(end_time=_ns(event.timestamp))

    def close(self) -> None:
        """The run is over: a step still open (the run let go of the execution mid-step, to pause,
        wait or hand back) ends here, marked so; its next attempt is a span of the next run."""
        for step_id, span in list(self._open.items()):
            spans.step_closed(step_id)
            span.set_attribute("enact.step.interrupted", True)
            span.end()
        self._open.clear()


def traced(sink: Any, execution: Execution) -> Any:
    """The sink a kernel of ``execution`` gets: ``sink`` itself when tracing is off."""
    if _state is None:
        return sink
    return TracingSink(sink, execution)
