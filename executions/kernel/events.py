"""Stream events: the wire form, the emitter that numbers them, and protected emission.

Streaming only observes. The emitter numbers events and hands them to a sink; it never sees the
kernel, the reducer or the execution.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from . import ids
from .state import ExecutionState

logger = logging.getLogger(__name__)


class EventType(StrEnum):
    EXECUTION_START = "data-execution-start"
    STEP_START = "data-step-start"
    STEP_END = "data-step-end"
    STEP_FAILED = "data-step-failed"
    EXECUTION_PAUSED = "data-execution-paused"
    EXECUTION_RESUMED = "data-execution-resumed"
    EXECUTION_WAITING = "data-execution-waiting"
    EXECUTION_INPUT_RECEIVED = "data-execution-input-received"
    EXECUTION_END = "data-execution-end"
    EXECUTION_FAILED = "data-execution-failed"
    EXECUTION_CANCELLED = "data-execution-cancelled"
    ARTIFACT_CREATED = "data-artifact-created"
    INBOX_MESSAGE = "data-inbox-message"
    POLICY_DECISION = "data-policy-decision"
    CHECKPOINT = "data-checkpoint"
    TEXT_DELTA = "data-text-delta"
    TOOL_INPUT_AVAILABLE = "data-tool-input-available"
    TOOL_OUTPUT_AVAILABLE = "data-tool-output-available"
    USAGE = "data-usage"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_EVENT_TYPES

    @property
    def carries_content(self) -> bool:
        """Content events pass through protection processors; lifecycle events skip them, but
        for the parts of their data that carry what people or node code wrote (see
        ``CONTENT_FIELDS`` and ``CONTENT_BUT``)."""
        return self in CONTENT_EVENT_TYPES or self in CONTENT_FIELDS or self in CONTENT_BUT


TERMINAL_EVENT_TYPES = frozenset({EventType.EXECUTION_END, EventType.EXECUTION_FAILED, EventType.EXECUTION_CANCELLED})

# The execution's state after each event that changes it: the one table of it, which the stores'
# projection, the live pages and the command line all read.
EXECUTION_STATE_AFTER: dict[EventType, ExecutionState] = {
    EventType.EXECUTION_START: ExecutionState.RUNNING,
    EventType.EXECUTION_RESUMED: ExecutionState.RUNNING,
    EventType.EXECUTION_INPUT_RECEIVED: ExecutionState.RUNNING,
    EventType.EXECUTION_PAUSED: ExecutionState.PAUSED,
    EventType.EXECUTION_WAITING: ExecutionState.WAITING,
    EventType.EXECUTION_END: ExecutionState.COMPLETED,
    EventType.EXECUTION_FAILED: ExecutionState.FAILED,
    EventType.EXECUTION_CANCELLED: ExecutionState.CANCELLED,
}
CONTENT_EVENT_TYPES = frozenset(
    {
        EventType.STEP_END,
        EventType.EXECUTION_END,
        EventType.EXECUTION_INPUT_RECEIVED,
        EventType.TEXT_DELTA,
        EventType.TOOL_INPUT_AVAILABLE,
        EventType.TOOL_OUTPUT_AVAILABLE,
        EventType.INBOX_MESSAGE,
    }
)
# Lifecycle events whose data carries content in some fields: an error's message and details
# (node code writes them, a traceback quotes values), a wait's prompt, a pause's or cancel's
# reason. Protection applies to those fields only, so the rest (an error's category, a wait's
# reason, and a wait's schema, against which the platform checks the answer) stays as the
# stores and clients read it. A path is a key, or a key and a key inside it.
CONTENT_FIELDS: dict[EventType, tuple[tuple[str, ...], ...]] = {
    EventType.STEP_FAILED: (("error", "message"), ("error", "details")),
    EventType.EXECUTION_FAILED: (("error", "message"), ("error", "details")),
    EventType.EXECUTION_WAITING: (("detail", "prompt"),),
    EventType.EXECUTION_PAUSED: (("reason",),),
    EventType.EXECUTION_CANCELLED: (("reason",),),
}
# Lifecycle events whose data is content but for the fields named: a policy decision's reason
# and whatever details its node adds (an http call's url and body) are protected; what was
# decided, on which tool, and under which limit are not.
CONTENT_BUT: dict[EventType, frozenset[str]] = {
    EventType.POLICY_DECISION: frozenset({"decision", "tool_name", "limit"}),
}


def content_paths(event: StreamEvent) -> tuple[tuple[str, ...], ...] | None:
    """The paths of a lifecycle event's content fields; ``None`` for an event that is content
    as a whole (or, if it does not ``carries_content``, that has none)."""
    paths = CONTENT_FIELDS.get(event.type)
    if paths is not None:
        return paths
    keep = CONTENT_BUT.get(event.type)
    if keep is None:
        return None
    return tuple((key,) for key in event.data if key not in keep)


def iso_timestamp(value: datetime) -> str:
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(slots=True)
class StreamEvent:
    """One event. ``id`` and ``seq`` are empty until the emitter numbers it, in place; after
    that nobody changes it (processors that change content make a copy)."""

    type: EventType
    execution_id: str
    timestamp: datetime
    data: dict[str, Any] = field(default_factory=dict)
    step_id: str | None = None
    id: str = ""
    seq: int = 0

    @property
    def is_terminal(self) -> bool:
        return self.type.is_terminal

    def to_wire(self) -> dict[str, Any]:
        """The JSON object clients receive (KERNEL.md §7)."""
        return {
            "id": self.id,
            "seq": self.seq,
            "type": self.type.value,
            "execution_id": self.execution_id,
            "step_id": self.step_id,
            "timestamp": iso_timestamp(self.timestamp),
            "data": self.data,
        }

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> StreamEvent:
        return cls(
            type=EventType(wire["type"]),
            execution_id=wire["execution_id"],
            timestamp=datetime.fromisoformat(wire["timestamp"].replace("Z", "+00:00")),
            data=dict(wire.get("data") or {}),
            step_id=wire.get("step_id"),
            id=wire["id"],
            seq=int(wire["seq"]),
        )


class EventSink(Protocol):
    """Where numbered events go: an in-memory list in tests, the event log in the platform.

    ``append`` is called on the kernel's own thread, in seq order. An exception propagates: an
    event that cannot be recorded stops the execution rather than leaving a gap.
    """

    def append(self, event: StreamEvent) -> None: ...


class EventEmitter:
    """Numbers events gap-free per execution and hands them to the sink."""

    def __init__(self, sink: EventSink, *, start_seq: int = 0) -> None:
        self._sink = sink
        self._seq = start_seq
        self._closed = False

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def closed(self) -> bool:
        """True once a terminal event went out: exactly one terminal event closes a stream."""
        return self._closed

    def emit(self, event: StreamEvent) -> StreamEvent:
        if self._closed:
            raise RuntimeError(f"stream of {event.execution_id} already ended; refusing {event.type.value}")
        event.id = ids.new_event_id()
        event.seq = self._seq + 1
        self._sink.append(event)
        # Count the event only once the sink has it, so a failed append leaves no gap.
        self._seq += 1
        if event.type.is_terminal:
            self._closed = True
        return event


# --- Protection -----------------------------------------------------------------------------


class EventProcessor(Protocol):
    """Transforms the data of a content event before it leaves the process."""

    name: str

    def process(self, event: StreamEvent) -> StreamEvent: ...


class ProtectedEventEmitter:
    """Runs content events through processors, then emits; lifecycle events go straight out.

    A processor that raises does not let the unprocessed event through: the event is replaced by
    a redacted one, so a broken masker fails closed. For a lifecycle event with content fields
    (``content_paths``), processors see and change those fields only, and a failure redacts
    only them (every string in them becomes ``[redacted]``).
    """

    def __init__(self, emitter: EventEmitter, processors: Iterable[EventProcessor] = ()) -> None:
        self.emitter = emitter
        self.processors = list(processors)

    def with_processor(self, processor: EventProcessor) -> ProtectedEventEmitter:
        self.processors.append(processor)
        return self

    def emit(self, event: StreamEvent) -> StreamEvent:
        paths = content_paths(event)
        if paths is not None:
            return self.emitter.emit(self._protect_fields(event, paths))
        for processor in self.processors:
            try:
                event = processor.process(event)
            except Exception:
                logger.exception("event processor %s failed; redacting event", processor.name)
                event = replace(event, data={"redacted": True, "processor": processor.name})
                break
        return self.emitter.emit(event)

    def _protect_fields(self, event: StreamEvent, paths: tuple[tuple[str, ...], ...]) -> StreamEvent:
        parts = {path: _get(event.data, path) for path in paths}
        parts = {path: value for path, value in parts.items() if value is not _ABSENT and value is not None}
        if not parts or not self.processors:
            return event
        keys = {".".join(path): path for path in parts}
        view = replace(event, data={key: parts[path] for key, path in keys.items()})
        for processor in self.processors:
            try:
                view = processor.process(view)
            except Exception:
                logger.exception("event processor %s failed; redacting the event's content", processor.name)
                view = replace(view, data={key: map_strings(parts[path], _redacted) for key, path in keys.items()})
                break
        data = event.data
        for key, path in keys.items():
            data = _put(data, path, view.data.get(key))
        return replace(event, data=data)

    def emit_unprotected(self, event: StreamEvent) -> StreamEvent:
        return self.emitter.emit(event)


_ABSENT: Any = object()


def _get(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _ABSENT
        value = value[key]
    return value


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``data`` with ``value`` at ``path`` (the path exists); ``data`` is left alone."""
    head, *rest = path
    inner = _put(data[head], tuple(rest), value) if rest else value
    return {**data, head: inner}


