"""Django implementations of the kernel's ports.

Each event is appended in the same transaction that updates the rows it describes (Execution and
Step are projections of the log), and is published to live listeners only after that commits.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.files.base import ContentFile
from django.db import IntegrityError, connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from executions import streaming
from executions.group_commit import CommitFailed, Fenced, GroupCommitter, StagedUnit
from executions.kernel import Checkpoint as KernelCheckpoint
from executions.kernel.artifacts import ArtifactInfo, PutArtifactRequest
from executions.kernel.events import EventType, StreamEvent
from executions.kernel.inbox import InboxMessage as KernelMessage
from executions.kernel.inbox import message_from_dict, message_to_dict, priority_order
from executions.models import Artifact, Checkpoint, Execution, ExecutionEvent, InboxMessage, Step
from tenants.models import TenantLimits
from tenants.services import tenant_record_usage, tenant_reserve_storage

logger = logging.getLogger(__name__)

try:  # a commit sent by the sink itself raises the driver's error, not Django's wrapper of it
    from psycopg import IntegrityError as _PsycopgIntegrityError

    _INTEGRITY_ERRORS: tuple[type[Exception], ...] = (IntegrityError, _PsycopgIntegrityError)
except ImportError:  # pragma: no cover - psycopg is a dependency, but SQLite needs none of it
    _INTEGRITY_ERRORS = (IntegrityError,)

# Content up to this size is kept in the row; larger content goes to the default storage.
INLINE_CONTENT_BYTES = 256 * 1024

S = Execution.State


class DjangoEventSink:
    """Appends events to the log and keeps the Execution and Step rows current.

    Inside a unit of work (see :class:`DjangoUnitOfWork`) event and step rows are staged and
    written together when the unit ends. This is the hot path of every durable step, so the
    flush is plain SQL: on PostgreSQL one statement inserts the events and upserts the steps;
    elsewhere two. Outside a unit of work each event is written at once.
    """

    STEP_COLUMNS = (
        "id", "execution_id", "position", "name", "step_type", "state", "attempt",
        "parent_step_id", "output", "error", "duration_ms", "started_at", "ended_at",
    )  # fmt: skip
    STEP_UPDATED = ("state", "output", "error", "duration_ms", "ended_at")
    EVENT_COLUMNS = ("id", "execution_id", "tenant_id", "seq", "type", "step_id", "timestamp", "data")

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
        # Asynchronous durability (see executions/group_commit.py): units are stored in the background.
        self.committer = committer
        self.execution_id = execution.pk
        self.tenant_id = execution.tenant_id
        if steps_so_far is None:  # positions are 0, 1, 2, …: the next one is the count so far
            steps_so_far = Step.objects.filter(execution_id=execution.pk).count()
        self._next_position = steps_so_far
        self._depth = 0
        self._events: list[tuple[Any, ...]] = []  # rows to insert
        self._staged: list[StreamEvent] = []  # the same events, to publish after commit
        self._checkpoint: tuple[str, int, dict[str, Any]] | None = None
        self._steps: dict[str, dict[str, Any]] = {}  # rows this sink created, by id
        self._dirty: list[str] = []

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
        elif self._depth == 0:
            self.flush()

    def flush(self) -> None:
        events, self._events = self._events, []
        staged, self._staged = self._staged, []
        dirty, self._dirty = self._dirty, []
        checkpoint, self._checkpoint = self._checkpoint, None
        if not events and not dirty and checkpoint is None:
            return
        steps = [self._steps[i] for i in dict.fromkeys(dirty)]
        if self.committer is not None and _only_write_of_transaction():
            self._hand_off(events, staged, steps, checkpoint)
            return
        self.sync()
        if staged and streaming.publishes_directly():
            wires = [event.to_wire() for event in staged]
            transaction.on_commit(lambda: streaming.publish_events(self.tenant_id, wires))
        statements = _flush_statements(self.execution_id, events, steps, checkpoint)
        try:
            if connection.vendor == "postgresql":
                _execute_and_commit(*statements[0])
            else:
                with connection.cursor() as cursor:
                    for sql, params in statements:
                        cursor.execute(sql, params)
        except _INTEGRITY_ERRORS as exc:
            # (execution, seq) is unique: a clash means another worker writes this stream now.
            # The unique key is the fencing token; this worker must stop.
            raise _lease_lost(f"a seq of {self.execution_id} was written by another worker") from exc

    def _hand_off(
        self,
        events: list[tuple[Any, ...]],
        staged: list[StreamEvent],
        steps: list[dict[str, Any]],
        checkpoint: tuple[str, int, dict[str, Any]] | None,
    ) -> None:
        assert self.committer is not None
        wires: list[dict[str, Any]] = []
        if staged and streaming.publishes_directly():  # a copy: the next step may change the data
            wires = json.loads(_rows_json([event.to_wire() for event in staged]))
        unit = StagedUnit(
            events=[_rows_json(dict(zip(self.EVENT_COLUMNS, row, strict=True))) for row in events],
            steps={step["id"]: _rows_json(step) for step in steps},
            checkpoint=None if checkpoint is None else _rows_json(_checkpoint_row(self.execution_id, checkpoint)),
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
                raise _lease_lost(f"{self.execution_id} is owned by another worker now") from exc
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
            raise _lease_lost(f"{self.execution_id} is owned by another worker now")
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
        elif t is EventType.STEP_END:
            self._step_update(
                event.step_id or "",
                state="completed",
                output=data["output"],
                duration_ms=data["duration_ms"],
                ended_at=at,
            )
        elif t is EventType.STEP_FAILED:
            self._step_update(
                event.step_id or "",
                state="failed",
                error=data["error"],
                duration_ms=data.get("duration_ms"),
                ended_at=at,
            )
        elif t in _EXECUTION_PROJECTIONS:
            fields = _EXECUTION_PROJECTIONS[t](data, at)
            if "usage" in data:
                fields["usage"] = data["usage"]
            self.sync()  # the execution's new state never lands before the events leading to it
            Execution.objects.filter(pk=self.execution_id).update(**fields)
            if t is EventType.EXECUTION_CANCELLED:
                for step_id in data.get("skipped_step_ids") or []:
                    self._step_update(step_id, state="skipped", ended_at=at)
        elif t is EventType.USAGE:
            delta = data.get("delta") or {}
            self.sync()
            Execution.objects.filter(pk=self.execution_id).update(usage={k: v for k, v in data.items() if k != "delta"})
            tokens = int(delta.get("input_tokens", 0)) + int(delta.get("output_tokens", 0))
            tenant_record_usage(tenant_id=self.tenant_id, tokens=tokens, cost_usd=float(delta.get("cost_usd", 0.0)))


_EXECUTION_PROJECTIONS: dict[EventType, Any] = {
    EventType.EXECUTION_START: lambda d, at: {"state": S.RUNNING, "started_at": at},
    EventType.EXECUTION_RESUMED: lambda d, at: {"state": S.RUNNING, "wait_reason": "", "wait_detail": None},
    EventType.EXECUTION_INPUT_RECEIVED: lambda d, at: {"state": S.RUNNING, "wait_reason": "", "wait_detail": None},
    EventType.EXECUTION_PAUSED: lambda d, at: {"state": S.PAUSED},
    EventType.EXECUTION_WAITING: lambda d, at: {
        "state": S.WAITING,
        "wait_reason": d["reason"],
        "wait_detail": d.get("detail"),
    },
    EventType.EXECUTION_END: lambda d, at: {
        "state": S.COMPLETED,
        "output": d["output"],
        "ended_at": at,
        "wait_reason": "",
    },
    EventType.EXECUTION_FAILED: lambda d, at: {
        "state": S.FAILED,
        "error": d["error"],
        "ended_at": at,
        "wait_reason": "",
    },
    EventType.EXECUTION_CANCELLED: lambda d, at: {"state": S.CANCELLED, "ended_at": at, "wait_reason": ""},
}


def _flush_statements(
    execution_id: str,
    events: list[tuple[Any, ...]],
    steps: list[dict[str, Any]],
    checkpoint: tuple[str, int, dict[str, Any]] | None,
) -> list[tuple[str, list[Any]]]:
    """SQL that writes what a unit staged: one statement on PostgreSQL, one per table elsewhere."""
    if connection.vendor == "postgresql":
        return [_postgresql_flush(execution_id, events, steps, checkpoint)]
    ops = connection.ops
    statements: list[tuple[str, list[Any]]] = []
    if events:
        cols = ", ".join(ops.quote_name(c) for c in DjangoEventSink.EVENT_COLUMNS)
        rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(events))
        params: list[Any] = []
        for eid, execution_id, tenant_id, seq, type_, step_id, timestamp, data in events:
            params += [eid, execution_id, tenant_id, seq, type_, step_id, _dt(timestamp), _json(data)]
        statements.append(
            (f"INSERT INTO {ops.quote_name(ExecutionEvent._meta.db_table)} ({cols}) VALUES {rows}", params)
        )
    if steps:
        step_cols = DjangoEventSink.STEP_COLUMNS
        placeholders = "(" + ", ".join(["%s"] * len(step_cols)) + ")"
        updates = ", ".join(f"{ops.quote_name(c)} = excluded.{ops.quote_name(c)}" for c in DjangoEventSink.STEP_UPDATED)
        sql = (
            f"INSERT INTO {ops.quote_name(Step._meta.db_table)} ({', '.join(ops.quote_name(c) for c in step_cols)}) "
            f"VALUES {', '.join([placeholders] * len(steps))} ON CONFLICT ({ops.quote_name('id')}) DO UPDATE SET {updates}"
        )
        params = []
        for step in steps:
            for column in step_cols:
                value = step[column]
                if column in ("output", "error"):
                    value = _json(value)
                elif column in ("started_at", "ended_at"):
                    value = _dt(value)
                params.append(value)
        statements.append((sql, params))
    if checkpoint is not None:
        checkpoint_id, seq, data = checkpoint
        table = ops.quote_name(Checkpoint._meta.db_table)
        sql = (
            f"INSERT INTO {table} (execution_id, checkpoint_id, seq, data, updated_at) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (execution_id) DO UPDATE SET checkpoint_id = excluded.checkpoint_id, seq = excluded.seq, "
            "data = excluded.data, updated_at = excluded.updated_at"
        )
        statements.append((sql, [execution_id, checkpoint_id, seq, _json(data), _dt(timezone.now())]))
    return statements


def _execute_and_commit(sql: str, params: list[Any]) -> None:
    """Run the flush statement; when it ends the outermost transaction, commit in the same round trip.

    A flush is the last write of its unit, so when the unit is the outermost atomic block
    nothing follows it but the commit, and a network round trip is most of what a durable step
    costs. If the transaction has sent nothing yet, the statement alone is the transaction: it
    runs in autocommit, without the BEGIN psycopg would send first. If earlier writes of the
    unit opened it, ``COMMIT`` goes in the same message (simple query protocol). Either way
    Django's own commit then finds nothing left to do and still runs the on-commit hooks that
    publish the events. Inside an enclosing block (a service that appends an event among other
    writes) the statement runs alone and the block's owner commits.
    """
    from psycopg.pq import TransactionStatus

    with connection.cursor() as cursor:
        if len(connection.atomic_blocks) != 1 or connection.savepoint_ids:
            cursor.execute(sql, params)
            return
        raw = connection.connection
        status = raw.info.transaction_status
        if status == TransactionStatus.IDLE:
            raw.autocommit = True
            try:
                cursor.execute(sql, params)
            finally:
                raw.autocommit = False
        elif status == TransactionStatus.INTRANS:
            cursor.execute(f"{sql}; COMMIT", params)
        else:
            cursor.execute(sql, params)


def _postgresql_flush_sql() -> str:
    """One statement for every write of a unit, its text the same whatever the unit holds.

    Each table's rows travel as one JSON array expanded by ``jsonb_populate_recordset``, so the
    statement has three parameters and a constant text, and psycopg prepares it once per
    connection: no per-step quoting of dozens of parameters on our side, no planning on the
    server's. Data-modifying CTEs put it all in one round trip.
    """
    q = connection.ops.quote_name
    events, steps, checkpoints = (q(m._meta.db_table) for m in (ExecutionEvent, Step, Checkpoint))
    event_cols = ", ".join(q(c) for c in DjangoEventSink.EVENT_COLUMNS)
    step_cols = ", ".join(q(c) for c in DjangoEventSink.STEP_COLUMNS)
    step_updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in DjangoEventSink.STEP_UPDATED)
    checkpoint_cols = "execution_id, checkpoint_id, seq, data, updated_at"
    return (
        f"WITH written_events AS (INSERT INTO {events} ({event_cols}) "
        f"SELECT {event_cols} FROM jsonb_populate_recordset(NULL::{events}, %s::jsonb)), "
        f"written_steps AS (INSERT INTO {steps} ({step_cols}) "
        f"SELECT {step_cols} FROM jsonb_populate_recordset(NULL::{steps}, %s::jsonb) "
        f"ON CONFLICT (id) DO UPDATE SET {step_updates}) "
        f"INSERT INTO {checkpoints} ({checkpoint_cols}) "
        f"SELECT {checkpoint_cols} FROM jsonb_populate_recordset(NULL::{checkpoints}, %s::jsonb) "
        "ON CONFLICT (execution_id) DO UPDATE SET checkpoint_id = excluded.checkpoint_id, seq = excluded.seq, "
        "data = excluded.data, updated_at = excluded.updated_at"
    )


_POSTGRESQL_FLUSH: list[str] = []


def _postgresql_flush(
    execution_id: str,
    events: list[tuple[Any, ...]],
    steps: list[dict[str, Any]],
    checkpoint: tuple[str, int, dict[str, Any]] | None,
) -> tuple[str, list[Any]]:
    if not _POSTGRESQL_FLUSH:
        _POSTGRESQL_FLUSH.append(_postgresql_flush_sql())
    event_rows = [dict(zip(DjangoEventSink.EVENT_COLUMNS, row, strict=True)) for row in events]
    checkpoint_rows = [] if checkpoint is None else [_checkpoint_row(execution_id, checkpoint)]
    params = [_rows_json(event_rows), _rows_json(steps), _rows_json(checkpoint_rows)]
    return _POSTGRESQL_FLUSH[0], params


def _checkpoint_row(execution_id: str, checkpoint: tuple[str, int, dict[str, Any]]) -> dict[str, Any]:
    checkpoint_id, seq, data = checkpoint
    return {
        "execution_id": execution_id,
        "checkpoint_id": checkpoint_id,
        "seq": seq,
        "data": data,
        "updated_at": timezone.now(),
    }


def _only_write_of_transaction() -> bool:
    """Whether a flush would be the first and last statement of an outermost transaction.

    Only then may a unit be handed to the committer: a unit that also wrote rows itself (the
    execution's state, an inbox drain) commits them with its events, in its own thread."""
    if connection.vendor != "postgresql" or len(connection.atomic_blocks) > 1 or connection.savepoint_ids:
        return False
    from psycopg.pq import TransactionStatus

    raw = connection.connection
    return raw is not None and raw.info.transaction_status == TransactionStatus.IDLE


def write_staged_unit(unit: StagedUnit) -> None:
    """Store a (merged) unit in one statement and commit it; runs in the committer's thread."""
    if not _POSTGRESQL_FLUSH:
        _POSTGRESQL_FLUSH.append(_postgresql_flush_sql())
    params = [
        "[" + ",".join(unit.events) + "]",
        "[" + ",".join(unit.steps.values()) + "]",
        "[]" if unit.checkpoint is None else f"[{unit.checkpoint}]",
    ]
    with connection.cursor() as cursor:  # this thread's connection, in autocommit: the statement commits
        cursor.execute(_POSTGRESQL_FLUSH[0], params)


def _rows_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, default=_json_default, separators=(",", ":"))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dt(value: Any) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _json(value: Any) -> Any:
    if value is None:
        return None
    if connection.vendor == "postgresql":
        from psycopg.types.json import Jsonb

        return Jsonb(value)
    return json.dumps(value)


