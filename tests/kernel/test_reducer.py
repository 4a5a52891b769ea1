"""The reducer's transition table (KERNEL.md §4), cell by cell, and its step-level errors."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from executions.kernel import reducer
from executions.kernel.errors import ExecutionError
from executions.kernel.reducer import (
    Action,
    AlreadyTerminal,
    Cancel,
    Complete,
    Fail,
    InputReceived,
    InvalidTransition,
    Pause,
    ReducerError,
    Resume,
    Start,
    StepAlreadyExists,
    StepCompleted,
    StepFailed,
    StepNotFound,
    StepNotRunning,
    StepStarted,
    Wait,
    replay,
)
from executions.kernel.state import Execution, ExecutionState, Step, StepState, StepType, WaitReason

S = ExecutionState

T0 = datetime(2024, 1, 1, 9, 0, tzinfo=UTC)
AT = datetime(2024, 1, 1, 9, 5, tzinfo=UTC)

DONE_STEP = "step-done"
RUNNING_STEP = "step-running"
NEW_STEP = "step-new"

EXISTING_ERROR = ExecutionError.validation("input rejected", code="bad_input")
STEP_ERROR = ExecutionError.tool("tool broke", retryable=True, code="tool_down")
FAIL_ERROR = ExecutionError.llm("provider gave up", provider="openai", http_status=503)

# Written from the spec, not read from the reducer, so the table checks the code against KERNEL.md.
NON_TERMINAL = frozenset({S.QUEUED, S.CREATED, S.PLANNING, S.RUNNING, S.PAUSED, S.WAITING})
LEGAL_FROM: dict[type, frozenset[ExecutionState]] = {
    Start: frozenset({S.CREATED, S.QUEUED}),
    StepStarted: frozenset({S.RUNNING}),
    StepCompleted: frozenset({S.RUNNING}),
    StepFailed: frozenset({S.RUNNING}),
    Pause: frozenset({S.RUNNING}),
    Resume: frozenset({S.PAUSED, S.WAITING}),
    Wait: frozenset({S.RUNNING}),
    InputReceived: frozenset({S.WAITING}),
    Complete: frozenset({S.RUNNING}),
    Fail: NON_TERMINAL,
    Cancel: NON_TERMINAL,
}


def snapshot(execution: Execution) -> Execution:
    """A deep copy to compare against after a rejected action.

    ``copy.deepcopy`` cannot copy an ``ExecutionError`` (see
    ``test_an_execution_with_an_error_can_be_deep_copied``), so the memo is seeded with equal,
    independent copies of the errors; everything else is copied by ``deepcopy`` itself.
    """
    errors = [execution.error, *(step.error for step in execution.steps.values())]
    memo: dict[int, object] = {id(e): ExecutionError.from_dict(e.to_dict()) for e in errors if e is not None}
    return copy.deepcopy(execution, memo)


def make_step(step_id: str, state: StepState, **fields: Any) -> Step:
    return Step(id=step_id, name=step_id, step_type=StepType.FUNCTION_NODE, state=state, started_at=T0, **fields)


def execution_in(state: ExecutionState) -> Execution:
    """An execution as it looks in ``state``: once started, with one completed and one running step."""
    ex = Execution(id="exec_1", tenant_id="tenant-a", state=state, created_at=T0)
    if state not in (S.CREATED, S.QUEUED):
        ex.started_at = T0
        ex.steps = {
            DONE_STEP: make_step(DONE_STEP, StepState.COMPLETED, output=1, duration_ms=5, ended_at=T0),
            RUNNING_STEP: make_step(RUNNING_STEP, StepState.RUNNING),
        }
        ex.step_order = [DONE_STEP, RUNNING_STEP]
    if state is S.WAITING:
        ex.wait_reason = WaitReason.APPROVAL
    if state is S.PAUSED:
        ex.pause_reason = "operator"
    if state is S.COMPLETED:
        ex.output = {"answer": 42}
    if state is S.FAILED:
        ex.error = EXISTING_ERROR
    if state is S.CANCELLED:
        ex.cancel_reason = "user"
    if state.is_terminal:
        ex.ended_at = T0
    return ex


def action_of(action_type: type) -> Action:
    """One action of each type; step actions target the running step (or a new id for StepStarted)."""
    actions: dict[type, Action] = {
        Start: Start(at=AT),
        StepStarted: StepStarted(
            NEW_STEP,
            "fetch",
            AT,
            step_type=StepType.TOOL_NODE,
            parent_step_id=RUNNING_STEP,
            source="graph:g",
            attempt=2,
        ),
        StepCompleted: StepCompleted(RUNNING_STEP, {"rows": 3}, 120, AT),
        StepFailed: StepFailed(RUNNING_STEP, STEP_ERROR, AT, duration_ms=80),
        Pause: Pause("maintenance", AT),
        Resume: Resume(AT),
        Wait: Wait(WaitReason.USER_INPUT, AT, detail={"prompt": "continue?"}),
        InputReceived: InputReceived(AT, input="yes"),
        Complete: Complete({"answer": 1}, AT),
        Fail: Fail(FAIL_ERROR, AT),
        Cancel: Cancel("user asked", AT),
    }
    return actions[action_type]


def expected_after(state: ExecutionState, action_type: type) -> Execution:
    """The execution ``execution_in(state)`` should become after the (legal) ``action_of(action_type)``."""
    ex = execution_in(state)
    if action_type is Start:
        ex.state = S.RUNNING
        ex.started_at = AT
    elif action_type is StepStarted:
        ex.steps[NEW_STEP] = Step(
            id=NEW_STEP,
            name="fetch",
            step_type=StepType.TOOL_NODE,
            state=StepState.RUNNING,
            parent_step_id=RUNNING_STEP,
            source="graph:g",
            attempt=2,
            started_at=AT,
        )
        ex.step_order.append(NEW_STEP)
    elif action_type is StepCompleted:
        step = ex.steps[RUNNING_STEP]
        step.state, step.output, step.duration_ms, step.ended_at = StepState.COMPLETED, {"rows": 3}, 120, AT
    elif action_type is StepFailed:
        # The execution itself stays running: the kernel decides between retry and fail.
        step = ex.steps[RUNNING_STEP]
        step.state, step.error, step.duration_ms, step.ended_at = StepState.FAILED, STEP_ERROR, 80, AT
    elif action_type is Pause:
        ex.state, ex.pause_reason = S.PAUSED, "maintenance"
    elif action_type is Resume:
        ex.state, ex.wait_reason, ex.pause_reason = S.RUNNING, None, None
    elif action_type is Wait:
        ex.state, ex.wait_reason = S.WAITING, WaitReason.USER_INPUT
    elif action_type is InputReceived:
        ex.state, ex.wait_reason = S.RUNNING, None
    elif action_type is Complete:
        ex.state, ex.output, ex.ended_at = S.COMPLETED, {"answer": 1}, AT
    elif action_type is Fail:
        ex.state, ex.error, ex.wait_reason, ex.ended_at = S.FAILED, FAIL_ERROR, None, AT
    elif action_type is Cancel:
        if RUNNING_STEP in ex.steps:
            ex.steps[RUNNING_STEP].state = StepState.SKIPPED
            ex.steps[RUNNING_STEP].ended_at = AT
        ex.state, ex.cancel_reason, ex.wait_reason, ex.ended_at = S.CANCELLED, "user asked", None, AT
    return ex


def assert_rejected(ex: Execution, action: Action, error_type: type[ReducerError]) -> ReducerError:
    """``action`` raises exactly ``error_type`` from both check() and reduce(), and changes nothing."""
    before = snapshot(ex)
    with pytest.raises(ReducerError) as checked:
        reducer.check(ex, action)
    assert type(checked.value) is error_type
    assert ex == before
    with pytest.raises(ReducerError) as reduced:
        reducer.reduce(ex, action)
    assert type(reduced.value) is error_type
    assert str(reduced.value) == str(checked.value)
    assert ex == before
    return reduced.value


# --- the table -----------------------------------------------------------------------------------


def test_the_action_list_is_the_spec_table() -> None:
    assert set(reducer.ALL_ACTION_TYPES) == set(LEGAL_FROM)
    assert len(reducer.ALL_ACTION_TYPES) == 11


@pytest.mark.parametrize("action_type", reducer.ALL_ACTION_TYPES, ids=lambda t: t.__name__)
@pytest.mark.parametrize("state", list(ExecutionState), ids=str)
def test_transition_table(state: ExecutionState, action_type: type) -> None:
    ex = execution_in(state)
    action = action_of(action_type)
    if state.is_terminal:
        error = assert_rejected(ex, action, AlreadyTerminal)
        assert isinstance(error, AlreadyTerminal)
        assert error.state is state
        assert error.code == "already_terminal"
    elif state in LEGAL_FROM[action_type]:
        reducer.check(ex, action)
        assert ex == execution_in(state)
        reducer.reduce(ex, action)
        assert ex == expected_after(state, action_type)
    else:
        error = assert_rejected(ex, action, InvalidTransition)
        assert isinstance(error, InvalidTransition)
        assert error.state is state
        assert error.action == action_type.__name__
        assert error.code == "invalid_transition"
        assert str(error) == f"cannot apply {action_type.__name__} to an execution that is {state.value}"


@pytest.mark.parametrize("state", [S.CREATED, S.QUEUED], ids=str)
def test_start_sets_running_and_started_at_only(state: ExecutionState) -> None:
    ex = execution_in(state)
    reducer.reduce(ex, Start(AT))
    assert ex.state is S.RUNNING
    assert ex.started_at == AT
    assert (ex.ended_at, ex.output, ex.error, ex.wait_reason, ex.pause_reason, ex.cancel_reason) == (
        None,
        None,
        None,
        None,
        None,
        None,
    )


@pytest.mark.parametrize("state", [S.PAUSED, S.WAITING], ids=str)
def test_resume_clears_both_reasons(state: ExecutionState) -> None:
    ex = execution_in(state)
    reducer.reduce(ex, Resume(AT))
    assert ex.state is S.RUNNING
    assert ex.wait_reason is None
    assert ex.pause_reason is None
    assert ex.started_at == T0
    assert ex.ended_at is None


def test_wait_records_the_reason_and_input_clears_it() -> None:
    ex = execution_in(S.RUNNING)
    reducer.reduce(ex, Wait(WaitReason.COST_THRESHOLD, AT, detail={"cost": 5}))
    assert (ex.state, ex.wait_reason) == (S.WAITING, WaitReason.COST_THRESHOLD)
    reducer.reduce(ex, InputReceived(AT, input="approved"))
    assert (ex.state, ex.wait_reason) == (S.RUNNING, None)


@pytest.mark.parametrize("state", sorted(NON_TERMINAL), ids=str)
def test_fail_and_cancel_set_ended_at_from_any_non_terminal_state(state: ExecutionState) -> None:
    failed = execution_in(state)
    reducer.reduce(failed, Fail(FAIL_ERROR, AT))
    assert (failed.state, failed.error, failed.ended_at, failed.wait_reason) == (S.FAILED, FAIL_ERROR, AT, None)
    cancelled = execution_in(state)
    reducer.reduce(cancelled, Cancel("stop", AT))
    assert (cancelled.state, cancelled.cancel_reason, cancelled.ended_at, cancelled.wait_reason) == (
        S.CANCELLED,
        "stop",
        AT,
        None,
    )


def test_an_execution_with_an_error_can_be_deep_copied() -> None:
    # Snapshots before/after an action rely on deepcopy; ExecutionError breaks it (see test_errors).
    ex = execution_in(S.RUNNING)
    reducer.reduce(ex, StepFailed(RUNNING_STEP, STEP_ERROR, AT))
    reducer.reduce(ex, Fail(FAIL_ERROR, AT))
    copied = copy.deepcopy(ex)
    assert copied == ex
    assert copied.error is not ex.error


# --- precedence of the checks ---------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.COMPLETED, S.FAILED, S.CANCELLED], ids=str)
@pytest.mark.parametrize("action_type", [StepCompleted, StepFailed], ids=lambda t: t.__name__)
def test_terminal_is_reported_before_an_unknown_step(state: ExecutionState, action_type: type) -> None:
    ex = execution_in(state)
    action = (
        StepCompleted("ghost", None, 1, AT) if action_type is StepCompleted else StepFailed("ghost", STEP_ERROR, AT)
    )
    assert_rejected(ex, action, AlreadyTerminal)


@pytest.mark.parametrize("state", [S.CREATED, S.PAUSED, S.WAITING], ids=str)
def test_transition_is_reported_before_step_errors(state: ExecutionState) -> None:
    ex = execution_in(state)
    assert_rejected(ex, StepCompleted("ghost", None, 1, AT), InvalidTransition)
    assert_rejected(ex, StepFailed("ghost", STEP_ERROR, AT), InvalidTransition)
    if state is not S.CREATED:
        assert_rejected(ex, StepStarted(RUNNING_STEP, "dup", AT), InvalidTransition)
        assert_rejected(ex, StepCompleted(DONE_STEP, None, 1, AT), InvalidTransition)


# --- step-level errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("existing", [RUNNING_STEP, DONE_STEP])
def test_step_started_with_an_existing_id_is_rejected(existing: str) -> None:
    ex = execution_in(S.RUNNING)
    error = assert_rejected(ex, StepStarted(existing, "again", AT), StepAlreadyExists)
    assert isinstance(error, StepAlreadyExists)
    assert error.step_id == existing
    assert error.code == "step_already_exists"
    assert str(error) == f"step {existing} already exists"


def test_unknown_step_cannot_complete_or_fail() -> None:
    ex = execution_in(S.RUNNING)
    for action in (StepCompleted("ghost", "x", 1, AT), StepFailed("ghost", STEP_ERROR, AT)):
        error = assert_rejected(ex, action, StepNotFound)
        assert isinstance(error, StepNotFound)
        assert error.step_id == "ghost"
        assert error.code == "step_not_found"
        assert str(error) == "step ghost not found"


@pytest.mark.parametrize(
    "step_state", [StepState.PENDING, StepState.COMPLETED, StepState.FAILED, StepState.SKIPPED], ids=str
)
@pytest.mark.parametrize("action_type", [StepCompleted, StepFailed], ids=lambda t: t.__name__)
def test_a_step_that_is_not_running_cannot_complete_or_fail(step_state: StepState, action_type: type) -> None:
    ex = execution_in(S.RUNNING)
    ex.steps["s"] = make_step("s", step_state)
    ex.step_order.append("s")
    action = StepCompleted("s", "x", 1, AT) if action_type is StepCompleted else StepFailed("s", STEP_ERROR, AT)
    error = assert_rejected(ex, action, StepNotRunning)
    assert isinstance(error, StepNotRunning)
    assert (error.step_id, error.state) == ("s", step_state)
    assert error.code == "step_not_running"
    assert str(error) == f"step s is {step_state.value}, not running"


def test_a_step_completes_once() -> None:
    ex = execution_in(S.RUNNING)
    reducer.reduce(ex, StepCompleted(RUNNING_STEP, "first", 10, AT))
    assert_rejected(ex, StepCompleted(RUNNING_STEP, "second", 20, AT), StepNotRunning)
    assert_rejected(ex, StepFailed(RUNNING_STEP, STEP_ERROR, AT), StepNotRunning)
    assert ex.steps[RUNNING_STEP].output == "first"


def test_step_started_records_every_field_and_keeps_order() -> None:
    ex = execution_in(S.RUNNING)
    reducer.reduce(ex, StepStarted("b", "second", AT))
    reducer.reduce(ex, StepStarted("a", "third", AT, step_type=StepType.LLM_NODE, parent_step_id="b"))
    assert ex.step_order == [DONE_STEP, RUNNING_STEP, "b", "a"]
    assert ex.steps["a"] == Step(
        id="a", name="third", step_type=StepType.LLM_NODE, state=StepState.RUNNING, parent_step_id="b", started_at=AT
    )
    assert ex.running_step_ids() == [RUNNING_STEP, "b", "a"]


def test_step_failed_leaves_the_execution_running() -> None:
    ex = execution_in(S.RUNNING)
    reducer.reduce(ex, StepFailed(RUNNING_STEP, STEP_ERROR, AT))
    assert ex.state is S.RUNNING
    assert ex.error is None
    assert ex.ended_at is None
    step = ex.steps[RUNNING_STEP]
    assert (step.state, step.error, step.duration_ms, step.ended_at) == (StepState.FAILED, STEP_ERROR, None, AT)


# --- cancel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.RUNNING, S.PAUSED, S.WAITING], ids=str)
def test_cancel_skips_running_steps_and_leaves_the_rest(state: ExecutionState) -> None:
    ex = execution_in(state)
    ex.steps.update(
        {
            "failed": make_step("failed", StepState.FAILED, error=STEP_ERROR, ended_at=T0),
            "pending": make_step("pending", StepState.PENDING),
            "skipped": make_step("skipped", StepState.SKIPPED, ended_at=T0),
            "running-2": make_step("running-2", StepState.RUNNING),
        }
    )
    ex.step_order += ["failed", "pending", "skipped", "running-2"]
    before = snapshot(ex)

    reducer.reduce(ex, Cancel("shutdown", AT))

    assert ex.state is S.CANCELLED
    assert ex.running_step_ids() == []
    for step_id in (RUNNING_STEP, "running-2"):
        assert ex.steps[step_id] == Step(
            id=step_id,
            name=step_id,
            step_type=StepType.FUNCTION_NODE,
            state=StepState.SKIPPED,
            started_at=T0,
            ended_at=AT,
        )
    for step_id in (DONE_STEP, "failed", "pending", "skipped"):
        assert ex.steps[step_id] == before.steps[step_id]
    assert ex.step_order == before.step_order


def test_cancel_before_start_has_no_steps_to_skip() -> None:
    ex = execution_in(S.QUEUED)
    reducer.reduce(ex, Cancel("tenant over quota", AT))
    assert ex.state is S.CANCELLED
    assert ex.steps == {}
    assert ex.started_at is None
    assert ex.ended_at == AT


# --- replay ---------------------------------------------------------------------------------------


def test_replay_of_legal_actions_applies_them_all() -> None:
    actions: list[Action] = [
        Start(T0),
        StepStarted("a", "fetch", T0),
        StepCompleted("a", {"rows": 2}, 40, AT),
        Wait(WaitReason.APPROVAL, AT),
        Resume(AT),
        Complete("done", AT),
    ]
    result = replay("exec_1", "tenant-a", actions)
    assert result.ok is True
    assert (result.applied, result.failed_at, result.error) == (6, None, None)
    ex = result.execution
    assert (ex.id, ex.tenant_id, ex.state, ex.output) == ("exec_1", "tenant-a", S.COMPLETED, "done")
    assert (ex.started_at, ex.ended_at) == (T0, AT)
    assert ex.step_order == ["a"]
    assert ex.steps["a"].state is StepState.COMPLETED


def test_replay_of_nothing_is_a_fresh_execution() -> None:
    result = replay("exec_1", "tenant-a", [])
    assert result.ok is True
    assert result.applied == 0
    assert result.execution == Execution(id="exec_1", tenant_id="tenant-a")


@pytest.mark.parametrize(
    ("actions", "failed_at", "error_type"),
    [
        ([Resume(T0), Start(T0)], 0, InvalidTransition),
        ([Start(T0), StepStarted("a", "x", T0), StepStarted("a", "x", T0), Complete(1, T0)], 2, StepAlreadyExists),
        ([Start(T0), StepStarted("a", "x", T0), StepCompleted("b", 1, 1, T0)], 2, StepNotFound),
        (
            [Start(T0), StepStarted("a", "x", T0), StepCompleted("a", 1, 1, T0), StepCompleted("a", 1, 1, T0)],
            3,
            StepNotRunning,
        ),
        ([Start(T0), Complete(1, T0), Cancel("late", T0), Start(T0)], 2, AlreadyTerminal),
        ([Start(T0), Start(T0)], 1, InvalidTransition),
    ],
    ids=["first", "duplicate-step", "unknown-step", "step-not-running", "after-terminal", "double-start"],
)
def test_replay_reports_the_index_of_the_first_failing_action(
    actions: list[Action], failed_at: int, error_type: type[ReducerError]
) -> None:
    result = replay("exec_1", "tenant-a", actions)
    assert result.ok is False
    assert result.failed_at == failed_at
    assert result.applied == failed_at
    assert type(result.error) is error_type
    # The execution is exactly the fold of the actions before the failing one.
    assert result.execution == replay("exec_1", "tenant-a", actions[:failed_at]).execution
