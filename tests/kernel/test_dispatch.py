"""The kernel's own methods: dispatch is reduce, then emit, then snapshot, then signal."""

from __future__ import annotations

import json

import pytest

from executions.kernel import (
    ArtifactType,
    ExecutionKernel,
    ExecutionState,
    InMemoryArtifactStore,
    StepState,
    StepType,
    TenantContext,
    WaitReason,
)
from executions.kernel.events import EventType
from executions.kernel.memory import FakeClock, InMemoryEventSink, InMemorySignalBus, InMemorySnapshotStore
from executions.kernel.reducer import AlreadyTerminal, InvalidTransition, Pause


def kernel_with_ports() -> tuple[ExecutionKernel, InMemoryEventSink, InMemorySnapshotStore, InMemorySignalBus]:
    sink, snapshots, signals = InMemoryEventSink(), InMemorySnapshotStore(), InMemorySignalBus()
    kernel = (
        ExecutionKernel.new(TenantContext("acme", user_id="u1"))
        .with_event_sink(sink)
        .with_state_store(snapshots)
        .with_signal_bus(signals)
        .with_clock(FakeClock())
    )
    return kernel, sink, snapshots, signals


def test_manual_lifecycle_emits_one_event_per_action() -> None:
    kernel, sink, snapshots, signals = kernel_with_ports()
    clock = kernel.clock
    assert isinstance(clock, FakeClock)
    kernel.start()
    step = kernel.begin_step(StepType.TOOL_NODE, "search", source="agent")
    clock.advance(1.5)
    kernel.complete_step(step, {"hits": 2}, 1500)
    kernel.wait_for(WaitReason.USER_INPUT, {"question": "which one?"})
    kernel.input_received({"choice": 1})
    kernel.pause("lunch")
    kernel.resume()
    failing = kernel.begin_step(StepType.FUNCTION_NODE, "parse")
    kernel.fail_step_with_message(failing, "bad json")
    kernel.complete({"answer": 42})

    assert sink.types() == [
        "data-execution-start",
        "data-step-start",
        "data-step-end",
        "data-execution-waiting",
        "data-execution-input-received",
        "data-execution-paused",
        "data-execution-resumed",
        "data-step-start",
        "data-step-failed",
        "data-execution-end",
    ]
    assert sink.events[1].data == {
        "name": "search",
        "step_type": "tool_node",
        "parent_step_id": None,
        "source": "agent",
        "attempt": 1,
    }
    assert sink.events[-1].data == {"output": {"answer": 42}, "duration_ms": 1500}
    assert sink.events[8].data["error"]["category"] == "kernel_internal"
    assert sink.events[8].data["error"]["step_id"] == failing
    assert kernel.execution.steps[step].state is StepState.COMPLETED
    assert kernel.state is ExecutionState.COMPLETED

    snapshot = snapshots.snapshots[kernel.execution_id]
    assert (snapshot.state, snapshot.step_count, snapshot.seq, snapshot.user_id) == (
        ExecutionState.COMPLETED,
        2,
        10,
        "u1",
    )
    assert snapshot.step_outputs == {step: {"hits": 2}}
    assert [json.loads(p)["action"] for _, p in signals.signals] == [
        "start", "step_started", "step_completed", "waiting", "input_received",
        "paused", "resumed", "step_started", "step_failed", "completed",
    ]  # fmt: skip
    assert {topic for topic, _ in signals.signals} == {"execution.lifecycle"}


def test_an_illegal_action_emits_nothing_and_changes_nothing() -> None:
    kernel, sink, snapshots, signals = kernel_with_ports()
    with pytest.raises(InvalidTransition):
        kernel.dispatch(Pause("too early", kernel.clock.now()))
    assert sink.events == []
    assert snapshots.snapshots == {}
    assert signals.signals == []
    assert kernel.state is ExecutionState.CREATED

    kernel.start()
    kernel.cancel_execution("done")
    with pytest.raises(AlreadyTerminal):
        kernel.complete("late")
    assert sink.types() == ["data-execution-start", "data-execution-cancelled"]


def test_cancel_skips_running_steps_and_names_them() -> None:
    kernel, sink, _, _ = kernel_with_ports()
    kernel.start()
    running = kernel.begin_step(StepType.LLM_NODE, "think")
    kernel.cancel_execution("stop")
    assert kernel.execution.steps[running].state is StepState.SKIPPED
    assert sink.events[-1].data == {"reason": "stop", "skipped_step_ids": [running]}


def test_text_and_json_artifact_helpers() -> None:
    store = InMemoryArtifactStore()
    kernel, sink, _, _ = kernel_with_ports()
    kernel.with_artifact_store(store)
    kernel.start()
    step = kernel.begin_step(StepType.FUNCTION_NODE, "write")
    text_id = kernel.store_text_artifact(step, "notes", "hi")
    json_id = kernel.store_json_artifact(step, "data", {"b": 1, "a": [1, 2]})
    assert text_id is not None
    assert json_id is not None
    assert store.get(text_id)[1] == b"hi"
    assert json.loads(store.get(json_id)[1]) == {"a": [1, 2], "b": 1}
    assert store.get(json_id)[0].artifact_type is ArtifactType.JSON
    created = sink.of_type(EventType.ARTIFACT_CREATED)
    assert [e.data["content_type"] for e in created] == ["text/plain; charset=utf-8", "application/json"]


def test_without_an_artifact_store_nothing_is_stored() -> None:
    kernel, sink, _, _ = kernel_with_ports()
    kernel.start()
    step = kernel.begin_step(StepType.FUNCTION_NODE, "write")
    assert kernel.store_text_artifact(step, "notes", "hi") is None
    assert sink.of_type(EventType.ARTIFACT_CREATED) == []


def test_a_failing_sink_stops_dispatch_with_no_gap_in_seq() -> None:
    class FlakySink(InMemoryEventSink):
        fail = False

        def append(self, event):  # type: ignore[no-untyped-def]
            if self.fail:
                raise OSError("log unavailable")
            super().append(event)

    sink = FlakySink()
    kernel = ExecutionKernel.new(TenantContext("acme")).with_event_sink(sink)
    kernel.start()
    sink.fail = True
    with pytest.raises(OSError, match="log unavailable"):
        kernel.begin_step(StepType.FUNCTION_NODE, "x")
    sink.fail = False
    kernel.fail_with_message("log was down")
    assert [e.seq for e in sink.events] == [1, 2]


def test_the_stream_refuses_events_after_its_terminal_event() -> None:
    kernel, _, _, _ = kernel_with_ports()
    kernel.start()
    kernel.complete(None)
    assert kernel.emitter.closed
    from executions.kernel.events import StreamEvent

    with pytest.raises(RuntimeError, match="already ended"):
        kernel.emit_unprotected(StreamEvent(EventType.USAGE, kernel.execution_id, kernel.clock.now()))