def _lease_lost(message: str) -> Exception:
    from executions.worker import LeaseLost

    return LeaseLost(message)


def last_seq(execution_id: str) -> int:
    found = ExecutionEvent.objects.filter(execution_id=execution_id).aggregate(n=Max("seq"))["n"]
    return int(found or 0)


class DjangoCheckpointStore:
    """Keeps the latest checkpoint of each execution (one row, replaced), and its usage.

    Given the execution's sink, a checkpoint taken inside a unit of work is written with that
    unit's events, in the same statement."""

    def __init__(self, sink: DjangoEventSink | None = None) -> None:
        self.sink = sink

    def save_checkpoint(self, checkpoint: KernelCheckpoint) -> None:
        # Live usage is read from here while a run goes on; the event that ends a run or lets
        # it go carries the usage onto the execution row (one write per step saved).
        data = checkpoint.to_dict()
        if self.sink is not None and self.sink.stage_checkpoint(checkpoint.id, checkpoint.seq, data):
            return
        if self.sink is not None:
            self.sink.sync()  # an older checkpoint still queued must not land after this one
        fields = {"checkpoint_id": checkpoint.id, "seq": checkpoint.seq, "data": data}
        if not Checkpoint.objects.filter(execution_id=checkpoint.execution_id).update(**fields):
            Checkpoint.objects.create(execution_id=checkpoint.execution_id, **fields)

    def load_checkpoint(self, execution_id: str) -> KernelCheckpoint | None:
        row = Checkpoint.objects.filter(execution_id=execution_id).first()
        return KernelCheckpoint.from_dict(row.data) if row else None


