"""Running graphs through the kernel: events, cancellation, inbox, retries, fan-out, checkpoints."""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from executions.kernel import (
    ControlAction,
    ControlMessage,
    ErrorCategory,
    EvidenceImpact,
    EvidenceMessage,
    ExecutionError,
    ExecutionKernel,
    ExecutionState,
    GraphBuilder,
    GuidanceMessage,
    GuidancePriority,
    RetryPolicy,
    StepState,
    TenantContext,
    WaitReason,
)
from executions.kernel.errors import Backoff
from executions.kernel.events import EventType
from executions.kernel.memory import InMemoryCheckpointStore, InMemoryEventSink

from .conftest import chain, unlimited

Build = Callable[..., ExecutionKernel]


def events_of(kernel: ExecutionKernel) -> InMemoryEventSink:
    sink = kernel.sink
    assert isinstance(sink, InMemoryEventSink)
    return sink


def checkpoints_of(kernel: ExecutionKernel) -> InMemoryCheckpointStore:
    store = kernel.checkpoint_store()
    assert isinstance(store, InMemoryCheckpointStore)
    return store


def test_chain_emits_one_gap_free_stream_ending_in_one_terminal_event(make_kernel: Build) -> None:
    kernel = make_kernel()
    result = kernel.execute_graph(chain(3), 10)

    assert result.state is ExecutionState.COMPLETED
    assert result.output == 13
    events = events_of(kernel).events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type.value for e in events] == [
        "data-execution-start",
        *["data-step-start", "data-step-end", "data-checkpoint"] * 3,
        "data-execution-end",
    ]
    assert sum(e.is_terminal for e in events) == 1
    assert events[-1].data["output"] == 13
    assert len({e.id for e in events}) == len(events)
    assert all(e.execution_id == kernel.execution_id for e in events)
    ends = [e for e in events if e.type is EventType.STEP_END]
    assert [e.data["output"] for e in ends] == [11, 12, 13]
    assert [e.data["name"] for e in ends] == ["n0", "n1", "n2"]
    assert [s.state for s in kernel.execution.steps.values()] == [StepState.COMPLETED] * 3


def test_wire_form_matches_the_contract(make_kernel: Build) -> None:
    kernel = make_kernel()
    kernel.execute_graph(chain(1), 0)
    wire = events_of(kernel).events[2].to_wire()
    assert set(wire) == {"id", "seq", "type", "execution_id", "step_id", "timestamp", "data"}
    assert wire["id"].startswith("evt_")
    assert wire["type"] == "data-step-end"
    assert wire["step_id"].startswith("step_")
    assert wire["timestamp"].endswith("Z")
    assert wire["data"] == {"name": "n0", "output": 1, "duration_ms": wire["data"]["duration_ms"]}


def _blocking_graph(release: threading.Event, seconds: float = 60.0) -> Any:
    def slow(state: Any, ctx: Any) -> Any:
        release.wait(seconds)  # one blocking call, not a polling loop
        ctx.text_delta("too late")
        return state

    return GraphBuilder("slow").add_node("slow", slow).set_entry_point("slow").compile()


def test_cancel_during_a_blocked_step_returns_within_100ms(make_kernel: Build) -> None:
    release = threading.Event()
    kernel = make_kernel()
    timer = threading.Timer(0.2, lambda: (setattr(timer, "at", time.monotonic()), kernel.cancel("operator said stop")))
    timer.start()
    try:
        result = kernel.execute_graph(_blocking_graph(release), None)
        returned = time.monotonic()
    finally:
        release.set()

    assert result.state is ExecutionState.CANCELLED
    assert returned - timer.at < 0.1  # type: ignore[attr-defined]
    types = events_of(kernel).types()
    assert types == ["data-execution-start", "data-step-start", "data-step-failed", "data-execution-cancelled"]
    failed = events_of(kernel).of_type(EventType.STEP_FAILED)[0]
    assert failed.data["error"]["message"] == "cancelled during step"
    assert events_of(kernel).events[-1].data["reason"] == "operator said stop"
    # The abandoned node finishes later; nothing it does reaches the stream.
    time.sleep(0.05)
    assert events_of(kernel).types() == types


