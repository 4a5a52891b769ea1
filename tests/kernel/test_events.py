"""Event wire form and protected emission."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from executions.kernel.events import (
    EventEmitter,
    EventType,
    PiiMaskingProcessor,
    ProtectedEventEmitter,
    StreamEvent,
    mask_pii,
)
from executions.kernel.memory import InMemoryEventSink

AT = datetime(2026, 11, 21, 12, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("write to ann.lee+x@mail.example.org today", "write to [email] today"),
        ("card 4111-1111-1111-1111 ok", "card [card] ok"),
        ("card 4111 1111 1111 1112 fails Luhn", "card 4111 1111 1111 1112 fails Luhn"),
        ("call +44 20 7946 0958 now", "call [phone] now"),
        ("call (415) 555-2671", "call [phone]"),
        ("on 2026-11-21 at noon", "on 2026-11-21 at noon"),
        ("order 12345 shipped", "order 12345 shipped"),
        ("nothing sensitive", "nothing sensitive"),
    ],
)
def test_mask_pii(text: str, masked: str) -> None:
    assert mask_pii(text) == masked


def test_wire_round_trip() -> None:
    event = StreamEvent(EventType.STEP_END, "exec_x", AT, {"output": [1, "two"]}, "step_y", "evt_z", 7)
    wire = event.to_wire()
    assert wire == {
        "id": "evt_z",
        "seq": 7,
        "type": "data-step-end",
        "execution_id": "exec_x",
        "step_id": "step_y",
        "timestamp": "2026-11-21T12:00:00.123Z",
        "data": {"output": [1, "two"]},
    }
    assert StreamEvent.from_wire(wire) == event


def test_protected_emitter_masks_content_and_leaves_lifecycle_alone() -> None:
    sink = InMemoryEventSink()
    emitter = EventEmitter(sink)
    protected = ProtectedEventEmitter(emitter).with_processor(PiiMaskingProcessor())
    protected.emit(
        StreamEvent(EventType.TEXT_DELTA, "exec_x", AT, {"delta": "mail me: a@b.co", "nested": [{"k": "a@b.co"}]})
    )
    protected.emit_unprotected(StreamEvent(EventType.EXECUTION_PAUSED, "exec_x", AT, {"reason": "a@b.co asked"}))
    assert sink.events[0].data == {"delta": "mail me: [email]", "nested": [{"k": "[email]"}]}
    assert sink.events[1].data == {"reason": "a@b.co asked"}
    assert [e.seq for e in sink.events] == [1, 2]


def test_a_broken_processor_fails_closed() -> None:
    class Broken:
        name = "broken"

        def process(self, event: StreamEvent) -> StreamEvent:
            raise ValueError("boom")

    sink = InMemoryEventSink()
    ProtectedEventEmitter(EventEmitter(sink), [Broken()]).emit(
        StreamEvent(EventType.STEP_END, "exec_x", AT, {"output": "secret"})
    )
    assert sink.events[0].data == {"redacted": True, "processor": "broken"}


def test_emitter_numbers_from_where_the_log_stopped() -> None:
    sink = InMemoryEventSink()
    emitter = EventEmitter(sink, start_seq=41)
    emitter.emit(StreamEvent(EventType.EXECUTION_RESUMED, "exec_x", AT))
    assert sink.events[0].seq == 42
    assert emitter.last_seq == 42
