"""Asynchronous durability: a run's steps are committed in the background, in order, in groups.

With a tenant's ``durability`` set to ``async`` (PostgreSQL only), the end of a step hands what
the step wrote (events, step rows, the checkpoint) to a committer thread instead of waiting for
the commit, and the next step starts at once. While one commit is in flight, the steps that end
meanwhile queue up and go together in the next commit: one round trip for several steps.

What holds all the same:

- events are published only after the commit that stores them, and commits keep the order of
  the steps (a listener never sees seq N+1 before seq N is stored);
- each commit is one statement, so a group is stored whole or not at all;
- any other write of the run (the execution row, an old step's row, usage) waits until every
  queued step is stored, so a terminal state never lands before the events that lead to it.

What is given up: a step may start before the previous one is stored. If the worker dies, the
steps not yet stored run again on resume, as a step that was running when the worker died does
in the synchronous mode. That is LangGraph's ``durability="async"`` trade, made per tenant.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from executions.persistence.connections import give_back

logger = logging.getLogger(__name__)


@dataclass
class StagedUnit:
    """What one unit of work wrote, encoded as JSON when the unit ended.

    Encoded then, in the run's own thread, because the next step may change the objects the
    rows were made of (a node that edits its input state in place) while this unit waits."""

    events: list[str]  # one JSON object a row, in seq order
    steps: dict[str, str]  # step id -> its row as a JSON object
    checkpoint: str | None  # the checkpoint row as a JSON object
    wires: list[dict[str, Any]] = field(default_factory=list)  # to publish after commit
    # Every checkpoint of the merged units, oldest first (PastCheckpoint rows): the checkpoint
    # table keeps the last, a fork may start from any.
    history: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.history and self.checkpoint is not None:
            self.history = [self.checkpoint]

    def merge(self, later: StagedUnit) -> None:
        self.events.extend(later.events)
        self.steps.update(later.steps)  # a step's later row wins: one row a step per statement
        self.checkpoint = later.checkpoint or self.checkpoint
        self.history.extend(later.history)
        self.wires.extend(later.wires)


# Writes a merged unit in one statement and commits it: (unit) -> None. Raises what the database raised.
WriteUnit = Callable[[StagedUnit], None]
# Hands committed events to live listeners: (wires) -> None.
Publish = Callable[[list[dict[str, Any]]], None]
# Told when a commit failed, from the committer's thread, so the run stops at once: (error) -> None.
OnFailure = Callable[[BaseException], None]

# How many units may wait; a run that gets further ahead than this waits for the database.
MAX_QUEUED_UNITS = 32


class Fenced(Exception):
    """The worker lost its lease before these units were stored."""


class CommitFailed(Exception):
    """A background commit failed; its cause is what the database raised. Nothing after it is stored."""


class GroupCommitter:
    """One background thread, with a database connection of its own, that stores staged units.

    ``submit`` never waits for the database; ``drain`` waits until everything submitted is stored
    and raises the first error a commit met (after which nothing more is stored: the run must stop).
    """

    def __init__(
        self,
        write: WriteUnit,
        publish: Publish,
        *,
        fence: threading.Event | None = None,
        on_failure: OnFailure | None = None,
        max_queued: int = MAX_QUEUED_UNITS,
    ) -> None:
        self._write = write
        self._publish = publish
        # Set when the worker lost its lease: from then on nothing queued is stored.
        self._fence = fence or threading.Event()
        self._on_failure = on_failure
        self._max_queued = max_queued
        self._cond = threading.Condition()
        self._queue: list[StagedUnit] = []
        self._busy = False
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="enact-group-commit", daemon=True)
        self._thread.start()

    def submit(self, unit: StagedUnit) -> None:
        with self._cond:
            while len(self._queue) >= self._max_queued and self._error is None:
                self._cond.wait()
            self._raise_error()
            if self._closed:
                raise RuntimeError("the committer is closed")
            self._queue.append(unit)
            self._cond.notify_all()

    def drain(self) -> None:
        with self._cond:
            while (self._queue or self._busy) and self._error is None:
                self._cond.wait()
            self._raise_error()

    def close(self) -> None:
        """Store what is queued, then stop the thread and close its connection. Raises a commit's error."""
        try:
            self.drain()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join()

    def _raise_error(self) -> None:
        if self._error is not None:
            # A new exception each time: several threads may be told, and tracebacks must not pile up.
            raise CommitFailed(f"a background commit failed: {self._error}") from self._error

    def _next_group(self) -> StagedUnit | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue or self._error is not None:
                return None
            if self._fence.is_set():  # this worker no longer owns the execution: store nothing more
                self._error = Fenced("the worker lost its lease; queued steps were not stored")
                self._queue.clear()
                self._cond.notify_all()
                return None
            group, *rest = self._queue
            for unit in rest:
                group.merge(unit)
            self._queue.clear()
            self._busy = True
            return group

    def _loop(self) -> None:
        try:
            while (group := self._next_group()) is not None:
                try:
                    self._write(group)
                except BaseException as exc:
                    with self._cond:
                        self._error = exc
                        self._queue.clear()
                        self._busy = False
                        self._cond.notify_all()
                    if self._on_failure is not None:
                        self._on_failure(exc)
                    continue
                if group.wires:  # before anyone waiting in drain() may publish later events
                    try:
                        self._publish(group.wires)
                    except Exception:  # listeners recover from the log; the run goes on
                        logger.exception("publishing committed events failed")
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
                    idle = not self._queue
                if idle:
                    give_back()  # nothing to store until the next step ends: no connection held
        finally:
            connection.close()