def test_cancel_before_the_first_step_runs_nothing(make_kernel: Build) -> None:
    calls: list[int] = []
    kernel = make_kernel()
    kernel.cancel("never mind")
    result = kernel.execute_graph(chain(2, lambda s, ctx: calls.append(s) or s), 0)
    assert result.state is ExecutionState.CANCELLED
    assert calls == []
    assert events_of(kernel).types() == ["data-execution-start", "data-execution-cancelled"]


def test_node_sees_its_token_cancelled(make_kernel: Build) -> None:
    seen = threading.Event()

    def cooperative(state: Any, ctx: Any) -> Any:
        ctx.sleep(30)  # raises Cancelled as soon as the token fires
        return state

    def watcher(state: Any, ctx: Any) -> Any:
        ctx.cancellation.wait(5)
        seen.set()
        return state

    graph = GraphBuilder("g").add_node("a", cooperative).set_entry_point("a").compile()
    kernel = make_kernel()
    threading.Timer(0.1, kernel.cancel).start()
    assert kernel.execute_graph(graph, 1).state is ExecutionState.CANCELLED

    graph2 = GraphBuilder("g2").add_node("w", watcher).set_entry_point("w").compile()
    kernel2 = make_kernel()
    threading.Timer(0.1, kernel2.cancel).start()
    kernel2.execute_graph(graph2, 1)
    assert seen.wait(1)


def test_pause_through_the_inbox_checkpoints_and_resume_runs_no_step_twice(make_kernel: Build) -> None:
    calls: Counter[str] = Counter()

    def count(state: Any, ctx: Any) -> Any:
        calls[ctx.node] += 1
        if ctx.node == "n1":
            kernel.inbox().push(kernel.execution_id, ControlMessage(ControlAction.PAUSE, "ops", "maintenance"))  # type: ignore[union-attr]
        return state + 1

    graph = chain(4, count)
    kernel = make_kernel()
    result = kernel.execute_graph(graph, 0)

    assert result.state is ExecutionState.PAUSED
    assert result.checkpoint is not None
    assert result.checkpoint.current_nodes == ["n2"]
    assert result.checkpoint.position.lanes[0].state == 2
    assert calls == Counter({"n0": 1, "n1": 1})
    assert events_of(kernel).types()[-3:] == ["data-inbox-message", "data-execution-paused", "data-checkpoint"]

    resumed = kernel.resume_graph(graph, checkpoints_of(kernel).load_checkpoint(kernel.execution_id))  # type: ignore[arg-type]
    assert resumed.state is ExecutionState.COMPLETED
    assert resumed.output == 4
    assert calls == Counter({"n0": 1, "n1": 1, "n2": 1, "n3": 1})
    events = events_of(kernel).events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(e.is_terminal for e in events) == 1


def test_cancel_through_the_inbox(make_kernel: Build) -> None:
    def n(state: Any, ctx: Any) -> Any:
        if ctx.node == "n0":
            kernel.inbox().push(kernel.execution_id, ControlMessage(ControlAction.CANCEL, "ops", "wrong input"))  # type: ignore[union-attr]
        return state

    kernel = make_kernel()
    result = kernel.execute_graph(chain(3, n), 0)
    assert result.state is ExecutionState.CANCELLED
    assert kernel.execution.cancel_reason == "wrong input"
    assert [s.name for s in kernel.execution.steps.values()] == ["n0"]


