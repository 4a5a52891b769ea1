"""Execution and step state, owned by the reducer."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .errors import ExecutionError


class ExecutionState(StrEnum):
    QUEUED = "queued"
    CREATED = "created"
    PLANNING = "planning"
    RUNNING = "running"
    PAUSED = "paused"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_EXECUTION_STATES

    @property
    def is_resumable(self) -> bool:
        return self in (ExecutionState.PAUSED, ExecutionState.WAITING)


TERMINAL_EXECUTION_STATES = frozenset({ExecutionState.COMPLETED, ExecutionState.FAILED, ExecutionState.CANCELLED})


class WaitReason(StrEnum):
    APPROVAL = "approval"
    USER_INPUT = "user_input"
    RATE_LIMIT = "rate_limit"
    EXTERNAL = "external"
    CHECKPOINT = "checkpoint"
    COST_THRESHOLD = "cost_threshold"
    MEMORY_PRESSURE = "memory_pressure"
    SUB_AGENT = "sub_agent"


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def is_terminal(self) -> bool:
        return self in (StepState.COMPLETED, StepState.FAILED, StepState.SKIPPED)


class StepType(StrEnum):
    FUNCTION_NODE = "function_node"
    LLM_NODE = "llm_node"
    TOOL_NODE = "tool_node"
    ROUTER_NODE = "router_node"
    GRAPH_NODE = "graph_node"
    WAIT_NODE = "wait_node"


@dataclass
class Step:
    id: str
    name: str
    step_type: StepType
    state: StepState
    parent_step_id: str | None = None
    source: str | None = None
    attempt: int = 1
    output: Any = None
    error: ExecutionError | None = None
    duration_ms: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass
class Execution:
    """One execution as the reducer sees it. Mutated only by :func:`reducer.reduce`."""

    id: str
    tenant_id: str
    state: ExecutionState = ExecutionState.CREATED
    wait_reason: WaitReason | None = None
    steps: dict[str, Step] = field(default_factory=dict)
    step_order: list[str] = field(default_factory=list)
    output: Any = None
    error: ExecutionError | None = None
    pause_reason: str | None = None
    cancel_reason: str | None = None
    parent_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None

    def duration_ms(self) -> int | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return int((self.ended_at - self.started_at).total_seconds() * 1000)

    def running_step_ids(self) -> list[str]:
        return [sid for sid in self.step_order if self.steps[sid].state is StepState.RUNNING]
