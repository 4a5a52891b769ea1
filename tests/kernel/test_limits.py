"""Limits inside a run: each blocks at its bound, warns before it, and names itself."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from executions.kernel import (
    ErrorCategory,
    ExecutionError,
    ExecutionKernel,
    ExecutionState,
    GraphBuilder,
    LongRunningPolicy,
    ResourceLimits,
    TenantContext,
    WaitReason,
)
from executions.kernel.events import EventType
from executions.kernel.memory import InMemoryEventSink

from .conftest import chain

Build = Callable[..., ExecutionKernel]

NO_LIMITS = ResourceLimits(max_steps=None, max_tokens=None, max_wall_time_s=None, max_cost_usd=None)


def decisions(kernel: ExecutionKernel, decision: str) -> list[dict[str, Any]]:
    sink = kernel.sink
    assert isinstance(sink, InMemoryEventSink)
    return [e.data for e in sink.of_type(EventType.POLICY_DECISION) if e.data["decision"] == decision]


def test_max_steps_blocks_at_its_bound_after_one_warning(make_kernel: Build) -> None:
    kernel = make_kernel(TenantContext("t", limits=ResourceLimits(max_steps=5)))
    result = kernel.execute_graph(chain(8), 0)

    assert result.state is ExecutionState.FAILED
    assert len(kernel.execution.steps) == 5
    assert result.error is not None
    assert (result.error.category, result.error.code) == (ErrorCategory.QUOTA_EXCEEDED, "steps_limit_exceeded")
    assert result.error.details == {"limit": "steps", "used": 6, "maximum": 5}
    assert result.error.message == "steps limit exceeded: 6 used of 5 allowed"
    assert [w["limit"] for w in decisions(kernel, "warn")] == ["steps"]
    assert [d["limit"] for d in decisions(kernel, "deny")] == ["steps"]


def test_max_steps_is_not_hit_by_a_graph_that_fits(make_kernel: Build) -> None:
    kernel = make_kernel(TenantContext("t", limits=ResourceLimits(max_steps=5)))
    assert kernel.execute_graph(chain(5), 0).state is ExecutionState.COMPLETED


def _spender(tokens: int = 0, cost: float = 0.0) -> Callable[[Any, Any], Any]:
    def node(state: Any, ctx: Any) -> Any:
        ctx.record_usage(input_tokens=tokens, output_tokens=0, cost_usd=cost)
        return state + 1

    return node


def test_max_tokens_stops_the_step_after_the_budget_is_spent(make_kernel: Build) -> None:
    limits = ResourceLimits(max_steps=None, max_tokens=250, max_wall_time_s=None, max_cost_usd=None)
    kernel = make_kernel(TenantContext("t", limits=limits))
    result = kernel.execute_graph(chain(6, _spender(tokens=100)), 0)
    # 100, 200 (warn at 80%), 300 >= 250: the fourth step is refused.
    assert result.state is ExecutionState.FAILED
    assert len(kernel.execution.steps) == 3
    assert result.error is not None
    assert result.error.code == "tokens_limit_exceeded"
    assert [w["limit"] for w in decisions(kernel, "warn")] == ["tokens"]


def test_max_cost_stops_the_run(make_kernel: Build) -> None:
    limits = ResourceLimits(max_steps=None, max_tokens=None, max_wall_time_s=None, max_cost_usd=0.05)
    kernel = make_kernel(TenantContext("t", limits=limits))
    result = kernel.execute_graph(chain(10, _spender(cost=0.02)), 0)
    assert result.error is not None
    assert result.error.code == "cost_limit_exceeded"
    assert len(kernel.execution.steps) == 3


def test_wall_time_stops_a_step_that_runs_past_it(make_kernel: Build) -> None:
    release = threading.Event()
    limits = ResourceLimits(max_steps=None, max_tokens=None, max_wall_time_s=0.2, max_cost_usd=None)
    kernel = make_kernel(TenantContext("t", limits=limits, long_running=LongRunningPolicy.unlimited()))
    graph = GraphBuilder("slow").add_node("slow", lambda s, ctx: release.wait(30)).set_entry_point("slow").compile()
    try:
        result = kernel.execute_graph(graph, None)
    finally:
        release.set()
    assert result.state is ExecutionState.FAILED
    assert result.error is not None
    assert result.error.code == "wall_time_limit_exceeded"
    assert result.error.details["maximum"] == 0.2


def test_idle_timeout_stops_a_step_that_makes_no_progress(make_kernel: Build) -> None:
    release = threading.Event()
    policy = LongRunningPolicy(
        idle_timeout_s=0.2, max_discovered_steps=None, max_discovery_depth=None, max_step_repetitions=None
    )
    kernel = make_kernel(TenantContext("t", limits=NO_LIMITS, long_running=policy))

    def hung(state: Any, ctx: Any) -> Any:
        release.wait(30)
        return state

    def chatty(state: Any, ctx: Any) -> Any:
        for _ in range(6):  # 0.3 s in all, but never 0.2 s without a sign of life
            ctx.text_delta(".")
            ctx.cancellation.wait(0.05)
        return state

    ok = make_kernel(TenantContext("t", limits=NO_LIMITS, long_running=policy))
    assert (
        ok.execute_graph(GraphBuilder("c").add_node("c", chatty).set_entry_point("c").compile(), 0).state
        is ExecutionState.COMPLETED
    )
    try:
        result = kernel.execute_graph(GraphBuilder("h").add_node("h", hung).set_entry_point("h").compile(), 0)
    finally:
        release.set()
    assert result.error is not None
    assert result.error.code == "idle_time_limit_exceeded"


def test_repetitions_of_one_step_are_bounded(make_kernel: Build) -> None:
    policy = LongRunningPolicy(
        max_step_repetitions=4, max_discovered_steps=None, max_discovery_depth=None, idle_timeout_s=None
    )
    graph = (
        GraphBuilder("loop")
        .add_node("again", lambda s, ctx: s + 1, max_iterations=100)
        .add_conditional_edges("again", lambda out: "again", ["again"])
        .set_entry_point("again")
        .compile()
    )
    kernel = make_kernel(TenantContext("t", limits=NO_LIMITS, long_running=policy))
    result = kernel.execute_graph(graph, 0)
    assert len(kernel.execution.steps) == 4
    assert result.error is not None
    assert result.error.code == "step_repetitions_limit_exceeded"


def test_discovered_steps_and_discovery_depth_are_bounded(make_kernel: Build) -> None:
    policy = LongRunningPolicy(
        max_discovered_steps=3, max_discovery_depth=1, idle_timeout_s=None, max_step_repetitions=None
    )

    def discover(state: Any, ctx: Any) -> Any:
        ctx.record_discovered_step()
        ctx.record_discovered_step()
        return state

    kernel = make_kernel(TenantContext("t", limits=NO_LIMITS, long_running=policy))
    result = kernel.execute_graph(chain(5, discover), 0)
    assert len(kernel.execution.steps) == 2  # 2 discovered, then 4 > 3
    assert result.error is not None
    assert result.error.code == "discovered_steps_limit_exceeded"

    deep = make_kernel(TenantContext("t", limits=NO_LIMITS, long_running=policy))
    assert deep.push_discovery_depth() == 1
    assert deep.check_limits_before_step() is None
    assert deep.push_discovery_depth() == 2
    with pytest.raises(ExecutionError) as refused:
        deep.check_limits_before_step()
    assert refused.value.code == "discovery_depth_limit_exceeded"
    assert deep.pop_discovery_depth() == 1
    assert deep.check_limits_before_step() is None


def test_cost_alert_waits_for_an_operator_then_continues_without_alerting_again(make_kernel: Build) -> None:
    policy = LongRunningPolicy(
        cost_alert_threshold_usd=0.03,
        max_discovered_steps=None,
        max_discovery_depth=None,
        idle_timeout_s=None,
        max_step_repetitions=None,
    )
    kernel = make_kernel(TenantContext("t", limits=NO_LIMITS, long_running=policy))
    graph = chain(5, _spender(cost=0.02))
    waiting = kernel.execute_graph(graph, 0)

    assert waiting.state is ExecutionState.WAITING
    assert waiting.wait_reason is WaitReason.COST_THRESHOLD
    assert len(kernel.execution.steps) == 2
    assert waiting.prompt == {"cost_usd": 0.04, "threshold_usd": 0.03}
    assert [d["limit"] for d in decisions(kernel, "pause")] == ["cost_alert"]

    assert waiting.checkpoint is not None
    done = kernel.resume_graph(graph, waiting.checkpoint)
    assert done.state is ExecutionState.COMPLETED
    assert done.output == 5
    assert len(decisions(kernel, "pause")) == 1


def test_usage_survives_a_checkpoint(make_kernel: Build) -> None:
    from executions.kernel import ControlAction, ControlMessage

    def spend(state: Any, ctx: Any) -> Any:
        ctx.record_usage(input_tokens=7, output_tokens=3, cost_usd=0.5)
        if state == 0:
            kernel.inbox().push(kernel.execution_id, ControlMessage(ControlAction.PAUSE, "ops"))  # type: ignore[union-attr]
        return state + 1

    kernel = make_kernel(TenantContext("t", limits=ResourceLimits(max_steps=3, max_cost_usd=None)))
    graph = chain(5, spend)
    paused = kernel.execute_graph(graph, 0)
    assert paused.checkpoint is not None
    assert paused.checkpoint.usage["steps"] == 1
    assert paused.checkpoint.usage["input_tokens"] == 7

    fresh = ExecutionKernel.with_execution(kernel.execution, kernel.tenant_context, last_seq=kernel.emitter.last_seq)
    result = fresh.resume_graph(graph, paused.checkpoint)
    assert result.error is not None
    assert result.error.code == "steps_limit_exceeded"
    assert fresh.usage_snapshot() == {
        "steps": 3,
        "input_tokens": 21,
        "output_tokens": 9,
        "total_tokens": 30,
        "cost_usd": 1.5,
        "wall_time_ms": fresh.usage_snapshot()["wall_time_ms"],
        "discovered_steps": 0,
        "discovery_depth": 0,  # type: ignore[index]
    }
