"""Retries: what a failed attempt hands to the next one, and what may stop them in between."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from executions.kernel import (
    ControlAction,
    ControlMessage,
    ErrorCategory,
    ExecutionError,
    ExecutionKernel,
    ExecutionState,
    GraphBuilder,
    GuidanceMessage,
    InMemoryInbox,
    LongRunningPolicy,
    RetryPolicy,
    TenantContext,
)
from executions.kernel.errors import Backoff
from executions.kernel.events import EventType
from executions.kernel.memory import InMemoryCheckpointStore, InMemoryEventSink

Build = Callable[..., ExecutionKernel]


def _events(kernel: ExecutionKernel) -> InMemoryEventSink:
    sink = kernel.sink
    assert isinstance(sink, InMemoryEventSink)
    return sink


def _inbox(kernel: ExecutionKernel) -> InMemoryInbox:
    inbox = kernel.inbox()
    assert isinstance(inbox, InMemoryInbox)
    return inbox


def _one_node(fn: Callable[[Any, Any], Any], retry: RetryPolicy | None = None) -> Any:
    return GraphBuilder("retry").add_node("call", fn, retry=retry).set_entry_point("call").compile()


def _step_attempts(kernel: ExecutionKernel) -> list[int]:
    return [s.attempt for s in kernel.execution.steps.values()]


# --- item: the inbox is read between attempts ----------------------------------------------------


def test_a_cancel_sent_during_an_attempt_stops_the_retries(make_kernel: Build) -> None:
    policy = RetryPolicy(max_retries=3, backoff=Backoff.FIXED, base_delay_ms=10)
    attempts: list[int] = []

    def node(state: Any, ctx: Any) -> Any:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            _inbox(kernel).push(kernel.execution_id, ControlMessage(ControlAction.CANCEL, "ops", "stop retrying"))
        raise ExecutionError.network("connection reset", retry_policy=policy)

    kernel = make_kernel()
    result = kernel.execute_graph(_one_node(node), None)

    assert result.state is ExecutionState.CANCELLED
    assert attempts == [1]
    assert kernel.execution.cancel_reason == "stop retrying"
    assert _events(kernel).types()[-3:] == ["data-step-failed", "data-inbox-message", "data-execution-cancelled"]


def test_a_pause_sent_during_an_attempt_pauses_before_the_retry(make_kernel: Build) -> None:
    policy = RetryPolicy(max_retries=3, backoff=Backoff.FIXED, base_delay_ms=10)
    attempts: list[int] = []

    def node(state: Any, ctx: Any) -> Any:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            _inbox(kernel).push(kernel.execution_id, ControlMessage(ControlAction.PAUSE, "ops", "look first"))
            raise ExecutionError.network("connection reset", retry_policy=policy)
        return "done"

    kernel = make_kernel()
    graph = _one_node(node)
    paused = kernel.execute_graph(graph, None)

    assert paused.state is ExecutionState.PAUSED
    assert attempts == [1]
    assert paused.checkpoint is not None
    resumed = kernel.resume_graph(graph, paused.checkpoint)
    assert resumed.state is ExecutionState.COMPLETED
    assert attempts == [1, 2]
    assert _step_attempts(kernel) == [1, 2]


def test_messages_sent_during_a_last_failing_attempt_are_handled_and_audited(make_kernel: Build) -> None:
    def node(state: Any, ctx: Any) -> Any:
        _inbox(kernel).push(kernel.execution_id, GuidanceMessage("try the mirror"))
        raise ExecutionError.validation("bad input")

    kernel = make_kernel()
    result = kernel.execute_graph(_one_node(node), None)

    assert result.state is ExecutionState.FAILED
    assert _events(kernel).types()[-3:] == ["data-step-failed", "data-inbox-message", "data-execution-failed"]
    assert _events(kernel).of_type(EventType.INBOX_MESSAGE)[0].data["content"] == "try the mirror"
    assert not _inbox(kernel).has_messages([kernel.execution_id])


def test_a_pause_sent_during_a_backoff_takes_effect_before_the_backoff_ends(make_kernel: Build) -> None:
    policy = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=1_500)
    attempts: list[int] = []

    def node(state: Any, ctx: Any) -> Any:
        attempts.append(ctx.attempt)
        raise ExecutionError.network("connection reset", retry_policy=policy)

    kernel = make_kernel()
    graph = _one_node(node)
    pause = ControlMessage(ControlAction.PAUSE, "ops", "during the backoff")
    threading.Timer(0.1, lambda: _inbox(kernel).push(kernel.execution_id, pause)).start()
    started = time.monotonic()
    paused = kernel.execute_graph(graph, None)

    assert paused.state is ExecutionState.PAUSED
    assert time.monotonic() - started < 1.0
    assert attempts == [1]
    assert paused.checkpoint is not None
    # The retry is part of the checkpoint: after the resume the node runs as attempt 2, the
    # last one max_retries=1 allows, and its failure fails the execution.
    failed = kernel.resume_graph(graph, paused.checkpoint)
    assert failed.state is ExecutionState.FAILED
    assert attempts == [1, 2]
    assert _step_attempts(kernel) == [1, 2]
    assert failed.error is not None
    assert failed.error.attempt == 2


def test_a_crash_during_a_backoff_resumes_with_the_next_attempt_when_the_backoff_ends() -> None:
    policy = RetryPolicy(max_retries=2, backoff=Backoff.FIXED, base_delay_ms=60_000)
    attempts: list[int] = []

    def node(state: Any, ctx: Any) -> Any:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ExecutionError.network("connection reset", retry_policy=policy)
        return ctx.attempt

    graph = _one_node(node)
    sink, store = InMemoryEventSink(), InMemoryCheckpointStore()
    first = ExecutionKernel.new(TenantContext("t")).with_event_sink(sink).with_checkpoint_store(store)
    runner = threading.Thread(target=first.execute_graph, args=(graph, None))
    runner.start()
    try:
        deadline = time.monotonic() + 5
        while store.load_checkpoint(first.execution_id) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        checkpoint = store.load_checkpoint(first.execution_id)
        assert checkpoint is not None  # taken after the failed attempt, during its backoff
        # What a second process finds: the rows as they were, the log, the last checkpoint.
        crashed = copy.deepcopy(first.execution)
        last_seq = sink.events[-1].seq
    finally:
        first.cancel("the first worker is gone")
        runner.join(5)
    retry = checkpoint.retries["call"]
    assert retry["attempt"] == 2
    assert retry["not_before"] is not None
    # The second process starts with 0.6 s of the backoff left (rewritten so the test is short).
    started = time.monotonic()
    soon = (datetime.now(UTC) + timedelta(seconds=0.6)).isoformat()
    due = replace(checkpoint, retries={"call": {**retry, "not_before": soon}})
    store.save_checkpoint(due)
    second = (
        ExecutionKernel.with_execution(crashed, TenantContext("t"), last_seq=last_seq)
        .with_event_sink(InMemoryEventSink())
        .with_checkpoint_store(store)
    )
    result = second.resume_graph(graph, due)
    assert time.monotonic() - started >= 0.5
    assert result.state is ExecutionState.COMPLETED
    assert result.output == 2
    assert attempts == [1, 2]
    assert [s.attempt for s in second.execution.steps.values()] == [1, 2]


# --- item: an error that says it must not be retried is not ---------------------------------------


def test_a_node_retry_policy_does_not_retry_an_error_that_must_not_be(make_kernel: Build) -> None:
    attempts: list[int] = []

    def node(state: Any, ctx: Any) -> Any:
        attempts.append(ctx.attempt)
        raise ExecutionError.tool("HTTP 400: bad request", retryable=False)

    policy = RetryPolicy(max_retries=3, backoff=Backoff.NONE)
    result = make_kernel().execute_graph(_one_node(node, policy), None)
    assert result.state is ExecutionState.FAILED
    assert attempts == [1]
    assert result.error is not None
    assert result.error.category is ErrorCategory.TOOL

    attempts.clear()

    def no_retry_llm(state: Any, ctx: Any) -> Any:
        attempts.append(ctx.attempt)
        raise ExecutionError.llm("the prompt is too long", retry_policy=RetryPolicy.no_retry())

    assert make_kernel().execute_graph(_one_node(no_retry_llm, policy), None).state is ExecutionState.FAILED
    assert attempts == [1]


def test_a_node_retry_policy_replaces_the_policy_of_a_retryable_error(make_kernel: Build) -> None:
    attempts: list[int] = []

    def node(state: Any, ctx: Any) -> Any:
        attempts.append(ctx.attempt)
        raise ExecutionError.llm("overloaded")  # by default 3 retries, 1 s apart and more

    policy = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=1)
    result = make_kernel().execute_graph(_one_node(node, policy), None)
    assert result.state is ExecutionState.FAILED
    assert attempts == [1, 2]


# --- item: a backoff is not idle time -------------------------------------------------------------


def test_a_backoff_longer_than_the_idle_limit_is_not_idleness(make_kernel: Build) -> None:
    policy = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=500)
    attempts: list[int] = []

    def node(state: Any, ctx: Any) -> Any:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ExecutionError.network("connection reset", retry_policy=policy)
        return "ok"

    tenant = TenantContext("tenant-a", long_running=LongRunningPolicy(idle_timeout_s=0.2))
    kernel = make_kernel(tenant)
    result = kernel.execute_graph(_one_node(node), None)
    assert result.error is None
    assert result.state is ExecutionState.COMPLETED
    assert attempts == [1, 2]


def test_a_silent_step_after_a_backoff_is_still_stopped_for_idleness(make_kernel: Build) -> None:
    policy = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=300)
    release = threading.Event()

    def node(state: Any, ctx: Any) -> Any:
        if ctx.attempt == 1:
            raise ExecutionError.network("connection reset", retry_policy=policy)
        release.wait(5)
        return "late"

    tenant = TenantContext("tenant-a", long_running=LongRunningPolicy(idle_timeout_s=0.2))
    kernel = make_kernel(tenant)
    try:
        started = time.monotonic()
        result = kernel.execute_graph(_one_node(node), None)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert result.state is ExecutionState.FAILED
    assert result.error is not None
    assert result.error.code == "idle_time_limit_exceeded"
    assert 0.45 < elapsed < 0.9  # 0.3 s backoff, then 0.2 s of silence


# --- item: guidance reaches every attempt ---------------------------------------------------------


def test_guidance_reaches_the_retry_of_the_node_it_was_given_to(make_kernel: Build) -> None:
    policy = RetryPolicy(max_retries=2, backoff=Backoff.FIXED, base_delay_ms=1)
    seen: list[list[str]] = []

    def node(state: Any, ctx: Any) -> Any:
        seen.append([g.content for g in ctx.guidance])
        if ctx.attempt == 1:
            _inbox(kernel).push(kernel.execution_id, GuidanceMessage("and use the mirror"))
            raise ExecutionError.network("connection reset", retry_policy=policy)
        if ctx.attempt == 2:
            raise ExecutionError.network("connection reset", retry_policy=policy)
        return "ok"

    kernel = make_kernel()
    _inbox(kernel).push(kernel.execution_id, GuidanceMessage("be gentle"))
    result = kernel.execute_graph(_one_node(node), None)
    assert result.state is ExecutionState.COMPLETED
    assert seen == [
        ["be gentle"],
        ["be gentle", "and use the mirror"],
        ["be gentle", "and use the mirror"],
    ]


# --- item: a backoff too long for a timer ---------------------------------------------------------


def test_a_backoff_longer_than_any_timer_can_wait_is_still_cancellable(make_kernel: Build) -> None:
    huge = int(threading.TIMEOUT_MAX * 1000) * 4
    policy = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=huge)

    def node(state: Any, ctx: Any) -> Any:
        raise ExecutionError.network("connection reset", retry_policy=policy)

    kernel = make_kernel()
    threading.Timer(0.2, lambda: kernel.cancel("enough")).start()
    result = kernel.execute_graph(_one_node(node), None)
    assert result.state is ExecutionState.CANCELLED
    assert kernel.state is ExecutionState.CANCELLED


def test_a_node_sleeping_longer_than_any_timer_can_wait_is_cancellable(make_kernel: Build) -> None:
    slept: list[str] = []

    def node(state: Any, ctx: Any) -> Any:
        try:
            ctx.sleep(threading.TIMEOUT_MAX * 4)
        except BaseException as exc:
            slept.append(type(exc).__name__)
            raise
        return state

    kernel = make_kernel()
    threading.Timer(0.2, lambda: kernel.cancel("enough")).start()
    result = kernel.execute_graph(_one_node(node), None)
    assert result.state is ExecutionState.CANCELLED
    deadline = time.monotonic() + 2
    while not slept and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slept == ["Cancelled"]


def test_looking_at_an_empty_inbox_during_a_backoff_opens_no_unit_of_work(make_kernel: Build) -> None:
    from contextlib import AbstractContextManager, nullcontext

    class CountingUnits:
        def __init__(self) -> None:
            self.opened = 0

        def atomic(self) -> AbstractContextManager[object]:
            self.opened += 1
            return nullcontext()

    policy = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=1_200)

    def node(state: Any, ctx: Any) -> Any:
        if ctx.attempt == 1:
            raise ExecutionError.network("connection reset", retry_policy=policy)
        return "ok"

    units = CountingUnits()
    kernel = make_kernel().with_unit_of_work(units)
    result = kernel.execute_graph(_one_node(node), None)
    assert result.state is ExecutionState.COMPLETED
    # Units for: the start and first step, the failure, the retry, the end (with nesting);
    # not one more for each of the inbox's ~5 looks during the backoff.
    quick = make_kernel().with_unit_of_work(CountingUnits())
    fast = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=1)

    def quick_node(state: Any, ctx: Any) -> Any:
        if ctx.attempt == 1:
            raise ExecutionError.network("connection reset", retry_policy=fast)
        return "ok"

    assert quick.execute_graph(_one_node(quick_node), None).state is ExecutionState.COMPLETED
    baseline = quick._uow.opened  # type: ignore[union-attr]
    assert units.opened <= baseline + 1


# --- item: a backoff that has ended but whose lane cannot start does not spin the driver ----------


class _CountingUnits:
    """A unit of work that counts how often the run opens one."""

    def __init__(self) -> None:
        self.opened = 0

    def atomic(self) -> Any:
        from contextlib import nullcontext

        self.opened += 1
        return nullcontext()


def _fan_out_with_a_failing_branch(kernel_ref: list[ExecutionKernel], branches: int, pause: bool) -> Any:
    """start -> branches; branch ``a`` fails its first attempt (a short backoff), the others take 1 s."""
    policy = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=100)

    def branch(state: Any, ctx: Any) -> Any:
        if ctx.node == "a" and ctx.attempt == 1:
            if pause:
                kernel = kernel_ref[0]
                _inbox(kernel).push(kernel.execution_id, ControlMessage(ControlAction.PAUSE, "ops", "look"))
            raise ExecutionError.network("connection reset", retry_policy=policy)
        if ctx.node != "a":
            time.sleep(1.0)
        return state

    builder = GraphBuilder("fan").add_node("start", lambda state, ctx: state)
    for name in ("a", "b", "c")[:branches]:
        builder.add_node(name, branch).add_edge("start", name)
    return builder.set_entry_point("start")


def test_a_backoff_that_ends_during_a_pause_in_a_fan_out_does_not_spin(make_kernel: Build) -> None:
    # The pause stops launching while branch b still runs: the driver waits for b, and does
    # not open a unit of work over and over for a's backoff, which ended but cannot launch.
    kernel_ref: list[ExecutionKernel] = []
    graph = _fan_out_with_a_failing_branch(kernel_ref, 2, pause=True).compile()
    units = _CountingUnits()
    kernel = make_kernel().with_unit_of_work(units)
    kernel_ref.append(kernel)
    result = kernel.execute_graph(graph, 0)
    assert result.state is ExecutionState.PAUSED
    assert units.opened < 30


def test_a_backoff_that_ends_with_every_branch_slot_taken_does_not_spin(make_kernel: Build) -> None:
    # Three branches, two slots: a fails and backs off, c takes its slot; when a's backoff ends
    # both slots are taken for a second, and a starts when one frees, not before.
    kernel_ref: list[ExecutionKernel] = []
    graph = _fan_out_with_a_failing_branch(kernel_ref, 3, pause=False).compile(max_concurrent_branches=2)
    units = _CountingUnits()
    kernel = make_kernel().with_unit_of_work(units)
    kernel_ref.append(kernel)
    result = kernel.execute_graph(graph, 0)
    assert result.state is ExecutionState.COMPLETED
    assert [(s.name, s.attempt) for s in kernel.execution.steps.values() if s.name == "a"] == [("a", 1), ("a", 2)]
    assert units.opened < 30


def test_a_backoff_longer_than_any_timer_can_wait_with_nothing_else_to_wake_for() -> None:
    # No inbox to look at and no time limit: the backoff is the only deadline, so the run's one
    # wait is as long as a wait may be, not the backoff (a timeout past threading.TIMEOUT_MAX
    # raises OverflowError).
    from executions.kernel import ResourceLimits

    huge = int(threading.TIMEOUT_MAX * 1000) * 4
    policy = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=huge)

    def node(state: Any, ctx: Any) -> Any:
        raise ExecutionError.network("connection reset", retry_policy=policy)

    limits = ResourceLimits(max_steps=None, max_tokens=None, max_wall_time_s=None, max_cost_usd=None)
    tenant = TenantContext("t", limits=limits, long_running=LongRunningPolicy.unlimited())
    kernel = ExecutionKernel.new(tenant).with_event_sink(InMemoryEventSink())
    assert kernel.inbox() is None
    threading.Timer(0.2, lambda: kernel.cancel("enough")).start()
    result = kernel.execute_graph(_one_node(node), None)
    assert result.state is ExecutionState.CANCELLED


def test_a_wall_time_limit_longer_than_any_timer_can_wait() -> None:
    # The caller waits for the outcome until the limit may run out, and the driver until its
    # backoff ends: both waits are cut to what a wait may be.
    from executions.kernel import ResourceLimits

    policy = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=50)

    def node(state: Any, ctx: Any) -> Any:
        if ctx.attempt == 1:
            raise ExecutionError.network("connection reset", retry_policy=policy)
        return "ok"

    limits = ResourceLimits(max_steps=None, max_tokens=None, max_wall_time_s=threading.TIMEOUT_MAX * 4)
    tenant = TenantContext("t", limits=limits, long_running=LongRunningPolicy.unlimited())
    kernel = ExecutionKernel.new(tenant).with_event_sink(InMemoryEventSink())
    result = kernel.execute_graph(_one_node(node), None)
    assert result.state is ExecutionState.COMPLETED
    assert result.output == "ok"
