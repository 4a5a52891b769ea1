"""EnforcementMiddleware.check_all_limits: each limit blocks exactly at its bound, warns once
before it, and the cost alert waits for an operator instead of failing."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from executions.kernel.enforcement import (
    Blocked,
    CostAlert,
    EnforcementMiddleware,
    EnforcementResult,
    ExecutionUsage,
    LimitType,
    LongRunningPolicy,
    ResourceLimits,
    Violation,
)
from executions.kernel.enforcement import Warning as LimitWarning
from executions.kernel.errors import ErrorCategory, RetryPolicy

EXEC = "exec_1"
NO_LIMITS = ResourceLimits(max_steps=None, max_tokens=None, max_wall_time_s=None, max_cost_usd=None)
NO_POLICY = LongRunningPolicy.unlimited()


def middleware(usage: ExecutionUsage | None = None, *, emit_warning_events: bool = True) -> EnforcementMiddleware:
    mw = EnforcementMiddleware(emit_warning_events=emit_warning_events)
    mw.register_execution(EXEC, usage or ExecutionUsage())
    return mw


@dataclass(frozen=True)
class Case:
    """One limit: how to configure it, and how to reach a given usage of it."""

    limit: LimitType
    limits: ResourceLimits
    policy: LongRunningPolicy
    # Builds the usage and the check's keyword arguments for a raw amount of the measured quantity.
    reach: Callable[[float], tuple[ExecutionUsage, dict[str, Any]]]
    # Highest amount that passes, the amount that blocks, the first amount that warns (at 80%).
    last_allowed: float
    first_blocked: float
    first_warning: float
    # The "used" a violation reports at first_blocked.
    used_when_blocked: float
    maximum: float


def _steps(n: float) -> tuple[ExecutionUsage, dict[str, Any]]:
    return ExecutionUsage(steps=int(n)), {}


def _repetitions(n: float) -> tuple[ExecutionUsage, dict[str, Any]]:
    return ExecutionUsage(steps=int(n), repetitions={"fetch": int(n), "other": 50}), {"next_step": "fetch"}


def _tokens(n: float) -> tuple[ExecutionUsage, dict[str, Any]]:
    return ExecutionUsage(input_tokens=int(n) // 2, output_tokens=int(n) - int(n) // 2), {}


CASES = [
    # Steps are projected one step ahead: with 5 allowed, the check before the sixth step blocks.
    Case(LimitType.STEPS, ResourceLimits(5, None, None, None), NO_POLICY, _steps, 4, 5, 3, 6, 5),
    Case(
        LimitType.STEP_REPETITIONS,
        NO_LIMITS,
        LongRunningPolicy(None, None, None, 5, None),
        _repetitions,
        4,
        5,
        3,
        6,
        5,
    ),
    Case(
        LimitType.DISCOVERED_STEPS,
        NO_LIMITS,
        LongRunningPolicy(5, None, None, None, None),
        lambda n: (ExecutionUsage(discovered_steps=int(n)), {}),
        5,
        6,
        4,
        6,
        5,
    ),
    Case(
        LimitType.DISCOVERY_DEPTH,
        NO_LIMITS,
        LongRunningPolicy(None, 5, None, None, None),
        lambda n: (ExecutionUsage(discovery_depth=int(n)), {}),
        5,
        6,
        4,
        6,
        5,
    ),
    # Measured quantities block once they reach the limit.
    Case(LimitType.TOKENS, ResourceLimits(None, 1_000, None, None), NO_POLICY, _tokens, 999, 1_000, 800, 1_000, 1_000),
    Case(
        LimitType.COST,
        ResourceLimits(None, None, None, 2.0),
        NO_POLICY,
        lambda n: (ExecutionUsage(cost_usd=n), {}),
        1.99,
        2.0,
        1.6,
        2.0,
        2.0,
    ),
    Case(
        LimitType.WALL_TIME,
        ResourceLimits(None, None, 10.0, None),
        NO_POLICY,
        lambda n: (ExecutionUsage(), {"running_ms": int(n)}),
        9_999,
        10_000,
        8_000,
        10.0,
        10.0,
    ),
    Case(
        LimitType.IDLE_TIME,
        NO_LIMITS,
        LongRunningPolicy(None, None, 300.0, None, None),
        lambda n: (ExecutionUsage(), {"idle_ms": int(n)}),
        299_999,
        300_000,
        240_000,
        300.0,
        300.0,
    ),
]
CASE_IDS = [case.limit.value for case in CASES]


def check(case: Case, amount: float, *, warned: set[str] | None = None, emit: bool = True) -> list[EnforcementResult]:
    usage, kwargs = case.reach(amount)
    if warned is not None:
        usage.warned = set(warned)
    mw = middleware(usage, emit_warning_events=emit)
    return mw.check_all_limits(EXEC, case.limits, case.policy, **kwargs)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_each_limit_blocks_exactly_at_its_bound(case: Case) -> None:
    blocked = check(case, case.first_blocked)
    assert len(blocked) == 1
    finding = blocked[0]
    assert isinstance(finding, Blocked)
    assert finding.violation.limit is case.limit
    assert finding.violation.used == case.used_when_blocked
    assert finding.violation.maximum == case.maximum
    # Warnings already given do not stop a block.
    assert check(case, case.first_blocked, warned={case.limit.value}) == blocked
    assert check(case, case.first_blocked, emit=False) == blocked


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_each_limit_does_not_block_before_its_bound(case: Case) -> None:
    for amount in (0, case.first_warning, case.last_allowed):
        assert not any(isinstance(f, Blocked) for f in check(case, amount)), amount


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_each_limit_warns_at_the_threshold_before_blocking(case: Case) -> None:
    below = case.first_warning - (0.01 if case.limit is LimitType.COST else 1)
    assert check(case, below) == []
    warned = check(case, case.first_warning)
    assert len(warned) == 1
    warning = warned[0]
    assert isinstance(warning, LimitWarning)
    assert warning.limit is case.limit
    assert warning.usage_percent == 80.0
    assert warning.message.startswith(f"{case.limit.value} at 80% of the limit (")


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_a_limit_warns_only_until_the_kernel_records_it(case: Case) -> None:
    assert check(case, case.last_allowed, warned={case.limit.value}) == []
    assert check(case, case.first_warning, warned={case.limit.value}) == []
    # Another limit's warning does not silence this one.
    assert len(check(case, case.first_warning, warned={"something_else"})) == 1


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_no_warnings_when_warning_events_are_off(case: Case) -> None:
    assert check(case, case.first_warning, emit=False) == []
    assert check(case, case.last_allowed, emit=False) == []


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_the_violation_becomes_a_quota_exceeded_error_naming_the_limit(case: Case) -> None:
    (finding,) = check(case, case.first_blocked)
    assert isinstance(finding, Blocked)
    error = finding.violation.to_error()
    assert error.category is ErrorCategory.QUOTA_EXCEEDED
    assert error.code == f"{case.limit.value}_limit_exceeded"
    assert error.details == {"limit": case.limit.value, "used": case.used_when_blocked, "maximum": case.maximum}
    assert error.message == finding.violation.message
    assert error.message.startswith(f"{case.limit.value} limit exceeded: ")
    assert error.retry_policy == RetryPolicy.no_retry()
    assert error.should_retry() is False


def test_steps_through_a_run_warn_once_then_block_on_the_sixth_check() -> None:
    """The seed's scenario: 5 steps allowed; the check before the fourth step warns at 80%."""
    mw = middleware()
    limits = ResourceLimits(5, None, None, None)
    history: list[list[EnforcementResult]] = []
    for _ in range(6):
        findings = mw.check_all_limits(EXEC, limits, NO_POLICY)
        history.append(findings)
        # What the kernel does with a warning, so it is given once.
        mw.usage(EXEC).warned.update(f.limit.value for f in findings if isinstance(f, LimitWarning))
        if not any(isinstance(f, Blocked) for f in findings):
            mw.record_step(EXEC, "node")
    assert history == [
        [],
        [],
        [],
        [LimitWarning(LimitType.STEPS, 80.0, "steps at 80% of the limit (4 of 5)")],
        [],
        [Blocked(Violation(LimitType.STEPS, 6, 5, "steps limit exceeded: 6 used of 5 allowed"))],
    ]
    assert mw.usage(EXEC).steps == 5


def test_a_step_at_the_limit_warns_at_100_percent_if_not_warned_yet() -> None:
    mw = middleware(ExecutionUsage(steps=4))
    assert mw.check_all_limits(EXEC, ResourceLimits(5, None, None, None), NO_POLICY) == [
        LimitWarning(LimitType.STEPS, 100.0, "steps at 100% of the limit (5 of 5)")
    ]


def test_repetitions_count_only_the_next_step() -> None:
    policy = LongRunningPolicy(None, None, None, 3, None)
    mw = middleware(ExecutionUsage(repetitions={"loop": 3, "fine": 1}))
    (finding,) = mw.check_all_limits(EXEC, NO_LIMITS, policy, next_step="loop")
    assert finding == Blocked(
        Violation(LimitType.STEP_REPETITIONS, 4, 3, "step_repetitions limit exceeded: 4 used of 3 allowed")
    )
    assert mw.check_all_limits(EXEC, NO_LIMITS, policy, next_step="fine") == []
    assert mw.check_all_limits(EXEC, NO_LIMITS, policy, next_step="new") == []
    assert mw.check_all_limits(EXEC, NO_LIMITS, policy) == []


def test_the_warning_threshold_is_configurable() -> None:
    limits = ResourceLimits(10, None, None, None, warning_threshold=0.5)
    assert middleware(ExecutionUsage(steps=3)).check_all_limits(EXEC, limits, NO_POLICY) == []
    assert middleware(ExecutionUsage(steps=4)).check_all_limits(EXEC, limits, NO_POLICY) == [
        LimitWarning(LimitType.STEPS, 50.0, "steps at 50% of the limit (5 of 10)")
    ]


