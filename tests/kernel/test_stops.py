"""Stopping steps: time limits on time, and what an abandoned or cancelled step is told and recorded as."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from executions.kernel import (
    ArtifactType,
    ErrorCategory,
    ExecutionError,
    ExecutionKernel,
    ExecutionState,
    GraphBuilder,
    InMemoryArtifactStore,
    LongRunningPolicy,
    ResourceLimits,
    StepState,
    TenantContext,
)
from executions.kernel.events import EventType
from executions.kernel.memory import FakeClock, InMemoryEventSink

Build = Callable[..., ExecutionKernel]


def _events(kernel: ExecutionKernel) -> InMemoryEventSink:
    sink = kernel.sink
    assert isinstance(sink, InMemoryEventSink)
    return sink


def _artifacts(kernel: ExecutionKernel) -> InMemoryArtifactStore:
    store = kernel.artifact_store()
    assert isinstance(store, InMemoryArtifactStore)
    return store


def _wall_limited(seconds: float) -> TenantContext:
    return TenantContext("tenant-a", limits=ResourceLimits(max_wall_time_s=seconds))


def _one_node(fn: Callable[[Any, Any], Any]) -> Any:
    return GraphBuilder("one").add_node("work", fn).set_entry_point("work").compile()


# --- item: abandoned steps are told, and store nothing --------------------------------------------


def _wait_until_told(ctx: Any, seconds: float = 2.0) -> bool:
    """Node code that polls ``is_cancelled`` without ever touching ``ctx.cancellation``."""
    deadline = time.monotonic() + seconds
    while not ctx.is_cancelled and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(ctx.is_cancelled)


def test_a_branch_abandoned_when_a_sibling_fails_is_told_and_stores_nothing(make_kernel: Build) -> None:
    told: list[bool] = []
    stored: list[str | None] = []
    finished = threading.Event()

    def branch(state: Any, ctx: Any) -> Any:
        if ctx.node == "bad":
            time.sleep(0.05)
            raise ExecutionError.validation("bad broke")
        told.append(_wait_until_told(ctx))
        stored.append(ctx.store_artifact("late.txt", ArtifactType.TEXT, "written after the failure"))
        stored.append(ctx.store_json_artifact("late.json", {"late": True}))
        finished.set()
        return state

    builder = GraphBuilder("fan").add_node("start", lambda s, ctx: s)
    for name in ("bad", "slow"):
        builder.add_node(name, branch).add_edge("start", name)
    kernel = make_kernel()
    result = kernel.execute_graph(builder.set_entry_point("start").compile(), 0)

    assert result.state is ExecutionState.FAILED
    assert finished.wait(5)
    assert told == [True]
    assert stored == [None, None]
    assert _artifacts(kernel).items == {}
    assert _events(kernel).of_type(EventType.ARTIFACT_CREATED) == []


def test_work_counted_by_a_branch_counts_until_it_is_abandoned_and_not_after(make_kernel: Build) -> None:
    done = threading.Event()

    def branch(state: Any, ctx: Any) -> Any:
        if ctx.node == "bad":
            time.sleep(0.1)
            raise ExecutionError.validation("bad broke")
        ctx.record_steps(3)  # while the kernel waits for it: counted
        _wait_until_told(ctx)
        ctx.record_steps(50)  # after it was abandoned: not
        done.set()
        return state

    builder = GraphBuilder("fan").add_node("start", lambda s, ctx: s)
    for name in ("bad", "slow"):
        builder.add_node(name, branch).add_edge("start", name)
    kernel = make_kernel()
    result = kernel.execute_graph(builder.set_entry_point("start").compile(), 0)
    assert result.state is ExecutionState.FAILED
    assert done.wait(5)
    time.sleep(0.05)  # anything the abandoned branch handed over has been handled (or dropped)
    usage = kernel.usage_snapshot()
    assert usage is not None
    assert usage["steps"] == 3 + 3  # start, bad, slow, and the 3 slow counted in time


def test_work_counted_by_an_inline_step_after_it_was_abandoned_is_not_counted(make_kernel: Build) -> None:
    done = threading.Event()

    def node(state: Any, ctx: Any) -> Any:
        ctx.record_steps(2)
        _wait_until_told(ctx)
        ctx.record_steps(50)
        done.set()
        return state

    kernel = make_kernel(_wall_limited(0.2))
    result = kernel.execute_graph(_one_node(node), 0)
    assert result.error is not None
    assert result.error.code == "wall_time_limit_exceeded"
    assert done.wait(5)
    usage = kernel.usage_snapshot()
    assert usage is not None
    assert usage["steps"] == 1 + 2


def test_a_step_stopped_by_the_wall_time_limit_is_told(make_kernel: Build) -> None:
    told: list[bool] = []
    finished = threading.Event()

    def node(state: Any, ctx: Any) -> Any:
        told.append(_wait_until_told(ctx))
        finished.set()
        return state

    kernel = make_kernel(_wall_limited(0.2))
    result = kernel.execute_graph(_one_node(node), 0)
    assert result.state is ExecutionState.FAILED
    assert result.error is not None
    assert result.error.code == "wall_time_limit_exceeded"
    assert finished.wait(5)
    assert told == [True]


def test_a_token_asked_for_after_the_step_was_abandoned_is_cancelled(make_kernel: Build) -> None:
    seen: list[tuple[bool, str | None]] = []
    finished = threading.Event()

    def node(state: Any, ctx: Any) -> Any:
        _wait_until_told(ctx)
        token = ctx.cancellation
        seen.append((token.is_cancelled, token.reason))
        finished.set()
        return state

    kernel = make_kernel(_wall_limited(0.2))
    assert kernel.execute_graph(_one_node(node), 0).state is ExecutionState.FAILED
    assert finished.wait(5)
    assert seen == [(True, "stopped: the execution failed")]


# --- item: time limits are enforced on time -------------------------------------------------------


def test_a_wall_time_limit_stops_a_blocked_step_when_it_runs_out(make_kernel: Build) -> None:
    release = threading.Event()

    def node(state: Any, ctx: Any) -> Any:
        release.wait(10)
        return state

    kernel = make_kernel(_wall_limited(0.2))
    started = time.monotonic()
    try:
        result = kernel.execute_graph(_one_node(node), 0)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert result.state is ExecutionState.FAILED
    assert result.error is not None
    assert result.error.code == "wall_time_limit_exceeded"
    assert 0.2 <= elapsed < 0.6  # not the second or so it took


class _LimitRunsOutAsTheStepReturns(FakeClock):
    """A fake clock that, once told, is ``jump`` seconds on for every thread but the caller's.

    The node tells it just before it returns: the limit runs out as the step comes back, and
    the thread that handles the step's result sees it, while the caller, whose timer would
    otherwise stop the step first, does not. What is checked is the driver's look at the
    limits when a step returns, and nothing else."""

    def __init__(self, jump: float) -> None:
        super().__init__()
        self.jump = jump
        self.jumped = False
        self.caller = threading.get_ident()

    def monotonic(self) -> float:
        moved = self.jumped and threading.get_ident() != self.caller
        return super().monotonic() + (self.jump if moved else 0.0)


def test_a_step_that_returns_after_the_wall_time_limit_ran_out_does_not_complete(make_kernel: Build) -> None:
    clock = _LimitRunsOutAsTheStepReturns(60.0)

    def node(state: Any, ctx: Any) -> Any:
        clock.jumped = True
        return "done"

    kernel = make_kernel(_wall_limited(10.0)).with_clock(clock)
    result = kernel.execute_graph(_one_node(node), 0)
    assert result.state is ExecutionState.FAILED
    assert result.error is not None
    assert result.error.code == "wall_time_limit_exceeded"
    assert _events(kernel).of_type(EventType.STEP_END) == []
    [step] = kernel.execution.steps.values()
    assert step.state is StepState.FAILED


def test_a_branch_that_returns_after_the_wall_time_limit_ran_out_does_not_complete(make_kernel: Build) -> None:
    clock = _LimitRunsOutAsTheStepReturns(60.0)
    release = threading.Event()

    def late(state: Any, ctx: Any) -> Any:
        clock.jumped = True
        return "late"

    def slow(state: Any, ctx: Any) -> Any:
        release.wait(10)
        return "slow"

    builder = GraphBuilder("fan").add_node("start", lambda state, ctx: state)
    builder.add_node("late", late).add_edge("start", "late")
    builder.add_node("slow", slow).add_edge("start", "slow")
    kernel = make_kernel(_wall_limited(10.0)).with_clock(clock)
    try:
        result = kernel.execute_graph(builder.set_entry_point("start").compile(), 0)
    finally:
        release.set()
    assert result.error is not None
    assert result.error.code == "wall_time_limit_exceeded"
    assert [e.data.get("name") for e in _events(kernel).of_type(EventType.STEP_END)] == ["start"]


def test_an_idle_limit_stops_a_silent_step_when_it_runs_out(make_kernel: Build) -> None:
    release = threading.Event()

    def node(state: Any, ctx: Any) -> Any:
        ctx.text_delta("one sign of life")
        release.wait(10)
        return state

    tenant = TenantContext("tenant-a", long_running=LongRunningPolicy(idle_timeout_s=0.25))
    kernel = make_kernel(tenant)
    started = time.monotonic()
    try:
        result = kernel.execute_graph(_one_node(node), 0)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert result.error is not None
    assert result.error.code == "idle_time_limit_exceeded"
    assert 0.25 <= elapsed < 0.7


def test_a_wall_time_limit_in_a_chain_counts_every_step(make_kernel: Build) -> None:
    release = threading.Event()

    def node(state: Any, ctx: Any) -> Any:
        if state == 2:
            release.wait(10)  # the third step runs until it is stopped
        else:
            time.sleep(0.25)
        return state + 1

    builder = GraphBuilder("chain")
    for i in range(4):
        builder.add_node(f"n{i}", node)
        if i:
            builder.add_edge(f"n{i - 1}", f"n{i}")
    kernel = make_kernel(_wall_limited(0.6))
    started = time.monotonic()
    try:
        result = kernel.execute_graph(builder.set_entry_point("n0").compile(), 0)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert result.error is not None
    assert result.error.code == "wall_time_limit_exceeded"
    # Stopped 0.6 s into the run, during the third step: not 0.6 s into that step (1.1 s), had
    # each step's time been counted alone.
    assert 0.6 <= elapsed < 1.0
    assert len(_events(kernel).of_type(EventType.STEP_END)) == 2


def test_a_wall_time_limit_runs_out_during_a_backoff(make_kernel: Build) -> None:
    from executions.kernel import RetryPolicy
    from executions.kernel.errors import Backoff

    policy = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=5_000)

    def node(state: Any, ctx: Any) -> Any:
        raise ExecutionError.network("connection reset", retry_policy=policy)

    # No inbox, so nothing else wakes the run during its backoff.
    kernel = ExecutionKernel.new(_wall_limited(0.3)).with_event_sink(InMemoryEventSink())
    started = time.monotonic()
    result = kernel.execute_graph(_one_node(node), 0)
    assert result.error is not None
    assert result.error.code == "wall_time_limit_exceeded"
    assert 0.3 <= time.monotonic() - started < 0.8


# --- item: a cancelled step says it was cancelled -------------------------------------------------


def test_a_step_interrupted_by_a_cancel_is_recorded_as_cancelled(make_kernel: Build) -> None:
    release = threading.Event()

    def node(state: Any, ctx: Any) -> Any:
        release.wait(10)
        return state

    kernel = make_kernel()
    threading.Timer(0.1, lambda: kernel.cancel("operator said stop")).start()
    try:
        result = kernel.execute_graph(_one_node(node), 0)
    finally:
        release.set()
    assert result.state is ExecutionState.CANCELLED
    failed = _events(kernel).of_type(EventType.STEP_FAILED)
    assert len(failed) == 1
    error = failed[0].data["error"]
    assert (error["category"], error["code"], error["retryable"]) == ("cancelled", "cancelled", False)
    assert "cancelled" in error["message"]
    step = next(iter(kernel.execution.steps.values()))
    assert step.state is StepState.FAILED
    assert step.error is not None
    assert step.error.category is ErrorCategory.CANCELLED


def test_a_branch_stopped_because_a_sibling_failed_is_recorded_as_cancelled(make_kernel: Build) -> None:
    release = threading.Event()

    def branch(state: Any, ctx: Any) -> Any:
        if ctx.node == "bad":
            raise ExecutionError.validation("bad broke")
        release.wait(10)
        return state

    builder = GraphBuilder("fan").add_node("start", lambda s, ctx: s)
    for name in ("bad", "slow"):
        builder.add_node(name, branch).add_edge("start", name)
    kernel = make_kernel()
    try:
        result = kernel.execute_graph(builder.set_entry_point("start").compile(), 0)
    finally:
        release.set()
    assert result.state is ExecutionState.FAILED
    assert result.error is not None
    assert result.error.category is ErrorCategory.VALIDATION
    errors = {e.data["name"]: e.data["error"] for e in _events(kernel).of_type(EventType.STEP_FAILED)}
    assert errors["bad"]["category"] == "validation"
    assert (errors["slow"]["category"], errors["slow"]["code"]) == ("cancelled", "execution_failed")