class DjangoInboxStore:
    """Inbox messages as rows; draining marks them consumed in the caller's transaction.

    ``pending`` (set by the worker's monitor, which polls for new messages) spares a query per
    step: without it, ``has_messages`` asks the database."""

    def __init__(self, tenant_id: int, pending: threading.Event | None = None) -> None:
        self.tenant_id = tenant_id
        self.pending = pending

    def push(self, execution_id: str, message: KernelMessage, *, actor: str = "") -> None:
        """Store a message; ``actor`` is who posted it (else the names the message carries)."""
        payload = message_to_dict(message)
        actor = actor or payload.get("actor") or payload.get("sender") or payload.get("from_agent") or ""
        InboxMessage.objects.create(
            id=message.id,
            execution_id=execution_id,
            tenant_id=self.tenant_id,
            kind=message.kind,
            payload=payload,
            actor=actor,
        )

    def has_messages(self, execution_ids: list[str]) -> bool:
        if self.pending is not None:
            return self.pending.is_set()
        return _readable(execution_ids).exists()

    def drain(self, execution_ids: list[str]) -> list[KernelMessage]:
        if self.pending is not None:
            self.pending.clear()  # before reading, so a message that lands meanwhile sets it again
        with transaction.atomic(savepoint=False):
            rows = list(_readable(execution_ids).select_for_update().order_by("created_at", "id"))
            InboxMessage.objects.filter(pk__in=[r.pk for r in rows], consumed_at__isnull=True).update(
                consumed_at=timezone.now()
            )
        messages = []
        for row in rows:
            try:
                messages.append(message_from_dict(row.payload))
            except (KeyError, ValueError):
                logger.warning("dropping malformed inbox message %s", row.pk)
        return priority_order(messages)


