"""The ports the platform plugs into the kernel. In-memory versions live in ``memory.py``."""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Protocol

from .artifacts import ArtifactStore
from .events import EventSink
from .inbox import InboxStore
from .persistence import Checkpoint, ExecutionSnapshot

__all__ = [
    "ArtifactStore",
    "CheckpointStore",
    "Clock",
    "EventSink",
    "InboxStore",
    "SignalBus",
    "SnapshotStore",
    "SystemClock",
    "UnitOfWork",
]


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall-clock time, stamped on actions and events."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for durations and limits."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class UnitOfWork(Protocol):
    """Makes a step's end, its inbox drain and its checkpoint one atomic change (a DB transaction)."""

    def atomic(self) -> AbstractContextManager[object]: ...


class SnapshotStore(Protocol):
    """Best-effort cache of the execution after every action; never authoritative."""

    def save_snapshot(self, snapshot: ExecutionSnapshot) -> None: ...


class CheckpointStore(Protocol):
    """Durable resume points, one after every step."""

    def save_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    def load_checkpoint(self, execution_id: str) -> Checkpoint | None: ...


class SignalBus(Protocol):
    """Lifecycle hints for whoever listens. Best effort; a failure is logged and ignored."""

    def emit(self, topic: str, payload: bytes) -> None: ...
