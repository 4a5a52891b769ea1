"""In-memory implementations of the ports, for tests, benchmarks and embedding."""

from __future__ import annotations

import threading
from collections import defaultdict
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta

from .artifacts import InMemoryArtifactStore
from .events import EventType, StreamEvent
from .inbox import InMemoryInbox
from .persistence import Checkpoint, ExecutionSnapshot

__all__ = [
    "FakeClock",
    "InMemoryArtifactStore",
    "InMemoryCheckpointStore",
    "InMemoryEventSink",
    "InMemoryInbox",
    "InMemorySignalBus",
    "InMemorySnapshotStore",
    "NoTransaction",
]


class InMemoryEventSink:
    """Keeps every event; ``wait_for`` lets tests block until an event type arrives."""

    def __init__(self) -> None:
        self.events: list[StreamEvent] = []
        self._cond = threading.Condition()

    def append(self, event: StreamEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def drain(self) -> list[StreamEvent]:
        with self._cond:
            events, self.events = self.events, []
        return events

    def types(self) -> list[str]:
        return [e.type.value for e in self.events]

    def of_type(self, event_type: EventType) -> list[StreamEvent]:
        return [e for e in self.events if e.type is event_type]

    def wait_for(self, event_type: EventType, timeout: float = 5.0) -> StreamEvent | None:
        with self._cond:
            found = self._cond.wait_for(lambda: any(e.type is event_type for e in self.events), timeout)
            return next(e for e in self.events if e.type is event_type) if found else None


class InMemoryCheckpointStore:
    def __init__(self) -> None:
        self.history: dict[str, list[Checkpoint]] = defaultdict(list)

    def save_checkpoint(self, checkpoint: Checkpoint) -> None:
        self.history[checkpoint.execution_id].append(checkpoint)

    def load_checkpoint(self, execution_id: str) -> Checkpoint | None:
        saved = self.history.get(execution_id)
        return saved[-1] if saved else None


class InMemorySnapshotStore:
    def __init__(self) -> None:
        self.snapshots: dict[str, ExecutionSnapshot] = {}

    def save_snapshot(self, snapshot: ExecutionSnapshot) -> None:
        self.snapshots[snapshot.execution_id] = snapshot


class InMemorySignalBus:
    def __init__(self) -> None:
        self.signals: list[tuple[str, bytes]] = []

    def emit(self, topic: str, payload: bytes) -> None:
        self.signals.append((topic, payload))


class NoTransaction:
    def atomic(self) -> AbstractContextManager[object]:
        return nullcontext()


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds
