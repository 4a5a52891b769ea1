from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from executions.kernel import (
    ExecutionKernel,
    GraphBuilder,
    InMemoryArtifactStore,
    InMemoryInbox,
    LongRunningPolicy,
    ResourceLimits,
    TenantContext,
)
from executions.kernel.memory import InMemoryCheckpointStore, InMemoryEventSink


@pytest.fixture
def tenant() -> TenantContext:
    return TenantContext("tenant-a", user_id="user-1")


@pytest.fixture
def make_kernel() -> Callable[..., ExecutionKernel]:
    """A kernel with every in-memory port; pass a tenant context to change limits."""

    def build(tenant: TenantContext | None = None, **kwargs: Any) -> ExecutionKernel:
        kernel = (
            ExecutionKernel.new(tenant or TenantContext("tenant-a"), **kwargs)
            .with_event_sink(InMemoryEventSink())
            .with_checkpoint_store(InMemoryCheckpointStore())
            .with_inbox(InMemoryInbox())
            .with_artifact_store(InMemoryArtifactStore())
        )
        return kernel

    return build


def unlimited(tenant_id: str = "tenant-a", **kwargs: Any) -> TenantContext:
    limits = ResourceLimits(max_steps=None, max_tokens=None, max_wall_time_s=None, max_cost_usd=None)
    return TenantContext(tenant_id, limits=limits, long_running=LongRunningPolicy.unlimited(), **kwargs)


def chain(n: int, fn: Callable[[Any, Any], Any] | None = None, name: str = "chain") -> Any:
    builder = GraphBuilder(name)
    for i in range(n):
        builder.add_node(f"n{i}", fn or (lambda state, ctx: state + 1))
        if i:
            builder.add_edge(f"n{i - 1}", f"n{i}")
    return builder.set_entry_point("n0").set_finish_point(f"n{n - 1}").compile()
