"""The seed's own tests (kernel.rs), ported."""

from __future__ import annotations

from executions.kernel import ExecutionKernel, ResourceLimits, SpawnMode, TenantContext
from executions.kernel.events import EventType
from executions.kernel.memory import InMemoryEventSink


def test_emits_warning_event_when_limits_near_threshold() -> None:
    tenant = TenantContext("tenant-a", limits=ResourceLimits(max_steps=5))
    sink = InMemoryEventSink()
    kernel = ExecutionKernel.new(tenant).with_event_sink(sink)
    kernel.register_for_enforcement()

    kernel.record_step_completed()
    kernel.record_step_completed()
    kernel.record_step_completed()

    assert kernel.check_limits_before_step() is None

    warnings = [
        e
        for e in sink.drain()
        if e.type is EventType.POLICY_DECISION and e.data["decision"] == "warn" and e.data["tool_name"] == "enforcement"
    ]
    assert len(warnings) == 1
    assert warnings[0].data["limit"] == "steps"
    assert warnings[0].data["usage_percent"] == 80.0


def test_kernel_with_spawn_mode_inline() -> None:
    kernel = ExecutionKernel.new(TenantContext("t")).with_spawn_mode(SpawnMode.inline())
    assert kernel.spawn_mode() == SpawnMode.inline()


def test_kernel_with_spawn_mode_child() -> None:
    kernel = ExecutionKernel.new(TenantContext("t")).with_spawn_mode(
        SpawnMode.child(background=True, inherit_inbox=True)
    )
    mode = kernel.spawn_mode()
    assert mode is not None
    assert mode.kind == "child"
    assert mode.background is True
    assert mode.inherit_inbox is True


def test_kernel_with_parent_execution_id() -> None:
    kernel = ExecutionKernel.new(TenantContext("t")).with_parent_execution_id("exec_parent_123")
    assert kernel.parent_execution_id() == "exec_parent_123"


def test_kernel_default_no_spawn_mode() -> None:
    kernel = ExecutionKernel.new(TenantContext("t"))
    assert kernel.spawn_mode() is None
    assert kernel.parent_execution_id() is None


def test_get_inbox_execution_ids_no_spawn_mode() -> None:
    kernel = ExecutionKernel.new(TenantContext("t"))
    assert kernel.get_inbox_execution_ids() == [kernel.execution_id]


def test_get_inbox_execution_ids_inline_mode() -> None:
    kernel = ExecutionKernel.new(TenantContext("t")).with_spawn_mode(SpawnMode.inline())
    assert kernel.get_inbox_execution_ids() == [kernel.execution_id]


def test_get_inbox_execution_ids_child_isolated() -> None:
    kernel = (
        ExecutionKernel.new(TenantContext("t"))
        .with_spawn_mode(SpawnMode.child(inherit_inbox=False))
        .with_parent_execution_id("exec_parent")
    )
    assert kernel.get_inbox_execution_ids() == [kernel.execution_id]


def test_get_inbox_execution_ids_child_inherit() -> None:
    kernel = (
        ExecutionKernel.new(TenantContext("t"))
        .with_spawn_mode(SpawnMode.child(inherit_inbox=True))
        .with_parent_execution_id("exec_parent_inherit")
    )
    assert kernel.get_inbox_execution_ids() == [kernel.execution_id, "exec_parent_inherit"]


def test_get_inbox_execution_ids_child_inherit_no_parent_id() -> None:
    kernel = ExecutionKernel.new(TenantContext("t")).with_spawn_mode(SpawnMode.child(inherit_inbox=True))
    assert kernel.get_inbox_execution_ids() == [kernel.execution_id]


def test_get_inbox_execution_ids_child_background_isolated() -> None:
    kernel = ExecutionKernel.new(TenantContext("t")).with_spawn_mode(SpawnMode.child(background=True))
    assert kernel.get_inbox_execution_ids() == [kernel.execution_id]


def test_get_inbox_execution_ids_child_background_inherit() -> None:
    kernel = (
        ExecutionKernel.new(TenantContext("t"))
        .with_spawn_mode(SpawnMode.child(background=True, inherit_inbox=True))
        .with_parent_execution_id("exec_background_parent")
    )
    ids = kernel.get_inbox_execution_ids()
    assert len(ids) == 2
    assert "exec_background_parent" in ids