def test_unlimited_means_nothing_is_checked() -> None:
    usage = ExecutionUsage(
        steps=10**9,
        input_tokens=10**12,
        cost_usd=1e9,
        discovered_steps=10**6,
        discovery_depth=10**3,
        repetitions={"x": 10**6},
    )
    mw = middleware(usage)
    assert mw.check_all_limits(EXEC, NO_LIMITS, NO_POLICY, next_step="x", running_ms=10**12, idle_ms=10**12) == []


def test_measured_values_block_in_their_own_units() -> None:
    limits = ResourceLimits(None, None, 10.0, 2.0)
    mw = middleware(ExecutionUsage(cost_usd=2.5))
    assert mw.check_all_limits(EXEC, limits, NO_POLICY, running_ms=12_500) == [
        Blocked(Violation(LimitType.COST, 2.5, 2.0, "cost limit exceeded: 2.5 used of 2 allowed")),
        Blocked(Violation(LimitType.WALL_TIME, 12.5, 10.0, "wall_time limit exceeded: 12.5 used of 10 allowed")),
    ]


def test_ten_dime_costs_block_a_one_dollar_limit() -> None:
    # Ten $0.10 steps spend the whole $1.00 budget, so the eleventh must not start. Summed as
    # floats they come to 0.9999999999999999, which is below the limit.
    mw = middleware()
    for _ in range(10):
        mw.record_cost(EXEC, 0.10)
    findings = mw.check_all_limits(EXEC, ResourceLimits(None, None, None, 1.0), NO_POLICY)
    assert [type(f) for f in findings] == [Blocked]


# --- cost alert -----------------------------------------------------------------------------------


def test_cost_alert_waits_for_an_operator_instead_of_blocking() -> None:
    policy = LongRunningPolicy(None, None, None, None, cost_alert_threshold_usd=1.0)
    limits = ResourceLimits(None, None, None, 10.0)
    assert middleware(ExecutionUsage(cost_usd=0.99)).check_all_limits(EXEC, limits, policy) == []

    mw = middleware(ExecutionUsage(cost_usd=1.0))
    assert mw.check_all_limits(EXEC, limits, policy) == [CostAlert(cost_usd=1.0, threshold_usd=1.0)]
    # Not a warning: it repeats on every check until someone approves.
    assert mw.check_all_limits(EXEC, limits, policy) == [CostAlert(cost_usd=1.0, threshold_usd=1.0)]

    mw.usage(EXEC).cost_alert_approved = True
    assert mw.check_all_limits(EXEC, limits, policy) == []


def test_an_approved_cost_alert_still_leaves_the_cost_limit() -> None:
    policy = LongRunningPolicy(None, None, None, None, cost_alert_threshold_usd=1.0)
    limits = ResourceLimits(None, None, None, 10.0)
    usage = ExecutionUsage(cost_usd=8.0, cost_alert_approved=True)
    assert middleware(usage).check_all_limits(EXEC, limits, policy) == [
        LimitWarning(LimitType.COST, 80.0, "cost at 80% of the limit (8 of 10)")
    ]
    usage = ExecutionUsage(cost_usd=10.0, cost_alert_approved=True)
    assert middleware(usage).check_all_limits(EXEC, limits, policy) == [
        Blocked(Violation(LimitType.COST, 10.0, 10.0, "cost limit exceeded: 10 used of 10 allowed"))
    ]