def _readable(execution_ids: list[str]) -> Any:
    """Unread messages of an execution (the first id) and of the inboxes it inherits (a child
    reading its parent's): from those, everything but control messages, which stay for their
    own execution (a pause sent to a parent is not its child's to take)."""
    own, *inherited = execution_ids
    mine = Q(execution_id=own) | (Q(execution_id__in=inherited) & ~Q(kind="control"))
    return InboxMessage.objects.filter(mine, consumed_at__isnull=True)


class ArtifactRefused(Exception):
    """The tenant's artifact size or storage quota would be exceeded."""


class DjangoArtifactStore:
    """Artifact content in the row (small) or in Django's default storage (large).

    The content is written before the short transaction that reserves the tenant's storage and
    inserts the row, so no lock is held during file I/O; a refused or failed insert removes the
    file again. A worker that lost its lease (``fence``) stores nothing."""

    def __init__(
        self,
        tenant_id: int,
        limits: TenantLimits,
        fence: threading.Event | None = None,
        sink: DjangoEventSink | None = None,
    ) -> None:
        self.sink = sink
        self.tenant_id = tenant_id
        self.max_artifact_bytes = limits.max_artifact_bytes
        self.max_storage_bytes = limits.max_storage_bytes
        self.fence = fence or threading.Event()

    def put(self, request: PutArtifactRequest) -> ArtifactInfo:
        size = request.size
        if self.fence.is_set():
            raise ArtifactRefused("this worker no longer owns the execution")
        if size > self.max_artifact_bytes:
            raise ArtifactRefused(f"artifact of {size} bytes is over the limit of {self.max_artifact_bytes}")
        if self.sink is not None:
            self.sink.sync()  # the step that stores it is in the log before the artifact's row
        row = self._row(request)
        if size > INLINE_CONTENT_BYTES:
            row.file.save(request.artifact_id, ContentFile(request.content), save=False)
        else:
            row.content = request.content
        try:
            with transaction.atomic():
                if not tenant_reserve_storage(tenant_id=self.tenant_id, size=size, maximum=self.max_storage_bytes):
                    raise ArtifactRefused("the tenant's storage quota is full")
                row.save(force_insert=True)
        except BaseException:
            if row.file:
                row.file.delete(save=False)
            raise
        return ArtifactInfo(
            request.artifact_id,
            request.execution_id,
            request.step_id,
            request.name,
            request.artifact_type,
            request.content_type,
            size,
            request.sha256,
            dict(request.metadata),
        )

    def _row(self, request: PutArtifactRequest) -> Artifact:
        return Artifact(
            id=request.artifact_id,
            execution_id=request.execution_id,
            tenant_id=self.tenant_id,
            step_id=request.step_id,
            name=request.name,
            artifact_type=request.artifact_type.value,
            content_type=request.content_type,
            size=request.size,
            sha256=request.sha256,
            metadata=request.metadata,
        )


class DjangoUnitOfWork:
    """A transaction around a unit of the kernel's work; the sink writes what it staged at its end."""

    def __init__(self, sink: DjangoEventSink) -> None:
        self.sink = sink

    @contextmanager
    def atomic(self) -> Iterator[None]:
        if self.sink.in_unit:
            # A nested unit joins the outer one: a failure rolls the whole unit back, never half.
            self.sink.begin()
            try:
                yield
            except BaseException:
                self.sink.end(ok=False)
                transaction.set_rollback(True)
                raise
            self.sink.end(ok=True)
            return
        with transaction.atomic(savepoint=False):
            self.sink.begin()
            try:
                yield
            except BaseException:
                self.sink.end(ok=False)
                raise
            self.sink.end(ok=True)