def test_inbox_messages_handled_control_first_and_guidance_reaches_the_next_node(make_kernel: Build) -> None:
    received: dict[str, Any] = {}

    def first(state: Any, ctx: Any) -> Any:
        inbox = kernel.inbox()
        assert inbox is not None
        inbox.push(kernel.execution_id, GuidanceMessage("be brief"))
        inbox.push(kernel.execution_id, GuidanceMessage("use metric units", GuidancePriority.HIGH))
        inbox.push(kernel.execution_id, EvidenceMessage("web", "supports", {"x": 1}, 0.5))
        inbox.push(
            kernel.execution_id, EvidenceMessage("lab", "contradicts", {"x": 2}, 0.9, EvidenceImpact.CONTRADICTS_PLAN)
        )
        inbox.push(kernel.execution_id, ControlMessage(ControlAction.CHECKPOINT, "ops"))
        return state

    def second(state: Any, ctx: Any) -> Any:
        received["guidance"] = [g.content for g in ctx.guidance]
        received["evidence"] = [e.title for e in ctx.evidence]
        return state

    def third(state: Any, ctx: Any) -> Any:
        received["third"] = len(ctx.guidance)
        return state

    graph = (
        GraphBuilder("g")
        .add_node("a", first)
        .add_node("b", second)
        .add_node("c", third)
        .add_edge("a", "b")
        .add_edge("b", "c")
        .set_entry_point("a")
        .compile()
    )
    kernel = make_kernel()
    assert kernel.execute_graph(graph, 0).state is ExecutionState.COMPLETED

    handled = [e.data for e in events_of(kernel).of_type(EventType.INBOX_MESSAGE)]
    assert [(m["kind"], m.get("title") or m.get("content") or m.get("action")) for m in handled] == [
        ("control", "checkpoint"),
        ("evidence", "contradicts"),
        ("evidence", "supports"),
        ("guidance", "use metric units"),
        ("guidance", "be brief"),
    ]
    assert received == {
        "guidance": ["use metric units", "be brief"],
        "evidence": ["contradicts", "supports"],
        "third": 0,  # handed over once
    }


def test_child_that_inherits_reads_its_parents_inbox(make_kernel: Build) -> None:
    from executions.kernel import SpawnMode

    parent = make_kernel()
    child = parent.spawn_child(SpawnMode.child(inherit_inbox=True)).with_event_sink(InMemoryEventSink())
    seen: list[str] = []
    # Messages already waiting when a run starts go to its first node.
    graph = (
        GraphBuilder("g")
        .add_node("a", lambda s, ctx: seen.extend(g.content for g in ctx.guidance) or s)
        .set_entry_point("a")
        .compile()
    )
    parent.inbox().push(parent.execution_id, GuidanceMessage("from the parent's inbox"))  # type: ignore[union-attr]
    assert child.execute_graph(graph, 0).state is ExecutionState.COMPLETED
    assert seen == ["from the parent's inbox"]
    assert child.execution.parent_id == parent.execution_id


def test_cancelling_a_parent_cancels_its_child(make_kernel: Build) -> None:
    from executions.kernel import SpawnMode

    release = threading.Event()
    parent = make_kernel()
    child = parent.spawn_child(SpawnMode.child(background=True)).with_event_sink(InMemoryEventSink())
    threading.Timer(0.1, lambda: parent.cancel("parent cancelled")).start()
    try:
        result = child.execute_graph(_blocking_graph(release), None)
    finally:
        release.set()
    assert result.state is ExecutionState.CANCELLED
    assert child.execution.cancel_reason == "parent cancelled"


def _flaky(failures: int, error: Callable[[], ExecutionError]) -> Callable[[Any, Any], Any]:
    attempts: list[int] = []

    def node(state: Any, ctx: Any) -> Any:
        attempts.append(ctx.attempt)
        if len(attempts) <= failures:
            raise error()
        return {"attempts": list(attempts)}

    return node


def test_retryable_errors_are_retried_with_backoff_then_succeed(make_kernel: Build) -> None:
    policy = RetryPolicy(max_retries=3, backoff=Backoff.EXPONENTIAL, base_delay_ms=40, max_delay_ms=1000)
    node = _flaky(2, lambda: ExecutionError.network("connection reset", retry_policy=policy))
    graph = GraphBuilder("flaky").add_node("call", node).set_entry_point("call").compile()
    kernel = make_kernel()
    started = time.monotonic()
    result = kernel.execute_graph(graph, None)
    elapsed = time.monotonic() - started

    assert result.state is ExecutionState.COMPLETED
    assert result.output == {"attempts": [1, 2, 3]}
    assert elapsed >= (40 + 80) / 1000
    steps = list(kernel.execution.steps.values())
    assert [(s.attempt, s.state) for s in steps] == [
        (1, StepState.FAILED),
        (2, StepState.FAILED),
        (3, StepState.COMPLETED),
    ]
    assert steps[0].error is not None
    assert steps[0].error.category is ErrorCategory.NETWORK
    assert steps[1].error is not None
    assert steps[1].error.attempt == 2


