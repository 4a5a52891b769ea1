"""Properties of the reducer over random action sequences: terminal states absorb, rejected
actions never half-apply, replay reproduces, and the fold is deterministic."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from executions.kernel import reducer
from executions.kernel.errors import ExecutionError
from executions.kernel.reducer import (
    Action,
    AlreadyTerminal,
    Cancel,
    Complete,
    Fail,
    InputReceived,
    Pause,
    ReducerError,
    Resume,
    Start,
    StepCompleted,
    StepFailed,
    StepStarted,
    Wait,
    replay,
)
from executions.kernel.state import Execution, ExecutionState, StepState, StepType, WaitReason

from .test_reducer import snapshot

T0 = datetime(2024, 1, 1, tzinfo=UTC)
# A small pool, so step actions sometimes hit an existing step and sometimes miss.
STEP_IDS = ("s1", "s2", "s3")

ats = st.integers(min_value=0, max_value=86_400).map(lambda s: T0 + timedelta(seconds=s))
step_ids = st.sampled_from(STEP_IDS)
values = st.none() | st.integers(-5, 5) | st.text(max_size=3) | st.lists(st.integers(0, 3), max_size=2)
errors = st.sampled_from(
    [
        ExecutionError.llm("rate limited", http_status=429),
        ExecutionError.tool("tool broke", retryable=True),
        ExecutionError.validation("bad input"),
    ]
)
reasons = st.sampled_from(["operator", "maintenance", "user"])

ACTION_STRATEGIES: dict[type, st.SearchStrategy[Action]] = {
    Start: st.builds(Start, at=ats),
    StepStarted: st.builds(
        StepStarted,
        step_id=step_ids,
        name=st.sampled_from(["fetch", "plan"]),
        at=ats,
        step_type=st.sampled_from(StepType),
        parent_step_id=st.none() | step_ids,
        source=st.none() | st.just("graph:g"),
        attempt=st.integers(1, 3),
    ),
    StepCompleted: st.builds(StepCompleted, step_id=step_ids, output=values, duration_ms=st.integers(0, 999), at=ats),
    StepFailed: st.builds(
        StepFailed, step_id=step_ids, error=errors, at=ats, duration_ms=st.none() | st.integers(0, 9)
    ),
    Pause: st.builds(Pause, reason=reasons, at=ats),
    Resume: st.builds(Resume, at=ats),
    Wait: st.builds(Wait, reason=st.sampled_from(WaitReason), at=ats, detail=values),
    InputReceived: st.builds(InputReceived, at=ats, input=values),
    Complete: st.builds(Complete, output=values, at=ats),
    Fail: st.builds(Fail, error=errors, at=ats),
    Cancel: st.builds(Cancel, reason=reasons, at=ats),
}
# Weighted towards step and pause/wait actions: Fail and Cancel are legal almost everywhere, and
# drawn as often as the rest they end most sequences before a step has run.
WEIGHTS: dict[type, int] = {
    Start: 3,
    StepStarted: 8,
    StepCompleted: 6,
    StepFailed: 3,
    Pause: 3,
    Resume: 4,
    Wait: 3,
    InputReceived: 3,
    Complete: 1,
    Fail: 1,
    Cancel: 1,
}
actions = st.sampled_from([t for t, weight in WEIGHTS.items() for _ in range(weight)]).flatmap(
    ACTION_STRATEGIES.__getitem__
)
# Most sequences begin with a Start, so they spend their length in the states where steps run.
sequences = st.builds(
    lambda started, rest: [Start(T0), *rest] if started else rest,
    st.integers(0, 3).map(bool),
    st.lists(actions, max_size=40),
)

PROPERTY = settings(max_examples=200, deadline=None)


def fresh() -> Execution:
    return Execution(id="exec_1", tenant_id="tenant-a")


def fold(sequence: list[Action]) -> tuple[Execution, list[Action], list[tuple[int, str, str]]]:
    """Apply ``sequence`` one by one; return the execution, the accepted actions and the rejections."""
    ex = fresh()
    accepted: list[Action] = []
    rejected: list[tuple[int, str, str]] = []
    for index, action in enumerate(sequence):
        try:
            reducer.reduce(ex, action)
        except ReducerError as exc:
            rejected.append((index, type(exc).__name__, str(exc)))
        else:
            accepted.append(action)
    return ex, accepted, rejected


def rejection(apply: Callable[[Execution, Action], None], ex: Execution, action: Action) -> ReducerError | None:
    """The ReducerError that ``apply(ex, action)`` raises, or None."""
    try:
        apply(ex, action)
    except ReducerError as exc:
        return exc
    return None


def test_the_strategies_cover_every_action_type() -> None:
    assert set(ACTION_STRATEGIES) == set(reducer.ALL_ACTION_TYPES)
    assert set(WEIGHTS) == set(reducer.ALL_ACTION_TYPES)


@PROPERTY
@given(prefix=sequences, ending=st.sampled_from([Cancel, Fail, Complete]), suffix=st.lists(actions, max_size=15))
def test_a_terminal_execution_never_changes_again(prefix: list[Action], ending: type, suffix: list[Action]) -> None:
    ex, _, _ = fold(prefix)
    if not ex.state.is_terminal:
        # Drive it into a terminal state by whatever route is legal from here.
        if ending is Complete and ex.state is not ExecutionState.RUNNING:
            ending = Cancel
        final: dict[type, Action] = {
            Cancel: Cancel("end", T0),
            Fail: Fail(ExecutionError.validation("end"), T0),
            Complete: Complete(1, T0),
        }
        reducer.reduce(ex, final[ending])
    assert ex.state.is_terminal
    terminal = snapshot(ex)
    for action in [*suffix, *_one_of_each_type()]:
        error = rejection(reducer.reduce, ex, action)
        assert isinstance(error, AlreadyTerminal), f"{action!r} gave {error!r} on a {ex.state.value} execution"
        assert error.state is terminal.state
        assert ex == terminal


def _one_of_each_type() -> list[Action]:
    return [
        Start(T0),
        StepStarted("s9", "late", T0),
        StepCompleted("s1", None, 1, T0),
        StepFailed("s1", ExecutionError.llm("late"), T0),
        Pause("late", T0),
        Resume(T0),
        Wait(WaitReason.EXTERNAL, T0),
        InputReceived(T0),
        Complete(None, T0),
        Fail(ExecutionError.llm("late"), T0),
        Cancel("late", T0),
    ]


@PROPERTY
@given(sequence=sequences)
def test_a_rejected_action_never_half_applies(sequence: list[Action]) -> None:
    ex = fresh()
    for action in sequence:
        before = snapshot(ex)
        checked = rejection(reducer.check, ex, action)
        assert ex == before
        reduced = rejection(reducer.reduce, ex, action)
        assert type(reduced) is type(checked)
        if reduced is not None:
            assert ex == before
        _assert_consistent(ex)


def _assert_consistent(ex: Execution) -> None:
    assert ex.step_order == list(ex.steps)
    assert all(step_id == step.id for step_id, step in ex.steps.items())
    if ex.state is ExecutionState.CANCELLED:
        assert ex.running_step_ids() == []
    if ex.state.is_terminal:
        assert ex.ended_at is not None
    if ex.state is not ExecutionState.WAITING:
        assert ex.wait_reason is None
    if ex.state is ExecutionState.WAITING:
        assert ex.wait_reason is not None
    assert all(step.state is not StepState.PENDING for step in ex.steps.values())


@PROPERTY
@given(sequence=sequences)
def test_replaying_the_accepted_actions_rebuilds_the_execution(sequence: list[Action]) -> None:
    ex, accepted, _ = fold(sequence)
    result = replay(ex.id, ex.tenant_id, accepted)
    assert result.ok is True
    assert result.applied == len(accepted)
    rebuilt = result.execution
    assert rebuilt.state is ex.state
    assert rebuilt.steps == ex.steps
    assert rebuilt.step_order == ex.step_order
    assert rebuilt.output == ex.output
    assert rebuilt.error == ex.error
    assert rebuilt == ex


@PROPERTY
@given(sequence=sequences)
def test_replaying_everything_stops_at_the_first_rejection(sequence: list[Action]) -> None:
    ex, accepted, rejected = fold(sequence)
    result = replay(ex.id, ex.tenant_id, sequence)
    if not rejected:
        assert result.ok is True
        assert result.execution == ex
        return
    first_index, first_type, first_message = rejected[0]
    assert result.failed_at == first_index
    assert result.applied == first_index
    assert result.error is not None
    assert (type(result.error).__name__, str(result.error)) == (first_type, first_message)
    assert result.execution == replay(ex.id, ex.tenant_id, accepted[:first_index]).execution


@PROPERTY
@given(sequence=sequences)
def test_the_same_actions_give_the_same_execution(sequence: list[Action]) -> None:
    first, first_accepted, first_rejected = fold(sequence)
    second, second_accepted, second_rejected = fold(sequence)
    assert first == second
    assert first_accepted == second_accepted
    assert first_rejected == second_rejected
