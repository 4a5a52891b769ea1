"""Resource limits and usage: checked before every step, decided here, never in the reducer."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import ExecutionError


@dataclass(frozen=True)
class ResourceLimits:
    """Per-execution limits from the tenant. ``None`` means unlimited."""

    max_steps: int | None = 1_000
    max_tokens: int | None = 1_000_000
    # Wall time is time spent running, summed over the execution's runs: time paused, waiting
    # for a person (input, approval, a cost alert) or queued does not count; a retry's backoff
    # does. The same measure as ``ExecutionUsage.wall_time_ms``.
    max_wall_time_s: float | None = 3_600.0
    max_cost_usd: float | None = 10.0
    # Usage at this fraction of a limit triggers a warning event (once per limit).
    warning_threshold: float = 0.8


@dataclass(frozen=True)
class LongRunningPolicy:
    """Controls for agentic, long-running executions (the seed's LongRunningExecutionPolicy)."""

    max_discovered_steps: int | None = 100
    max_discovery_depth: int | None = 5
    idle_timeout_s: float | None = 300.0
    max_step_repetitions: int | None = 100
    cost_alert_threshold_usd: float | None = None

    @classmethod
    def standard(cls) -> LongRunningPolicy:
        return cls()

    @classmethod
    def unlimited(cls) -> LongRunningPolicy:
        return cls(None, None, None, None, None)


class LimitType(StrEnum):
    STEPS = "steps"
    TOKENS = "tokens"
    WALL_TIME = "wall_time"
    COST = "cost"
    DISCOVERED_STEPS = "discovered_steps"
    DISCOVERY_DEPTH = "discovery_depth"
    IDLE_TIME = "idle_time"
    STEP_REPETITIONS = "step_repetitions"


@dataclass(frozen=True)
class Allowed:
    pass


@dataclass(frozen=True)
class Warning:
    limit: LimitType
    usage_percent: float
    message: str


@dataclass(frozen=True)
class Violation:
    limit: LimitType
    used: float
    maximum: float
    message: str

    def to_error(self) -> ExecutionError:
        return ExecutionError.quota_exceeded(
            self.message,
            code=f"{self.limit.value}_limit_exceeded",
            details={"limit": self.limit.value, "used": self.used, "maximum": self.maximum},
        )


@dataclass(frozen=True)
class Blocked:
    violation: Violation


@dataclass(frozen=True)
class CostAlert:
    """Cost crossed the alert threshold: the execution waits for an operator, it does not fail."""

    cost_usd: float
    threshold_usd: float


EnforcementResult = Allowed | Warning | Blocked | CostAlert


@dataclass
class ExecutionUsage:
    """Counters for one execution. Carried in checkpoints so limits hold across resumes."""

    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    # Time spent running, summed over every run of the execution: not paused, not waiting for a
    # person (input, approval, a cost alert), not queued; a retry's backoff counts. The events
    # that end a run or let it go (and data-usage events) carry it as it stands then.
    wall_time_ms: int = 0
    discovered_steps: int = 0
    discovery_depth: int = 0
    repetitions: dict[str, int] = field(default_factory=dict)
    warned: set[str] = field(default_factory=set)
    cost_alert_approved: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
            "cost_usd": round(self.cost_usd, 6),
            "wall_time_ms": self.wall_time_ms,
            "discovered_steps": self.discovered_steps,
            "discovery_depth": self.discovery_depth,
        }

    def to_checkpoint(self) -> dict[str, Any]:
        data = self.to_dict()
        data.pop("total_tokens")
        data["cost_usd"] = self.cost_usd
        data["repetitions"] = dict(self.repetitions)
        data["warned"] = sorted(self.warned)
        data["cost_alert_approved"] = self.cost_alert_approved
        return data

    @classmethod
    def from_checkpoint(cls, data: dict[str, Any]) -> ExecutionUsage:
        return cls(
            steps=int(data.get("steps", 0)),
            input_tokens=int(data.get("input_tokens", 0)),
            output_tokens=int(data.get("output_tokens", 0)),
            cost_usd=float(data.get("cost_usd", 0.0)),
            wall_time_ms=int(data.get("wall_time_ms", 0)),
            discovered_steps=int(data.get("discovered_steps", 0)),
            discovery_depth=int(data.get("discovery_depth", 0)),
            repetitions={str(k): int(v) for k, v in (data.get("repetitions") or {}).items()},
            warned=set(data.get("warned") or ()),
            cost_alert_approved=bool(data.get("cost_alert_approved", False)),
        )