def _redacted(_: str) -> str:
    return "[redacted]"


def map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    """Apply ``fn`` to every string inside a JSON value (keys are left alone)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [map_strings(v, fn) for v in value]
    return value


_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# Card-like runs of 13-19 digits with optional spaces or dashes; confirmed with the Luhn check.
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
# Phone numbers: an optional +country code, then 7-15 digits in groups.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?!\w)")

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if index % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mask_pii(text: str) -> str:
    """Mask e-mail addresses, card numbers (Luhn-valid) and phone numbers in ``text``."""
    if not any(c.isdigit() or c == "@" for c in text):
        return text
    text = _EMAIL.sub("[email]", text)

    def card(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        return "[card]" if _luhn_ok(digits) else match.group(0)

    text = _CARD.sub(card, text)

    def phone(match: re.Match[str]) -> str:
        found = match.group(0)
        if _DATE.fullmatch(found):
            return found
        digits = re.sub(r"\D", "", found)
        return "[phone]" if 7 <= len(digits) <= 15 else found

    return _PHONE.sub(phone, text)


class PiiMaskingProcessor:
    """Masks PII in every string of a content event's data."""

    name = "pii_masking"

    def process(self, event: StreamEvent) -> StreamEvent:
        return replace(event, data=map_strings(event.data, mask_pii))