def test_retries_stop_at_max_retries_and_fail_the_execution(make_kernel: Build) -> None:
    policy = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=1)
    node = _flaky(5, lambda: ExecutionError.timeout("slow upstream", retry_policy=policy))
    kernel = make_kernel()
    result = kernel.execute_graph(GraphBuilder("f").add_node("call", node).set_entry_point("call").compile(), None)
    assert result.state is ExecutionState.FAILED
    assert result.error is not None
    assert (result.error.category, result.error.attempt) == (ErrorCategory.TIMEOUT, 2)
    assert len(kernel.execution.steps) == 2


def test_fatal_and_unknown_errors_are_not_retried(make_kernel: Build) -> None:
    def boom(state: Any, ctx: Any) -> Any:
        raise KeyError("missing")

    graph = GraphBuilder("f").add_node("call", boom, retry=RetryPolicy(max_retries=5)).set_entry_point("call").compile()
    kernel = make_kernel()
    result = kernel.execute_graph(graph, None)
    assert result.state is ExecutionState.FAILED
    assert result.error is not None
    assert result.error.category is ErrorCategory.KERNEL_INTERNAL
    assert result.error.message == "KeyError: 'missing'"
    assert len(kernel.execution.steps) == 1
    assert events_of(kernel).types()[-1] == "data-execution-failed"


def test_node_retry_policy_applies_to_retryable_categories(make_kernel: Build) -> None:
    node = _flaky(2, lambda: ExecutionError.tool("rate limited", retryable=True))
    policy = RetryPolicy(max_retries=2, backoff=Backoff.LINEAR, base_delay_ms=1)
    graph = GraphBuilder("f").add_node("call", node, retry=policy).set_entry_point("call").compile()
    result = make_kernel().execute_graph(graph, None)
    assert result.state is ExecutionState.COMPLETED
    assert result.output == {"attempts": [1, 2, 3]}


def test_cancel_during_backoff_is_prompt(make_kernel: Build) -> None:
    policy = RetryPolicy(max_retries=3, backoff=Backoff.FIXED, base_delay_ms=30_000)
    node = _flaky(5, lambda: ExecutionError.llm("overloaded", retry_policy=policy))
    kernel = make_kernel()
    threading.Timer(0.1, kernel.cancel).start()
    started = time.monotonic()
    result = kernel.execute_graph(GraphBuilder("f").add_node("call", node).set_entry_point("call").compile(), None)
    assert result.state is ExecutionState.CANCELLED
    assert time.monotonic() - started < 1.0


def _fanout_graph(delay: float, join: bool = True, fail_branch: str | None = None) -> GraphBuilder:
    def branch(state: Any, ctx: Any) -> Any:
        time.sleep(delay)
        if ctx.node == fail_branch:
            raise ExecutionError.validation(f"{ctx.node} broke")
        return f"{ctx.node}:{state}"

    builder = GraphBuilder("fan").add_node("start", lambda s, ctx: s * 2)
    for name in ("b1", "b2", "b3"):
        builder.add_node(name, branch).add_edge("start", name)
    builder.set_entry_point("start")
    if join:
        builder.add_node("join", lambda s, ctx: sorted(s.items()))
        for name in ("b1", "b2", "b3"):
            builder.add_edge(name, "join")
    return builder


def test_fan_out_runs_branches_concurrently_and_joins(make_kernel: Build) -> None:
    kernel = make_kernel()
    started = time.monotonic()
    result = kernel.execute_graph(_fanout_graph(0.3).compile(), 5)
    elapsed = time.monotonic() - started

    assert result.state is ExecutionState.COMPLETED
    assert result.output == [("b1", "b1:10"), ("b2", "b2:10"), ("b3", "b3:10")]
    assert elapsed < 0.75  # three 0.3 s branches side by side, not 0.9 s in a row
    steps = list(kernel.execution.steps.values())
    origin = steps[0].id
    assert sorted(s.name for s in steps if s.parent_step_id == origin) == ["b1", "b2", "b3"]
    assert steps[-1].name == "join"
    assert steps[-1].parent_step_id is None


