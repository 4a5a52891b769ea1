"""The SQL that stores a unit of the kernel's work, per database.

This is the hot path of every durable step, so it is plain SQL rather than the ORM: on
PostgreSQL one statement (data-modifying CTEs) inserts the events, upserts the steps and the
checkpoint, keeps the checkpoint among the past ones (where forks start), and commits in the same
round trip; elsewhere one statement per table.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from django.db import connection
from django.utils import timezone
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from executions.models import Checkpoint, ExecutionEvent, PastCheckpoint, Step
from executions.persistence.group_commit import StagedUnit

EVENT_COLUMNS = ("id", "execution_id", "tenant_id", "seq", "type", "step_id", "timestamp", "data")
STEP_COLUMNS = (
    "id", "execution_id", "position", "name", "step_type", "state", "attempt",
    "parent_step_id", "output", "error", "duration_ms", "started_at", "ended_at",
)  # fmt: skip
STEP_UPDATED = ("state", "output", "error", "duration_ms", "ended_at")


def flush_statements(
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
        cols = ", ".join(ops.quote_name(c) for c in EVENT_COLUMNS)
        rows = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(events))
        params: list[Any] = []
        for eid, execution_id, tenant_id, seq, type_, step_id, timestamp, data in events:
            params += [eid, execution_id, tenant_id, seq, type_, step_id, _dt(timestamp), _json(data)]
        statements.append(
            (f"INSERT INTO {ops.quote_name(ExecutionEvent._meta.db_table)} ({cols}) VALUES {rows}", params)
        )
    if steps:
        step_cols = STEP_COLUMNS
        placeholders = "(" + ", ".join(["%s"] * len(step_cols)) + ")"
        updates = ", ".join(f"{ops.quote_name(c)} = excluded.{ops.quote_name(c)}" for c in STEP_UPDATED)
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
        now = _dt(timezone.now())
        statements.append((sql, [execution_id, checkpoint_id, seq, _json(data), now]))
        past = ops.quote_name(PastCheckpoint._meta.db_table)
        sql = f"INSERT INTO {past} (execution_id, checkpoint_id, seq, data, created_at) VALUES (%s, %s, %s, %s, %s)"
        statements.append((sql, [execution_id, checkpoint_id, seq, _json(data), now]))
    return statements


def execute_and_commit(sql: str, params: list[Any]) -> None:
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
    statement has four parameters and a constant text, and psycopg prepares it once per
    connection: no per-step quoting of dozens of parameters on our side, no planning on the
    server's. Data-modifying CTEs put it all in one round trip.
    """
    q = connection.ops.quote_name
    events, steps, checkpoints, past = (q(m._meta.db_table) for m in (ExecutionEvent, Step, Checkpoint, PastCheckpoint))
    event_cols = ", ".join(q(c) for c in EVENT_COLUMNS)
    step_cols = ", ".join(q(c) for c in STEP_COLUMNS)
    step_updates = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in STEP_UPDATED)
    checkpoint_cols = "execution_id, checkpoint_id, seq, data, updated_at"
    return (
        f"WITH written_events AS (INSERT INTO {events} ({event_cols}) "
        f"SELECT {event_cols} FROM jsonb_populate_recordset(NULL::{events}, %s::jsonb)), "
        f"written_steps AS (INSERT INTO {steps} ({step_cols}) "
        f"SELECT {step_cols} FROM jsonb_populate_recordset(NULL::{steps}, %s::jsonb) "
        f"ON CONFLICT (id) DO UPDATE SET {step_updates}), "
        f"written_past AS (INSERT INTO {past} (execution_id, checkpoint_id, seq, data, created_at) "
        f"SELECT execution_id, checkpoint_id, seq, data, updated_at "
        f"FROM jsonb_populate_recordset(NULL::{checkpoints}, %s::jsonb)) "
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
    event_rows = [dict(zip(EVENT_COLUMNS, row, strict=True)) for row in events]
    checkpoint_rows = [] if checkpoint is None else [checkpoint_row(execution_id, checkpoint)]
    checkpoints = rows_json(checkpoint_rows)
    params = [rows_json(event_rows), rows_json(steps), checkpoints, checkpoints]
    return _POSTGRESQL_FLUSH[0], params


def checkpoint_row(execution_id: str, checkpoint: tuple[str, int, dict[str, Any]]) -> dict[str, Any]:
    checkpoint_id, seq, data = checkpoint
    return {
        "execution_id": execution_id,
        "checkpoint_id": checkpoint_id,
        "seq": seq,
        "data": data,
        "updated_at": timezone.now(),
    }


def only_write_of_transaction() -> bool:
    """Whether a flush would be the first and last statement of an outermost transaction.

    Only then may a unit be handed to the committer: a unit that also wrote rows itself (the
    execution's state, an inbox drain) commits them with its events, in its own thread."""
    if connection.vendor != "postgresql" or len(connection.atomic_blocks) > 1 or connection.savepoint_ids:
        return False
    raw = connection.connection
    return raw is not None and raw.info.transaction_status == TransactionStatus.IDLE


def write_staged_unit(unit: StagedUnit) -> None:
    """Store a (merged) unit in one statement and commit it; runs in the committer's thread."""
    if not _POSTGRESQL_FLUSH:
        _POSTGRESQL_FLUSH.append(_postgresql_flush_sql())
    params = [
        "[" + ",".join(unit.events) + "]",
        "[" + ",".join(unit.steps.values()) + "]",
        "[" + ",".join(unit.history) + "]",
        "[]" if unit.checkpoint is None else f"[{unit.checkpoint}]",
    ]
    with connection.cursor() as cursor:  # this thread's connection, in autocommit: the statement commits
        cursor.execute(_POSTGRESQL_FLUSH[0], params)


def rows_json(rows: list[dict[str, Any]]) -> str:
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
        return Jsonb(value)
    return json.dumps(value)
