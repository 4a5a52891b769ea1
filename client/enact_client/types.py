"""What the API answers, as typed dictionaries: the JSON as the server sent it, with its keys
named for the type checker. Fields a newer server adds are kept (a dictionary does not drop
what it does not declare), so an older client reads a newer server."""

from __future__ import annotations

from typing import Any, Generic, Literal, NotRequired, TypedDict, TypeVar

ExecutionState = Literal["queued", "running", "paused", "waiting", "completed", "failed", "cancelled"]

# The events after which an execution's stream ends.
TERMINAL_EVENT_TYPES = frozenset({"data-execution-end", "data-execution-failed", "data-execution-cancelled"})


class Execution(TypedDict):
    id: str
    blueprint: str
    version: int | None
    state: str
    wait_reason: str | None
    wait_detail: Any
    input: Any
    output: Any
    error: Any
    usage: dict[str, Any]
    metadata: dict[str, Any]
    parent_id: str | None
    idempotency_key: str | None
    created_at: str
    started_at: str | None
    ended_at: str | None
    last_seq: int
    # What started it (submit, child, schedule, rerun, fork) and, for a rerun or fork, its source.
    origin: NotRequired[str]
    source_id: NotRequired[str | None]


class Event(TypedDict):
    """An event in its wire form: ``seq`` is per execution, from 1, with no gaps."""

    id: str
    seq: int
    type: str
    execution_id: str
    step_id: str | None
    timestamp: str
    data: dict[str, Any]


class Step(TypedDict):
    id: str
    position: int
    name: str
    type: str
    state: str
    attempt: int
    parent_step_id: str | None
    output: Any
    error: Any
    duration_ms: int | None
    started_at: str | None
    ended_at: str | None


class Artifact(TypedDict):
    id: str
    execution_id: str
    step_id: str | None
    name: str
    type: str
    content_type: str
    size: int
    sha256: str
    metadata: dict[str, Any]
    created_at: str


class Blueprint(TypedDict):
    name: str
    version: int
    description: str
    input_schema: dict[str, Any]
    source: str


class BulkCancelResult(TypedDict):
    cancelled: int
    cancel_requested: int
    already_terminal: int
    not_found: int


T = TypeVar("T")


class Page(TypedDict, Generic[T]):
    """One page of a list; ``next`` is the next page's URL, or None at the end."""

    results: list[T]
    next: str | None