def test_fan_out_respects_max_concurrent_branches(make_kernel: Build) -> None:
    kernel = make_kernel()
    started = time.monotonic()
    result = kernel.execute_graph(_fanout_graph(0.15).compile(max_concurrent_branches=1), 1)
    assert result.state is ExecutionState.COMPLETED
    assert time.monotonic() - started >= 0.45


def test_fan_out_to_the_end_completes_with_every_branch(make_kernel: Build) -> None:
    result = make_kernel().execute_graph(_fanout_graph(0.0, join=False).compile(), 2)
    assert result.output == {"b1": "b1:4", "b2": "b2:4", "b3": "b3:4"}


def test_a_failing_branch_fails_the_execution(make_kernel: Build) -> None:
    kernel = make_kernel()
    result = kernel.execute_graph(_fanout_graph(0.05, fail_branch="b2").compile(), 1)
    assert result.state is ExecutionState.FAILED
    assert result.error is not None
    assert result.error.message == "b2 broke"
    assert "join" not in [s.name for s in kernel.execution.steps.values()]
    assert all(s.state.is_terminal for s in kernel.execution.steps.values())


def test_cancel_during_fan_out_fails_every_running_branch(make_kernel: Build) -> None:
    kernel = make_kernel()
    threading.Timer(0.1, kernel.cancel).start()
    result = kernel.execute_graph(_fanout_graph(2.0).compile(), 1)
    assert result.state is ExecutionState.CANCELLED
    branch_steps = [s for s in kernel.execution.steps.values() if s.name.startswith("b")]
    assert [s.state for s in branch_steps] == [StepState.FAILED] * 3