def test_findings_come_most_severe_first() -> None:
    limits = ResourceLimits(max_steps=5, max_tokens=100, max_wall_time_s=None, max_cost_usd=10.0)
    policy = LongRunningPolicy(None, None, None, None, cost_alert_threshold_usd=1.0)
    mw = middleware(ExecutionUsage(steps=3, input_tokens=100, cost_usd=8.5))
    assert mw.check_all_limits(EXEC, limits, policy) == [
        Blocked(Violation(LimitType.TOKENS, 100, 100, "tokens limit exceeded: 100 used of 100 allowed")),
        CostAlert(cost_usd=8.5, threshold_usd=1.0),
        LimitWarning(LimitType.STEPS, 80.0, "steps at 80% of the limit (4 of 5)"),
        LimitWarning(LimitType.COST, 85.0, "cost at 85% of the limit (8.5 of 10)"),
    ]


# --- usage bookkeeping ----------------------------------------------------------------------------


def test_recording_updates_the_counters() -> None:
    mw = middleware()
    mw.record_step(EXEC, "fetch")
    mw.record_step(EXEC, "fetch")
    mw.record_step(EXEC)
    mw.record_tokens(EXEC, 120, 30)
    mw.record_tokens(EXEC, -5, -5)  # negative reports are ignored
    mw.record_cost(EXEC, 0.25)
    mw.record_cost(EXEC, -1.0)
    mw.record_discovered_step(EXEC)
    assert mw.push_discovery_depth(EXEC) == 1
    assert mw.push_discovery_depth(EXEC) == 2
    assert mw.pop_discovery_depth(EXEC) == 1
    assert mw.pop_discovery_depth(EXEC) == 0
    assert mw.pop_discovery_depth(EXEC) == 0
    assert mw.usage(EXEC) == ExecutionUsage(
        steps=3, input_tokens=120, output_tokens=30, cost_usd=0.25, discovered_steps=1, repetitions={"fetch": 2}
    )


def test_register_keeps_the_first_usage_and_unregister_forgets_it() -> None:
    mw = EnforcementMiddleware()
    first = mw.register_execution(EXEC, ExecutionUsage(steps=2))
    assert mw.register_execution(EXEC, ExecutionUsage(steps=9)) is first
    assert mw.usage(EXEC).steps == 2
    mw.unregister_execution(EXEC)
    with pytest.raises(LookupError):
        mw.usage(EXEC)
    mw.unregister_execution(EXEC)  # idempotent


def test_usage_to_dict_is_the_public_view() -> None:
    usage = ExecutionUsage(steps=3, input_tokens=10, output_tokens=5, cost_usd=0.1234567, wall_time_ms=900)
    assert usage.to_dict() == {
        "steps": 3,
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
        "cost_usd": 0.123457,
        "wall_time_ms": 900,
        "discovered_steps": 0,
        "discovery_depth": 0,
    }


def test_usage_checkpoint_round_trip() -> None:
    usage = ExecutionUsage(
        steps=7,
        input_tokens=1_200,
        output_tokens=340,
        cost_usd=0.1234567,
        wall_time_ms=45_000,
        discovered_steps=3,
        discovery_depth=2,
        repetitions={"fetch": 4, "plan": 1},
        warned={"tokens", "steps"},
        cost_alert_approved=True,
    )
    data = usage.to_checkpoint()
    assert data == {
        "steps": 7,
        "input_tokens": 1_200,
        "output_tokens": 340,
        "cost_usd": 0.1234567,
        "wall_time_ms": 45_000,
        "discovered_steps": 3,
        "discovery_depth": 2,
        "repetitions": {"fetch": 4, "plan": 1},
        "warned": ["steps", "tokens"],
        "cost_alert_approved": True,
    }
    restored = ExecutionUsage.from_checkpoint(json.loads(json.dumps(data)))
    assert restored == usage
    # The checkpoint holds copies, not the live counters.
    data["repetitions"]["fetch"] = 99
    assert usage.repetitions["fetch"] == 4


def test_an_empty_checkpoint_is_fresh_usage() -> None:
    assert ExecutionUsage.from_checkpoint({}) == ExecutionUsage()


def test_limits_hold_across_a_checkpoint() -> None:
    limits = ResourceLimits(5, None, None, None)
    before = middleware(ExecutionUsage(steps=3, warned={"steps"}))
    resumed = EnforcementMiddleware()
    resumed.register_execution(EXEC, ExecutionUsage.from_checkpoint(before.usage(EXEC).to_checkpoint()))
    # Already warned before the checkpoint: no second warning after the resume.
    assert resumed.check_all_limits(EXEC, limits, NO_POLICY) == []
    resumed.record_step(EXEC)
    resumed.record_step(EXEC)
    assert [type(f) for f in resumed.check_all_limits(EXEC, limits, NO_POLICY)] == [Blocked]
