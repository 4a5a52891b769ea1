"""What a run records about itself: its wall time, which step an error came from, which
checkpoint may resume it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from executions.kernel import (
    ControlAction,
    ControlMessage,
    ExecutionError,
    ExecutionKernel,
    ExecutionState,
    GraphBuilder,
    WaitReason,
)
from executions.kernel.events import EventType
from executions.kernel.memory import InMemoryCheckpointStore, InMemoryEventSink

from .conftest import chain

Build = Callable[..., ExecutionKernel]


def _events(kernel: ExecutionKernel) -> InMemoryEventSink:
    sink = kernel.sink
    assert isinstance(sink, InMemoryEventSink)
    return sink


def _checkpoints(kernel: ExecutionKernel) -> InMemoryCheckpointStore:
    store = kernel.checkpoint_store()
    assert isinstance(store, InMemoryCheckpointStore)
    return store


def _sleeping(seconds: float) -> Callable[[Any, Any], Any]:
    def node(state: Any, ctx: Any) -> Any:
        time.sleep(seconds)
        return state + 1

    return node


# --- item: wall time in the events that end or let go of a run ------------------------------------


@pytest.mark.parametrize("ending", ["completed", "failed", "cancelled"])
def test_the_terminal_event_carries_the_wall_time(make_kernel: Build, ending: str) -> None:
    def node(state: Any, ctx: Any) -> Any:
        time.sleep(0.3)
        if ending == "failed":
            raise ExecutionError.validation("no")
        if ending == "cancelled":
            kernel.inbox().push(kernel.execution_id, ControlMessage(ControlAction.CANCEL, "ops"))  # type: ignore[union-attr]
        return state

    kernel = make_kernel()
    result = kernel.execute_graph(GraphBuilder("w").add_node("n", node).set_entry_point("n").compile(), 0)
    assert result.state.value == ending
    last = _events(kernel).events[-1]
    assert last.is_terminal
    assert 300 <= last.data["usage"]["wall_time_ms"] < 1_000


def test_wall_time_leaves_out_time_paused_and_waiting_for_a_person(make_kernel: Build) -> None:
    def pause_after(state: Any, ctx: Any) -> Any:
        time.sleep(0.2)
        kernel.inbox().push(kernel.execution_id, ControlMessage(ControlAction.PAUSE, "ops"))  # type: ignore[union-attr]
        return state + 1

    def ask(state: Any, ctx: Any) -> Any:
        if not ctx.has_answer:
            time.sleep(0.2)
        return state + ctx.interrupt(WaitReason.USER_INPUT, prompt="how many?")

    graph = (
        GraphBuilder("w")
        .add_node("a", pause_after)
        .add_node("b", ask)
        .add_node("c", _sleeping(0.2))
        .add_edge("a", "b")
        .add_edge("b", "c")
        .set_entry_point("a")
        .compile()
    )
    kernel = make_kernel()
    paused = kernel.execute_graph(graph, 0)
    assert paused.state is ExecutionState.PAUSED
    paused_at = _events(kernel).of_type(EventType.EXECUTION_PAUSED)[0].data["usage"]["wall_time_ms"]
    assert 200 <= paused_at < 400
    time.sleep(0.5)  # paused: not counted
    assert paused.checkpoint is not None
    waiting = kernel.resume_graph(graph, paused.checkpoint)
    assert waiting.state is ExecutionState.WAITING
    time.sleep(0.5)  # waiting for a person: not counted
    assert waiting.checkpoint is not None
    done = kernel.resume_graph(graph, waiting.checkpoint, input=1)
    assert done.state is ExecutionState.COMPLETED
    wall = _events(kernel).events[-1].data["usage"]["wall_time_ms"]
    assert 600 <= wall < 1_000  # three steps of 0.2 s, not the 1 s spent paused and waiting


def test_usage_events_carry_the_wall_time_so_far(make_kernel: Build) -> None:
    def node(state: Any, ctx: Any) -> Any:
        time.sleep(0.2)
        ctx.record_usage(input_tokens=1)
        return state

    kernel = make_kernel()
    kernel.execute_graph(GraphBuilder("u").add_node("n", node).set_entry_point("n").compile(), 0)
    assert _events(kernel).of_type(EventType.USAGE)[0].data["wall_time_ms"] >= 200


# --- item: the execution's error names its step ---------------------------------------------------


def test_the_executions_error_names_the_step_that_failed(make_kernel: Build) -> None:
    def node(state: Any, ctx: Any) -> Any:
        if ctx.node == "n1":
            raise ExecutionError.validation("bad")
        return state

    kernel = make_kernel()
    result = kernel.execute_graph(chain(3, node), 0)
    failed_step = next(s for s in kernel.execution.steps.values() if s.name == "n1")
    assert result.error is not None
    assert result.error.step_id == failed_step.id
    assert kernel.execution.error is not None
    assert kernel.execution.error.step_id == failed_step.id
    assert _events(kernel).of_type(EventType.EXECUTION_FAILED)[0].data["error"]["step_id"] == failed_step.id


def test_a_router_failure_names_the_step_it_routed_from(make_kernel: Build) -> None:
    graph = (
        GraphBuilder("r")
        .add_node("a", lambda s, ctx: s)
        .add_node("b", lambda s, ctx: s)
        .add_conditional_edges("a", lambda out: 1 / 0, {"b": "b"})
        .set_entry_point("a")
        .compile()
    )
    kernel = make_kernel()
    result = kernel.execute_graph(graph, 0)
    assert result.state is ExecutionState.FAILED
    assert result.error is not None
    assert result.error.step_id == next(iter(kernel.execution.steps))


# --- item: only the last checkpoint resumes an execution ------------------------------------------


def test_resuming_from_an_older_checkpoint_is_refused_and_runs_nothing(make_kernel: Build) -> None:
    calls: list[str] = []

    def node(state: Any, ctx: Any) -> Any:
        calls.append(ctx.node)
        if ctx.node == "n2":
            kernel.inbox().push(kernel.execution_id, ControlMessage(ControlAction.PAUSE, "ops"))  # type: ignore[union-attr]
        return state + 1

    graph = chain(5, node)
    kernel = make_kernel()
    paused = kernel.execute_graph(graph, 0)
    assert paused.state is ExecutionState.PAUSED
    history = _checkpoints(kernel).history[kernel.execution_id]
    older = history[0]
    assert older.current_nodes == ["n1"]
    seq_before = kernel.emitter.last_seq

    with pytest.raises(ValueError, match="older than the last checkpoint"):
        kernel.resume_graph(graph, older)
    assert calls == ["n0", "n1", "n2"]
    assert kernel.state is ExecutionState.PAUSED
    assert kernel.emitter.last_seq == seq_before

    assert paused.checkpoint is not None
    done = kernel.resume_graph(graph, paused.checkpoint)
    assert done.state is ExecutionState.COMPLETED
    assert calls == ["n0", "n1", "n2", "n3", "n4"]


def test_resuming_from_a_checkpoint_past_the_end_of_the_log_is_refused(make_kernel: Build) -> None:
    from dataclasses import replace

    def node(state: Any, ctx: Any) -> Any:
        kernel.inbox().push(kernel.execution_id, ControlMessage(ControlAction.PAUSE, "ops"))  # type: ignore[union-attr]
        return state + 1

    graph = chain(2, node)
    kernel = make_kernel()
    paused = kernel.execute_graph(graph, 0)
    assert paused.checkpoint is not None
    with pytest.raises(ValueError, match="past the end of the log"):
        kernel.resume_graph(graph, replace(paused.checkpoint, seq=kernel.emitter.last_seq + 5))
    assert kernel.state is ExecutionState.PAUSED