def test_resume_after_a_crash_reruns_only_the_step_that_was_running() -> None:
    calls: Counter[str] = Counter()
    gate = threading.Event()

    def node(state: Any, ctx: Any) -> Any:
        calls[ctx.node] += 1
        if ctx.node == "n2" and calls["n2"] == 1:
            gate.wait(10)  # the first worker "dies" here
        return state + 1

    graph = chain(4, node)
    sink, store = InMemoryEventSink(), InMemoryCheckpointStore()
    first = ExecutionKernel.new(TenantContext("t")).with_event_sink(sink).with_checkpoint_store(store)
    runner = threading.Thread(target=first.execute_graph, args=(graph, 0))
    runner.start()
    assert sink.wait_for(EventType.STEP_START) is not None
    deadline = time.monotonic() + 5
    while calls["n2"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    # What a second process finds: the rows as they were, the log, the last checkpoint.
    crashed = copy.deepcopy(first.execution)
    log = list(sink.events)
    checkpoint = store.load_checkpoint(crashed.id)
    assert checkpoint is not None
    assert checkpoint.current_nodes == ["n2"]

    sink2 = InMemoryEventSink()
    second = (
        ExecutionKernel.with_execution(crashed, TenantContext("t"), last_seq=log[-1].seq)
        .with_event_sink(sink2)
        .with_checkpoint_store(store)
    )
    result = second.resume_graph(graph, checkpoint)
    first.cancel("the first worker is gone")
    gate.set()
    runner.join(5)

    assert result.state is ExecutionState.COMPLETED
    assert result.output == 4
    assert calls == Counter({"n0": 1, "n1": 1, "n2": 2, "n3": 1})
    steps = [(s.name, s.attempt, s.state) for s in second.execution.steps.values()]
    assert steps == [
        ("n0", 1, StepState.COMPLETED),
        ("n1", 1, StepState.COMPLETED),
        ("n2", 1, StepState.FAILED),
        ("n2", 2, StepState.COMPLETED),
        ("n3", 1, StepState.COMPLETED),
    ]
    abandoned = sink2.events[0]
    assert abandoned.type is EventType.STEP_FAILED
    assert abandoned.data["error"]["code"] == "worker_lost"
    assert [e.seq for e in log + sink2.events] == list(range(1, len(log) + len(sink2.events) + 1))


def test_resume_from_a_checkpoint_mid_fan_out() -> None:
    calls: Counter[str] = Counter()

    def node(state: Any, ctx: Any) -> Any:
        calls[ctx.node] += 1
        if ctx.node == "b1":
            kernel.inbox().push(kernel.execution_id, ControlMessage(ControlAction.PAUSE, "ops"))  # type: ignore[union-attr]
        return state

    from executions.kernel import InMemoryInbox

    builder = GraphBuilder("fan").add_node("start", node).add_node("join", lambda s, ctx: sorted(s))
    for name in ("b1", "b2"):
        builder.add_node(name, node).add_edge("start", name).add_edge(name, "join")
    graph = builder.set_entry_point("start").compile(max_concurrent_branches=1)
    store = InMemoryCheckpointStore()
    kernel = ExecutionKernel.new(TenantContext("t")).with_checkpoint_store(store).with_inbox(InMemoryInbox())
    paused = kernel.execute_graph(graph, 0)
    assert paused.state is ExecutionState.PAUSED
    assert paused.checkpoint is not None
    assert paused.checkpoint.position.fanout_origin == "start"
    assert paused.checkpoint.current_nodes == ["b2"]

    done = kernel.resume_graph(graph, paused.checkpoint)
    assert done.state is ExecutionState.COMPLETED
    assert done.output == ["b1", "b2"]
    assert calls == Counter({"start": 1, "b1": 1, "b2": 1})


def test_interrupt_waits_for_approval_and_the_node_gets_the_answer(make_kernel: Build) -> None:
    calls: list[Any] = []

    def approve(state: Any, ctx: Any) -> Any:
        answer = ctx.interrupt(WaitReason.APPROVAL, prompt="ship it?")
        calls.append(answer)
        return {"approved": answer["approved"], "before": state}

    graph = (
        GraphBuilder("approval")
        .add_node("draft", lambda s, ctx: "draft")
        .add_node("approve", approve)
        .add_node("publish", lambda s, ctx: s)
        .add_edge("draft", "approve")
        .add_edge("approve", "publish")
        .set_entry_point("draft")
        .compile()
    )
    kernel = make_kernel()
    waiting = kernel.execute_graph(graph, None)
    assert waiting.state is ExecutionState.WAITING
    assert waiting.wait_reason is WaitReason.APPROVAL
    assert waiting.prompt == {"prompt": "ship it?", "schema": None}
    assert calls == []
    waiting_event = events_of(kernel).of_type(EventType.EXECUTION_WAITING)[0]
    usage = waiting_event.data.pop("usage")  # a run that lets go says what it used so far
    assert waiting_event.data == {"reason": "approval", "detail": {"prompt": "ship it?", "schema": None}}
    assert (usage["steps"], usage["total_tokens"], usage["cost_usd"]) == (2, 0, 0.0)

    assert waiting.checkpoint is not None
    done = kernel.resume_graph(graph, waiting.checkpoint, input={"approved": True})
    assert done.state is ExecutionState.COMPLETED
    assert done.output == {"approved": True, "before": "draft"}
    assert calls == [{"approved": True}]
    assert events_of(kernel).of_type(EventType.EXECUTION_INPUT_RECEIVED)[0].data == {"input": {"approved": True}}
    assert [s.name for s in kernel.execution.steps.values()].count("draft") == 1


def test_bounded_loop_with_a_conditional_edge(make_kernel: Build) -> None:
    graph = (
        GraphBuilder("loop")
        .add_node("inc", lambda s, ctx: s + 1, max_iterations=10)
        .add_conditional_edges("inc", lambda out: "again" if out < 5 else "done", {"again": "inc", "done": "__end__"})
        .set_entry_point("inc")
        .compile()
    )
    kernel = make_kernel()
    result = kernel.execute_graph(graph, 0)
    assert (result.state, result.output) == (ExecutionState.COMPLETED, 5)
    assert len(kernel.execution.steps) == 5


def test_a_loop_past_its_bound_fails_with_a_policy_violation(make_kernel: Build) -> None:
    graph = (
        GraphBuilder("loop")
        .add_node("inc", lambda s, ctx: s + 1, max_iterations=3)
        .add_conditional_edges("inc", lambda out: "again", {"again": "inc"})
        .set_entry_point("inc")
        .compile()
    )
    kernel = make_kernel(unlimited())
    result = kernel.execute_graph(graph, 0)
    assert result.state is ExecutionState.FAILED
    assert result.error is not None
    assert (result.error.category, result.error.code) == (ErrorCategory.POLICY_VIOLATION, "max_iterations_exceeded")
    assert len(kernel.execution.steps) == 3
    deny = [e.data for e in events_of(kernel).of_type(EventType.POLICY_DECISION) if e.data["decision"] == "deny"]
    assert deny[0]["reason"] == "node 'inc' reached its max_iterations (3)"


def test_a_router_returning_an_unknown_route_fails_clearly(make_kernel: Build) -> None:
    graph = (
        GraphBuilder("r")
        .add_node("a", lambda s, ctx: s)
        .add_node("b", lambda s, ctx: s)
        .add_conditional_edges("a", lambda out: "nowhere", {"yes": "b"})
        .set_entry_point("a")
        .compile()
    )
    result = make_kernel().execute_graph(graph, 0)
    assert result.state is ExecutionState.FAILED
    assert result.error is not None
    assert result.error.message == "router of 'a' returned 'nowhere', which is not one of ['yes']"


def test_text_deltas_usage_and_tool_events_stream_from_inside_a_step(make_kernel: Build) -> None:
    def talk(state: Any, ctx: Any) -> Any:
        for word in ("Hello", " world"):
            ctx.text_delta(word)
        ctx.tool_input("call_1", "search", {"q": "x"})
        ctx.tool_output("call_1", "search", {"hits": 3})
        ctx.record_usage(input_tokens=10, output_tokens=5, cost_usd=0.01)
        return "Hello world"

    kernel = make_kernel()
    kernel.execute_graph(GraphBuilder("t").add_node("talk", talk).set_entry_point("talk").compile(), None)
    types = events_of(kernel).types()
    assert types[1:8] == [
        "data-step-start",
        "data-text-delta",
        "data-text-delta",
        "data-tool-input-available",
        "data-tool-output-available",
        "data-usage",
        "data-step-end",
    ]
    assert [e.data["delta"] for e in events_of(kernel).of_type(EventType.TEXT_DELTA)] == ["Hello", " world"]
    usage_event = events_of(kernel).of_type(EventType.USAGE)[0]
    assert usage_event.data["delta"] == {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.01}
    assert usage_event.data["total_tokens"] == 15
    assert kernel.usage_snapshot() is not None
    assert kernel.usage_snapshot()["total_tokens"] == 15  # type: ignore[index]


def test_pii_is_masked_in_content_events_but_the_next_node_gets_the_real_value(make_kernel: Build) -> None:
    seen: list[Any] = []
    graph = (
        GraphBuilder("pii")
        .add_node("a", lambda s, ctx: "mail ann@example.com or call +1 415 555 2671, card 4111 1111 1111 1111")
        .add_node("b", lambda s, ctx: seen.append(s) or "ok")
        .add_edge("a", "b")
        .set_entry_point("a")
        .compile()
    )
    kernel = make_kernel(TenantContext("t", pii_masking=True))
    kernel.execute_graph(graph, None)
    ends = events_of(kernel).of_type(EventType.STEP_END)
    assert ends[0].data["output"] == "mail [email] or call [phone], card [card]"
    assert seen == ["mail ann@example.com or call +1 415 555 2671, card 4111 1111 1111 1111"]
    assert events_of(kernel).events[0].data["tenant_id"] == "t"  # lifecycle events untouched


def test_artifacts_are_stored_with_their_hash_and_announced(make_kernel: Build) -> None:
    import hashlib

    def write(state: Any, ctx: Any) -> Any:
        return ctx.store_artifact("summary.txt", __import__("executions.kernel").kernel.ArtifactType.TEXT, "hello")

    kernel = make_kernel()
    result = kernel.execute_graph(GraphBuilder("a").add_node("w", write).set_entry_point("w").compile(), None)
    artifact_id = result.output
    assert artifact_id.startswith("artifact_")
    created = events_of(kernel).of_type(EventType.ARTIFACT_CREATED)[0]
    assert created.data == {
        "artifact_id": artifact_id,
        "name": "summary.txt",
        "artifact_type": "text",
        "content_type": "text/plain; charset=utf-8",
        "size": 5,
        "sha256": hashlib.sha256(b"hello").hexdigest(),
        "metadata": {},
    }
    assert created.step_id == next(iter(kernel.execution.steps))


def test_a_failing_artifact_store_does_not_fail_the_step(make_kernel: Build) -> None:
    class Broken:
        def put(self, request: Any) -> Any:
            raise OSError("disk full")

    from executions.kernel import ArtifactType

    kernel = make_kernel().with_artifact_store(Broken())
    graph = (
        GraphBuilder("a")
        .add_node("w", lambda s, ctx: ctx.store_artifact("x", ArtifactType.JSON, {"a": 1}))
        .set_entry_point("w")
        .compile()
    )
    result = kernel.execute_graph(graph, None)
    assert (result.state, result.output) == (ExecutionState.COMPLETED, None)
    assert events_of(kernel).of_type(EventType.ARTIFACT_CREATED) == []


def test_snapshots_and_signals_are_best_effort(make_kernel: Build) -> None:
    from executions.kernel.memory import InMemorySignalBus, InMemorySnapshotStore

    class Failing:
        def save_snapshot(self, snapshot: Any) -> None:
            raise RuntimeError("cache down")

        def emit(self, topic: str, payload: bytes) -> None:
            raise RuntimeError("bus down")

    ok = make_kernel().with_state_store(InMemorySnapshotStore()).with_signal_bus(InMemorySignalBus())
    assert ok.execute_graph(chain(2), 0).state is ExecutionState.COMPLETED
    snapshot = ok.state_store().snapshots[ok.execution_id]  # type: ignore[union-attr]
    assert (snapshot.state, snapshot.step_count, snapshot.seq) == (
        ExecutionState.COMPLETED,
        2,
        events_of(ok).events[-1].seq,
    )
    signals = ok.signal_bus().signals  # type: ignore[union-attr]
    assert [__import__("json").loads(p)["action"] for _, p in signals][:2] == ["start", "step_started"]

    broken = make_kernel().with_state_store(Failing()).with_signal_bus(Failing())
    assert broken.execute_graph(chain(2), 0).state is ExecutionState.COMPLETED


def test_a_kernel_refuses_an_execution_of_another_tenant() -> None:
    from executions.kernel import Execution

    with pytest.raises(ValueError, match="belongs to tenant a, not b"):
        ExecutionKernel.with_execution(Execution(id="exec_x", tenant_id="a"), TenantContext("b"))


def test_a_tenant_context_needs_a_tenant() -> None:
    with pytest.raises(ValueError, match="needs a tenant id"):
        TenantContext("")


def test_a_step_result_records_its_output_and_passes_its_state_on(make_kernel: Build) -> None:
    from executions.kernel import StepResult

    seen: list[Any] = []

    def produce(state: dict[str, Any], ctx: Any) -> StepResult:
        return StepResult(state={**state, "a": 1}, output="made a")

    def consume(state: dict[str, Any], ctx: Any) -> StepResult:
        seen.append(state)
        return StepResult(state={**state, "b": state["a"] + 1}, output={"b": state["a"] + 1})

    graph = (
        GraphBuilder("step-result")
        .add_node("produce", produce)
        .add_node("consume", consume)
        .add_node("other", lambda state, ctx: state)
        .set_entry_point("produce")
        .add_conditional_edges("produce", lambda state: "consume" if state["a"] == 1 else "other", ["consume", "other"])
        .compile()
    )
    kernel = make_kernel()
    result = kernel.execute_graph(graph, {"input": 0})

    assert result.state is ExecutionState.COMPLETED
    assert result.output == {"input": 0, "a": 1, "b": 2}  # the run's output is the state
    assert seen == [{"input": 0, "a": 1}]  # the router and the next node got the state
    steps = kernel.execution.steps
    assert [(s.name, s.output) for s in (steps[i] for i in kernel.execution.step_order)] == [
        ("produce", "made a"),
        ("consume", {"b": 2}),
    ]
    ends = [e.data["output"] for e in events_of(kernel).events if e.type is EventType.STEP_END]
    assert ends == ["made a", {"b": 2}]
