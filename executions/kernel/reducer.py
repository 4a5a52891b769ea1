"""The reducer: the one function that changes an execution.

Pure and deterministic: no clock, no randomness, no I/O. Timestamps and ids travel in the
action. Every check runs before the first write, so an illegal action never half-applies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import ExecutionError
from .state import Execution, ExecutionState, Step, StepState, StepType, WaitReason

_S = ExecutionState


@dataclass(frozen=True)
class Start:
    at: datetime


@dataclass(frozen=True)
class StepStarted:
    step_id: str
    name: str
    at: datetime
    step_type: StepType = StepType.FUNCTION_NODE
    parent_step_id: str | None = None
    source: str | None = None
    attempt: int = 1


@dataclass(frozen=True)
class StepCompleted:
    step_id: str
    output: Any
    duration_ms: int
    at: datetime


@dataclass(frozen=True)
class StepFailed:
    step_id: str
    error: ExecutionError
    at: datetime
    duration_ms: int | None = None


@dataclass(frozen=True)
class Pause:
    reason: str
    at: datetime


@dataclass(frozen=True)
class Resume:
    at: datetime


@dataclass(frozen=True)
class Wait:
    reason: WaitReason
    at: datetime
    detail: Any = None


@dataclass(frozen=True)
class InputReceived:
    at: datetime
    input: Any = None


@dataclass(frozen=True)
class Complete:
    output: Any
    at: datetime


@dataclass(frozen=True)
class Fail:
    error: ExecutionError
    at: datetime


@dataclass(frozen=True)
class Cancel:
    reason: str
    at: datetime


Action = (
    Start | StepStarted | StepCompleted | StepFailed | Pause | Resume | Wait | InputReceived | Complete | Fail | Cancel
)

ALL_ACTION_TYPES: tuple[type, ...] = (
    Start,
    StepStarted,
    StepCompleted,
    StepFailed,
    Pause,
    Resume,
    Wait,
    InputReceived,
    Complete,
    Fail,
    Cancel,
)

# Legal source states of the actions that change the execution's own state.
_LEGAL_FROM: dict[type, frozenset[ExecutionState]] = {
    Start: frozenset({_S.CREATED, _S.QUEUED}),
    StepStarted: frozenset({_S.RUNNING}),
    StepCompleted: frozenset({_S.RUNNING}),
    StepFailed: frozenset({_S.RUNNING}),
    Pause: frozenset({_S.RUNNING}),
    Resume: frozenset({_S.PAUSED, _S.WAITING}),
    Wait: frozenset({_S.RUNNING}),
    InputReceived: frozenset({_S.WAITING}),
    Complete: frozenset({_S.RUNNING}),
    Fail: frozenset({_S.QUEUED, _S.CREATED, _S.PLANNING, _S.RUNNING, _S.PAUSED, _S.WAITING}),
    Cancel: frozenset({_S.QUEUED, _S.CREATED, _S.PLANNING, _S.RUNNING, _S.PAUSED, _S.WAITING}),
}


class ReducerError(Exception):
    """An action that is not legal for the execution as it stands. Nothing was changed."""

    code = "reducer_error"


class AlreadyTerminal(ReducerError):
    code = "already_terminal"

    def __init__(self, state: ExecutionState) -> None:
        super().__init__(f"execution is already terminal ({state.value})")
        self.state = state


class InvalidTransition(ReducerError):
    code = "invalid_transition"

    def __init__(self, state: ExecutionState, action: str) -> None:
        super().__init__(f"cannot apply {action} to an execution that is {state.value}")
        self.state = state
        self.action = action


class StepNotFound(ReducerError):
    code = "step_not_found"

    def __init__(self, step_id: str) -> None:
        super().__init__(f"step {step_id} not found")
        self.step_id = step_id


class StepAlreadyExists(ReducerError):
    code = "step_already_exists"

    def __init__(self, step_id: str) -> None:
        super().__init__(f"step {step_id} already exists")
        self.step_id = step_id


class StepNotRunning(ReducerError):
    code = "step_not_running"

    def __init__(self, step_id: str, state: StepState) -> None:
        super().__init__(f"step {step_id} is {state.value}, not running")
        self.step_id = step_id
        self.state = state


def action_name(action: Action) -> str:
    return type(action).__name__


def check(execution: Execution, action: Action) -> None:
    """Raise the :class:`ReducerError` that ``reduce`` would raise, without changing anything."""
    state = execution.state
    if state.is_terminal:
        raise AlreadyTerminal(state)
    if state not in _LEGAL_FROM[type(action)]:
        raise InvalidTransition(state, action_name(action))
    if isinstance(action, StepStarted):
        if action.step_id in execution.steps:
            raise StepAlreadyExists(action.step_id)
    elif isinstance(action, (StepCompleted, StepFailed)):
        step = execution.steps.get(action.step_id)
        if step is None:
            raise StepNotFound(action.step_id)
        if step.state is not StepState.RUNNING:
            raise StepNotRunning(action.step_id, step.state)


def reduce(execution: Execution, action: Action) -> None:
    """Apply ``action`` to ``execution`` in place, or raise :class:`ReducerError` and change nothing."""
    check(execution, action)
    _apply(execution, action)


def _apply(ex: Execution, action: Action) -> None:
    if isinstance(action, StepStarted):
        ex.steps[action.step_id] = Step(
            id=action.step_id,
            name=action.name,
            step_type=action.step_type,
            state=StepState.RUNNING,
            parent_step_id=action.parent_step_id,
            source=action.source,
            attempt=action.attempt,
            started_at=action.at,
        )
        ex.step_order.append(action.step_id)
    elif isinstance(action, StepCompleted):
        step = ex.steps[action.step_id]
        step.state = StepState.COMPLETED
        step.output = action.output
        step.duration_ms = action.duration_ms
        step.ended_at = action.at
    elif isinstance(action, StepFailed):
        step = ex.steps[action.step_id]
        step.state = StepState.FAILED
        step.error = action.error
        step.duration_ms = action.duration_ms
        step.ended_at = action.at
    elif isinstance(action, Start):
        ex.state = _S.RUNNING
        ex.started_at = action.at
    elif isinstance(action, Pause):
        ex.state = _S.PAUSED
        ex.pause_reason = action.reason
    elif isinstance(action, Resume):
        ex.state = _S.RUNNING
        ex.wait_reason = None
        ex.pause_reason = None
    elif isinstance(action, Wait):
        ex.state = _S.WAITING
        ex.wait_reason = action.reason
    elif isinstance(action, InputReceived):
        ex.state = _S.RUNNING
        ex.wait_reason = None
    elif isinstance(action, Complete):
        ex.state = _S.COMPLETED
        ex.output = action.output
        ex.ended_at = action.at
    elif isinstance(action, Fail):
        ex.state = _S.FAILED
        ex.error = action.error
        ex.wait_reason = None
        ex.ended_at = action.at
    elif isinstance(action, Cancel):
        for step in ex.steps.values():
            if step.state is StepState.RUNNING:
                step.state = StepState.SKIPPED
                step.ended_at = action.at
        ex.state = _S.CANCELLED
        ex.cancel_reason = action.reason
        ex.wait_reason = None
        ex.ended_at = action.at
    else:  # pragma: no cover - the Action union is closed
        raise TypeError(f"unknown action {action!r}")


@dataclass(frozen=True)
class ReplayResult:
    execution: Execution
    applied: int
    failed_at: int | None = None
    error: ReducerError | None = None

    @property
    def ok(self) -> bool:
        return self.failed_at is None


def replay(execution_id: str, tenant_id: str, actions: list[Action]) -> ReplayResult:
    """Fold ``actions`` over a fresh execution; stop at the first illegal one and report its index."""
    execution = Execution(id=execution_id, tenant_id=tenant_id)
    for index, action in enumerate(actions):
        try:
            reduce(execution, action)
        except ReducerError as exc:
            return ReplayResult(execution, index, failed_at=index, error=exc)
    return ReplayResult(execution, len(actions))
