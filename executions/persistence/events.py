"""The event log and its projections: the kernel's event sink on Django.

Each event is appended in the same transaction that updates the rows it describes (Execution and
Step are projections of the log), and is published to live listeners only after that commits.
Inside a unit of work the sink stages rows and writes them in one go (see ``sql.py``); with
asynchronous durability it hands them to a committer thread (see ``group_commit.py``).

A unique ``(execution, seq)`` is the fencing token: a write that clashes with another worker's
means this worker lost the execution, and raises :class:`LeaseLost`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from django.db import IntegrityError, connection, transaction

from enact_platform.errors import QuotaExceeded
from executions import wakeups
from executions.kernel import ExecutionError
from executions.kernel.events import EXECUTION_STATE_AFTER, EventType, StreamEvent
from executions.live import publisher
from executions.models import Execution, ExecutionEvent, Step
from executions.persistence import sql
from executions.persistence.group_commit import CommitFailed, Fenced, GroupCommitter, StagedUnit
from executions.persistence.webhooks import WEBHOOK_EVENTS, deliveries_enqueue_quietly
from tenants.models import TenantLimits
from tenants.services import tenant_record_usage, tenant_reserve_storage

try:  # a commit sent by the sink itself raises the driver's error, not Django's wrapper of it
    from psycopg import IntegrityError as _PsycopgIntegrityError

    _INTEGRITY_ERRORS: tuple[type[Exception], ...] = (IntegrityError, _PsycopgIntegrityError)
except ImportError:  # pragma: no cover - psycopg is a dependency, but SQLite needs none of it
    _INTEGRITY_ERRORS = (IntegrityError,)


class LeaseLost(Exception):
    """Another worker took over this execution; this one must stop writing."""


class StorageFull(QuotaExceeded):
    """What a unit of work would store does not fit the tenant's storage quota: nothing of it was
    written. A run cannot go on (``error`` is what it fails with); a request answers 429."""

    def __init__(self, error: ExecutionError) -> None:
        super().__init__(error.message, details=error.details)
        self.error = error


# What is counted against a tenant's storage, besides artifacts: each event (its data, as JSON in
# UTF-8, and a fixed cost for the rest of its row) and each step (its output and error, likewise).
ROW_BYTES = 100
# Storage is reserved this much ahead (see DjangoEventSink._reserve): a run updates its tenant's
# row once per megabyte it stores, not once per step. Every step of every execution of a tenant
# updating one row would make their commits take turns on its lock.
RESERVE_AHEAD = 1024 * 1024
# Units with these events are counted but never refused: a run must always be able to end.
_ALWAYS_STORED = frozenset({EventType.STEP_FAILED, EventType.EXECUTION_FAILED, EventType.EXECUTION_CANCELLED})


def json_bytes(value: Any) -> int:
    """The bytes ``value`` takes as compact JSON in UTF-8 (null: none)."""
    if value is None:
        return 0
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str).encode("utf-8", "replace"))


def stored_bytes(execution_ids: list[str]) -> int:
    """What the events and steps of these executions counted against their tenant's storage, for
    retention to give back: the same measure the sink counted them with."""
    size = 0
    events = ExecutionEvent.objects.filter(execution_id__in=execution_ids).values_list("data", flat=True)
    for data in events.iterator(chunk_size=500):
        size += ROW_BYTES + json_bytes(data)
    steps = Step.objects.filter(execution_id__in=execution_ids).values_list("output", "error")
    for output, error in steps.iterator(chunk_size=500):
        size += ROW_BYTES + json_bytes(output) + json_bytes(error)
    return size


class DjangoEventSink:
    """Appends events to the log and keeps the Execution and Step rows current.

    Inside a unit of work (see :class:`DjangoUnitOfWork`) event and step rows are staged and
    written together when the unit ends. This is the hot path of every durable step, so the
    flush is plain SQL: on PostgreSQL one statement inserts the events and upserts the steps;
    elsewhere two. Outside a unit of work each event is written at once.
    """

    def __init__(
        self,
        execution: Execution,
        fence: threading.Event | None = None,
        *,
        steps_so_far: int | None = None,
        committer: GroupCommitter | None = None,
    ) -> None:
        # Set by the worker when its lease was lost: from then on nothing more is written.
        self.fence = fence or threading.Event()
        # Asynchronous durability (see group_commit.py): units are stored in the background.
        self.committer = committer
        self.execution_id = execution.pk
        self.tenant_id = execution.tenant_id
        self.webhook = execution.webhook  # its submission's own webhook URL, or ""
        if steps_so_far is None:  # positions are 0, 1, 2, …: the next one is the count so far
            steps_so_far = Step.objects.filter(execution_id=execution.pk).count()
        self._next_position = steps_so_far
        self._depth = 0
        self._events: list[tuple[Any, ...]] = []  # rows to insert
        self._staged: list[StreamEvent] = []  # the same events, to publish after commit
        self._checkpoint: tuple[str, int, dict[str, Any]] | None = None
        self._steps: dict[str, dict[str, Any]] = {}  # rows this sink created, by id
        self._dirty: list[str] = []
        # Bytes the staged rows add to the tenant's storage, and whether they must be stored anyway.
        self._bytes = 0
        self._always = False
        self._max_storage: tuple[int | None] | None = None  # read once, at the first write
        self._ahead = 0  # bytes of storage reserved and not used yet

    # --- units of work --------------------------------------------------------------------------

    @property
    def in_unit(self) -> bool:
        return self._depth > 0

    def begin(self) -> None:
        self._depth += 1

    def end(self, *, ok: bool) -> None:
        self._depth -= 1
        if not ok:
            self._events.clear()
            self._staged.clear()
            self._dirty.clear()
            self._checkpoint = None
            self._bytes, self._always = 0, False
        elif self._depth == 0:
            self.flush()

    def flush(self) -> None:
        events, self._events = self._events, []
        staged, self._staged = self._staged, []
        dirty, self._dirty = self._dirty, []
        checkpoint, self._checkpoint = self._checkpoint, None
        size, always, self._bytes, self._always = self._bytes, self._always, 0, False
        if not events and not dirty and checkpoint is None:
            return
        steps = [self._steps[i] for i in dict.fromkeys(dirty)]
        if self.committer is not None and sql.only_write_of_transaction():
            self._reserve(size, always)
            self._hand_off(events, staged, steps, checkpoint)
            return
        self.sync()
        # In the unit's transaction: refused, nothing of the unit is written; else both commit.
        self._reserve(size, always)
        if staged and publisher.publishes_directly():
            wires = [event.to_wire() for event in staged]
            transaction.on_commit(lambda: publisher.publish_events(self.tenant_id, wires))
        elif staged:  # the embedded default: the web process's relay reads them from the log
            transaction.on_commit(wakeups.events_committed)
        statements = sql.flush_statements(self.execution_id, events, steps, checkpoint)
        try:
            if connection.vendor == "postgresql":
                sql.execute_and_commit(*statements[0])
            else:
                with connection.cursor() as cursor:
                    for statement, params in statements:
                        cursor.execute(statement, params)
        except _INTEGRITY_ERRORS as exc:
            # (execution, seq) is unique: a clash means another worker writes this stream now.
            # The unique key is the fencing token; this worker must stop.
            raise LeaseLost(f"a seq of {self.execution_id} was written by another worker") from exc

    def _reserve(self, size: int, always: bool) -> None:
        """Count ``size`` bytes against the tenant's storage; raise StorageFull if they do not fit.

        The tenant's row is updated last in the unit: a claim, which locks the tenant first,
        never waits for this execution (it is running, not ready), so no lock cycle forms."""
        if size <= 0:
            return
        if size <= self._ahead:  # reserved ahead by an earlier unit
            self._ahead -= size
            return
        if always:
            tenant_reserve_storage(tenant_id=self.tenant_id, size=size - self._ahead, maximum=None)
            self._ahead = 0
            return
        if self._max_storage is None:
            found = TenantLimits.objects.filter(tenant_id=self.tenant_id).values_list("max_storage_bytes", flat=True)
            self._max_storage = (found.first(),)
        maximum, need = self._max_storage[0], size - self._ahead
        # Reserve ahead so that most units send nothing (close() gives back what is left; a worker
        # that dies keeps up to RESERVE_AHEAD counted). Near the quota, only what is needed.
        if tenant_reserve_storage(tenant_id=self.tenant_id, size=need + RESERVE_AHEAD, maximum=maximum):
            self._ahead = RESERVE_AHEAD
            return
        if tenant_reserve_storage(tenant_id=self.tenant_id, size=need, maximum=maximum):
            self._ahead = 0
            return
        message = (
            f"storage quota exceeded: the run would store {size} bytes more, past the tenant's "
            f"max_storage_bytes of {maximum}"
        )
        details = {"limit": "max_storage_bytes", "maximum": maximum, "needed": size}
        raise StorageFull(ExecutionError.quota_exceeded(message, code="storage_quota_exceeded", details=details))

    def _hand_off(
        self,
        events: list[tuple[Any, ...]],
        staged: list[StreamEvent],
        steps: list[dict[str, Any]],
        checkpoint: tuple[str, int, dict[str, Any]] | None,
    ) -> None:
        assert self.committer is not None
        wires: list[dict[str, Any]] = []
        if staged and publisher.publishes_directly():  # a copy: the next step may change the data
            wires = json.loads(sql.rows_json([event.to_wire() for event in staged]))
        unit = StagedUnit(
            events=[sql.rows_json(dict(zip(sql.EVENT_COLUMNS, row, strict=True))) for row in events],
            steps={step["id"]: sql.rows_json(step) for step in steps},
            checkpoint=None if checkpoint is None else sql.rows_json(sql.checkpoint_row(self.execution_id, checkpoint)),
            wires=wires,
        )
        with self._committer_errors():
            self.committer.submit(unit)

    def sync(self) -> None:
        """Wait until every unit handed to the committer is stored; raise what storing them met."""
        if self.committer is None:
            return
        with self._committer_errors():
            self.committer.drain()

    def close(self) -> None:
        """Store what is still queued and stop the committer. Call when the run is over."""
        if self._ahead:
            ahead, self._ahead = self._ahead, 0
            tenant_reserve_storage(tenant_id=self.tenant_id, size=-ahead, maximum=None)
        if self.committer is None:
            return
        committer, self.committer = self.committer, None
        with self._committer_errors():
            committer.close()

    @contextmanager
    def _committer_errors(self) -> Iterator[None]:
        """A background commit that clashed with another worker's seq, or that the fence stopped,
        means this worker lost the execution: LeaseLost, as a synchronous write would say."""
        try:
            yield
        except CommitFailed as exc:
            if isinstance(exc.__cause__, (*_INTEGRITY_ERRORS, Fenced)):
                raise LeaseLost(f"{self.execution_id} is owned by another worker now") from exc
            raise

    def stage_checkpoint(self, checkpoint_id: str, seq: int, data: dict[str, Any]) -> bool:
        """Write the checkpoint with this unit's events; False outside a unit (write it yourself)."""
        if not self._depth:
            return False
        self._checkpoint = (checkpoint_id, seq, data)
        return True

    # --- appending ------------------------------------------------------------------------------

    def append(self, event: StreamEvent) -> None:
        if self.fence.is_set():
            raise LeaseLost(f"{self.execution_id} is owned by another worker now")
        if self._depth:
            self._stage(event)
            return
        with transaction.atomic(savepoint=False):
            self._stage(event)
            self.flush()

    def _stage(self, event: StreamEvent) -> None:
        self._events.append(
            (
                event.id,
                self.execution_id,
                self.tenant_id,
                event.seq,
                event.type.value,
                event.step_id or "",
                event.timestamp,
                event.data,
            )
        )
        self._staged.append(event)
        self._bytes += ROW_BYTES + json_bytes(event.data)
        self._always = self._always or event.type in _ALWAYS_STORED
        self._project(event)

    def _step_update(self, step_id: str, **fields: Any) -> None:
        step = self._steps.get(step_id)
        if step is None:  # a step from an earlier run of this execution
            self.sync()
            Step.objects.filter(pk=step_id).update(**fields)
            return
        step.update(fields)
        self._dirty.append(step_id)

    def _project(self, event: StreamEvent) -> None:
        data, at, t = event.data, event.timestamp, event.type
        if t is EventType.STEP_START:
            assert event.step_id is not None
            self._steps[event.step_id] = {
                "id": event.step_id,
                "execution_id": self.execution_id,
                "position": self._next_position,
                "name": data["name"],
                "step_type": data["step_type"],
                "state": "running",
                "attempt": data["attempt"],
                "parent_step_id": data.get("parent_step_id") or "",
                "output": None,
                "error": None,
                "duration_ms": None,
                "started_at": at,
                "ended_at": None,
            }
            self._dirty.append(event.step_id)
            self._next_position += 1
            self._bytes += ROW_BYTES
        elif t is EventType.STEP_END:
            self._bytes += json_bytes(data["output"])
            self._step_update(
                event.step_id or "",
                state="completed",
                output=data["output"],
                duration_ms=data["duration_ms"],
                ended_at=at,
            )
        elif t is EventType.STEP_FAILED:
            self._bytes += json_bytes(data["error"])
            self._step_update(
                event.step_id or "",
                state="failed",
                error=data["error"],
                duration_ms=data.get("duration_ms"),
                ended_at=at,
            )
        elif t in EXECUTION_STATE_AFTER:
            fields = {"state": EXECUTION_STATE_AFTER[t].value, **_EXECUTION_FIELDS[t](data, at)}
            if "usage" in data:
                fields["usage"] = data["usage"]
            self.sync()  # the execution's new state never lands before the events leading to it
            Execution.objects.filter(pk=self.execution_id).update(**fields)
            if t.value in WEBHOOK_EVENTS:  # recorded once the event is stored (persistence/webhooks.py)
                hook = {"tenant_id": self.tenant_id, "execution_id": self.execution_id, "webhook": self.webhook}
                transaction.on_commit(
                    partial(deliveries_enqueue_quietly, event_type=t.value, event_id=event.id, **hook)
                )
            if t is EventType.EXECUTION_CANCELLED:
                for step_id in data.get("skipped_step_ids") or []:
                    self._step_update(step_id, state="skipped", ended_at=at)
        elif t is EventType.USAGE:
            delta = data.get("delta") or {}
            self.sync()
            Execution.objects.filter(pk=self.execution_id).update(usage={k: v for k, v in data.items() if k != "delta"})
            tokens = int(delta.get("input_tokens", 0)) + int(delta.get("output_tokens", 0))
            tenant_record_usage(tenant_id=self.tenant_id, tokens=tokens, cost_usd=float(delta.get("cost_usd", 0.0)))


# What each state-changing event writes onto the execution row besides its state, which
# EXECUTION_STATE_AFTER (the kernel's one table of it) gives.
_EXECUTION_FIELDS: dict[EventType, Any] = {
    EventType.EXECUTION_START: lambda d, at: {"started_at": at},
    EventType.EXECUTION_RESUMED: lambda d, at: {"wait_reason": "", "wait_detail": None},
    EventType.EXECUTION_INPUT_RECEIVED: lambda d, at: {"wait_reason": "", "wait_detail": None},
    EventType.EXECUTION_PAUSED: lambda d, at: {},
    EventType.EXECUTION_WAITING: lambda d, at: {"wait_reason": d["reason"], "wait_detail": d.get("detail")},
    EventType.EXECUTION_END: lambda d, at: {"output": d["output"], "ended_at": at, "wait_reason": ""},
    EventType.EXECUTION_FAILED: lambda d, at: {"error": d["error"], "ended_at": at, "wait_reason": ""},
    EventType.EXECUTION_CANCELLED: lambda d, at: {"ended_at": at, "wait_reason": ""},
}