class EnforcementMiddleware:
    """Tracks usage per execution and checks it against limits. Holds no clock: elapsed times
    are passed in. One middleware may serve many kernels."""

    def __init__(self, *, emit_warning_events: bool = True) -> None:
        self._emit_warnings = emit_warning_events
        self._usage: dict[str, ExecutionUsage] = {}
        self._lock = threading.Lock()

    def emit_warning_events_enabled(self) -> bool:
        return self._emit_warnings

    def register_execution(self, execution_id: str, usage: ExecutionUsage | None = None) -> ExecutionUsage:
        with self._lock:
            tracked = self._usage.get(execution_id)
            if tracked is None:
                tracked = self._usage[execution_id] = usage or ExecutionUsage()
            return tracked

    def unregister_execution(self, execution_id: str) -> None:
        with self._lock:
            self._usage.pop(execution_id, None)

    def usage(self, execution_id: str) -> ExecutionUsage:
        try:
            return self._usage[execution_id]
        except KeyError:
            raise LookupError(f"execution {execution_id} is not registered for enforcement") from None

    def record_step(self, execution_id: str, name: str | None = None) -> None:
        usage = self.usage(execution_id)
        usage.steps += 1
        if name is not None:
            usage.repetitions[name] = usage.repetitions.get(name, 0) + 1

    def record_tokens(self, execution_id: str, input_tokens: int, output_tokens: int) -> None:
        usage = self.usage(execution_id)
        usage.input_tokens += max(0, int(input_tokens))
        usage.output_tokens += max(0, int(output_tokens))

    def record_cost(self, execution_id: str, cost_usd: float) -> None:
        self.usage(execution_id).cost_usd += max(0.0, float(cost_usd))

    def record_discovered_step(self, execution_id: str) -> None:
        self.usage(execution_id).discovered_steps += 1

    def push_discovery_depth(self, execution_id: str) -> int:
        usage = self.usage(execution_id)
        usage.discovery_depth += 1
        return usage.discovery_depth

    def pop_discovery_depth(self, execution_id: str) -> int:
        usage = self.usage(execution_id)
        usage.discovery_depth = max(0, usage.discovery_depth - 1)
        return usage.discovery_depth

    def check_all_limits(
        self,
        execution_id: str,
        limits: ResourceLimits,
        policy: LongRunningPolicy,
        *,
        next_step: str | None = None,
        running_ms: int = 0,
        idle_ms: int = 0,
    ) -> list[EnforcementResult]:
        """Every finding, most severe first: blocks, then a cost alert, then new warnings.

        Counters that a step consumes (steps, repetitions) are projected one step ahead: with a
        limit of 5 steps the sixth check blocks, and the check before the fourth step warns at
        80%. Measured quantities (tokens, cost, time) block once usage reaches the limit, since a
        spent budget leaves nothing for the next step.
        """
        usage = self.usage(execution_id)
        blocks: list[EnforcementResult] = []
        warnings: list[EnforcementResult] = []
        for measure in _measures(usage, limits, policy, next_step, running_ms, idle_ms):
            limit, used, maximum, projected = measure
            if maximum is None:
                continue
            # Rounded: ten costs of 0.10 add up to 0.9999999999999999 in floats, and must reach 1.
            used = round(used, 9)
            if used > maximum or (not projected and used >= maximum):
                blocks.append(Blocked(_violation(limit, used, maximum)))
            elif self._emit_warnings and limit.value not in usage.warned:
                ratio = used / maximum if maximum > 0 else 1.0
                if ratio >= limits.warning_threshold:
                    message = f"{limit.value} at {ratio:.0%} of the limit ({_fmt(used)} of {_fmt(maximum)})"
                    warnings.append(Warning(limit, round(ratio * 100, 1), message))
        threshold = policy.cost_alert_threshold_usd
        if threshold is not None and not usage.cost_alert_approved and round(usage.cost_usd, 9) >= threshold:
            blocks.append(CostAlert(usage.cost_usd, threshold))
        return blocks + warnings


def _measures(
    usage: ExecutionUsage,
    lim: ResourceLimits,
    pol: LongRunningPolicy,
    next_step: str | None,
    running_ms: int,
    idle_ms: int,
) -> list[tuple[LimitType, float, float | None, bool]]:
    """(limit, used, maximum, projected) for every limit."""
    repeats = usage.repetitions.get(next_step, 0) + 1 if next_step is not None else 0
    return [
        (LimitType.STEPS, usage.steps + 1, lim.max_steps, True),
        (LimitType.STEP_REPETITIONS, repeats, pol.max_step_repetitions, True),
        (LimitType.DISCOVERED_STEPS, usage.discovered_steps, pol.max_discovered_steps, True),
        (LimitType.DISCOVERY_DEPTH, usage.discovery_depth, pol.max_discovery_depth, True),
        (LimitType.TOKENS, usage.total_tokens, lim.max_tokens, False),
        (LimitType.COST, usage.cost_usd, lim.max_cost_usd, False),
        (LimitType.WALL_TIME, running_ms / 1000, lim.max_wall_time_s, False),
        (LimitType.IDLE_TIME, idle_ms / 1000, pol.idle_timeout_s, False),
    ]


def _violation(limit: LimitType, used: float, maximum: float) -> Violation:
    return Violation(
        limit, used, maximum, f"{limit.value} limit exceeded: {_fmt(used)} used of {_fmt(maximum)} allowed"
    )


def _fmt(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.4g}"
