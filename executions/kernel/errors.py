"""Structured execution errors with deterministic retry decisions."""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any


class ErrorCategory(StrEnum):
    LLM = "llm"
    TOOL = "tool"
    POLICY_VIOLATION = "policy_violation"
    TIMEOUT = "timeout"
    QUOTA_EXCEEDED = "quota_exceeded"
    KERNEL_INTERNAL = "kernel_internal"
    VALIDATION = "validation"
    NETWORK = "network"
    # A step the kernel stopped waiting for: the execution was cancelled, or it failed or hit a
    # time limit while the step ran. Not a fault of the step, and never retried.
    CANCELLED = "cancelled"


class Backoff(StrEnum):
    NONE = "none"
    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a failed step is tried again. Delays are deterministic."""

    max_retries: int = 0
    backoff: Backoff = Backoff.NONE
    base_delay_ms: int = 0
    max_delay_ms: int = 0
    requires_idempotency_key: bool = False

    @classmethod
    def no_retry(cls) -> RetryPolicy:
        return cls()

    def should_retry(self, attempt: int) -> bool:
        """``attempt`` is the attempt that just failed, counted from 1."""
        return attempt <= self.max_retries

    def delay_ms(self, attempt: int) -> int:
        """Delay before the attempt after ``attempt`` (which just failed)."""
        if self.backoff is Backoff.NONE:
            return 0
        if self.backoff is Backoff.FIXED:
            delay = self.base_delay_ms
        elif self.backoff is Backoff.LINEAR:
            delay = self.base_delay_ms * attempt
        else:
            delay = self.base_delay_ms * (2 ** (attempt - 1))
        return min(delay, self.max_delay_ms) if self.max_delay_ms else delay

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_retries": self.max_retries,
            "backoff": self.backoff.value,
            "base_delay_ms": self.base_delay_ms,
            "max_delay_ms": self.max_delay_ms,
            "requires_idempotency_key": self.requires_idempotency_key,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RetryPolicy:
        return cls(
            max_retries=int(data.get("max_retries", 0)),
            backoff=Backoff(data.get("backoff", "none")),
            base_delay_ms=int(data.get("base_delay_ms", 0)),
            max_delay_ms=int(data.get("max_delay_ms", 0)),
            requires_idempotency_key=bool(data.get("requires_idempotency_key", False)),
        )


_DEFAULT_POLICIES: dict[ErrorCategory, RetryPolicy] = {
    ErrorCategory.LLM: RetryPolicy(3, Backoff.EXPONENTIAL, 1_000, 30_000),
    # Tools are retried only when the tool says the failure is retryable (``retryable=True``).
    ErrorCategory.TOOL: RetryPolicy(2, Backoff.EXPONENTIAL, 500, 10_000, requires_idempotency_key=True),
    ErrorCategory.TIMEOUT: RetryPolicy(2, Backoff.FIXED, 1_000, 1_000),
    ErrorCategory.NETWORK: RetryPolicy(3, Backoff.EXPONENTIAL, 500, 15_000),
}

#: Categories no retry can help: errors in them are never retried, whatever policy they carry.
FATAL_CATEGORIES = frozenset(
    {
        ErrorCategory.POLICY_VIOLATION,
        ErrorCategory.QUOTA_EXCEEDED,
        ErrorCategory.KERNEL_INTERNAL,
        ErrorCategory.VALIDATION,
        ErrorCategory.CANCELLED,
    }
)


def default_retry_policy(category: ErrorCategory, *, retryable: bool | None = None) -> RetryPolicy:
    if category in FATAL_CATEGORIES or retryable is False:
        return RetryPolicy.no_retry()
    if category is ErrorCategory.TOOL and not retryable:
        return RetryPolicy.no_retry()
    return _DEFAULT_POLICIES.get(category, RetryPolicy.no_retry())


@dataclass(eq=False)
class ExecutionError(Exception):
    """The one error type of an execution. Node code may raise it to control retries."""

    category: ErrorCategory
    message: str
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy.no_retry)
    code: str | None = None
    attempt: int = 1
    step_id: str | None = None
    provider: str | None = None
    http_status: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    timestamp: datetime | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.category.value}: {self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce rebuilds from ``args`` (the message only); rebuild from fields.
        return (_rebuild_error, (dict(self.__dict__),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ExecutionError) and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def of(
        cls,
        category: ErrorCategory,
        message: str,
        *,
        retryable: bool | None = None,
        retry_policy: RetryPolicy | None = None,
        **fields: Any,
    ) -> ExecutionError:
        """An error with its category's default retry policy unless one is given."""
        policy = retry_policy or default_retry_policy(category, retryable=retryable)
        return cls(category, message, retry_policy=policy, **fields)

    @classmethod
    def kernel_internal(cls, message: str, **fields: Any) -> ExecutionError:
        return cls.of(ErrorCategory.KERNEL_INTERNAL, message, **fields)

    @classmethod
    def llm(cls, message: str, **fields: Any) -> ExecutionError:
        return cls.of(ErrorCategory.LLM, message, **fields)

    @classmethod
    def tool(cls, message: str, *, retryable: bool = False, **fields: Any) -> ExecutionError:
        return cls.of(ErrorCategory.TOOL, message, retryable=retryable, **fields)

    @classmethod
    def timeout(cls, message: str, **fields: Any) -> ExecutionError:
        return cls.of(ErrorCategory.TIMEOUT, message, **fields)

    @classmethod
    def network(cls, message: str, **fields: Any) -> ExecutionError:
        return cls.of(ErrorCategory.NETWORK, message, **fields)

    @classmethod
    def policy_violation(cls, message: str, **fields: Any) -> ExecutionError:
        return cls.of(ErrorCategory.POLICY_VIOLATION, message, **fields)

    @classmethod
    def quota_exceeded(cls, message: str, **fields: Any) -> ExecutionError:
        return cls.of(ErrorCategory.QUOTA_EXCEEDED, message, **fields)

    @classmethod
    def validation(cls, message: str, **fields: Any) -> ExecutionError:
        return cls.of(ErrorCategory.VALIDATION, message, **fields)

    @classmethod
    def cancelled(cls, message: str, **fields: Any) -> ExecutionError:
        return cls.of(ErrorCategory.CANCELLED, message, **fields)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ExecutionError:
        """Wrap an exception raised by node code. Unknown exceptions are fatal, as in the seed."""
        if isinstance(exc, ExecutionError):
            return exc
        frames = traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-5)
        return cls.kernel_internal(
            f"{type(exc).__name__}: {exc}",
            code="node_exception",
            details={"exception": type(exc).__name__, "traceback": "".join(frames)[-4000:]},
        )

    @property
    def is_retryable(self) -> bool:
        return self.retry_policy.max_retries > 0

    @property
    def worth_retrying(self) -> bool:
        """Whether another attempt may help: the error says it may be retried, and its category
        is not one that no retry helps (``FATAL_CATEGORIES``). A node's retry policy applies only
        to such an error."""
        return self.is_retryable and self.category not in FATAL_CATEGORIES

    def should_retry(self) -> bool:
        return self.retry_policy.should_retry(self.attempt)

    def backoff_ms(self) -> int:
        return self.retry_policy.delay_ms(self.attempt)

    def with_step_id(self, step_id: str) -> ExecutionError:
        return replace(self, step_id=step_id)

    def with_attempt(self, attempt: int) -> ExecutionError:
        return replace(self, attempt=attempt)

    def with_timestamp(self, timestamp: datetime) -> ExecutionError:
        return replace(self, timestamp=timestamp)

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": self.category.value,
            "message": self.message,
            "code": self.code,
            "attempt": self.attempt,
            "step_id": self.step_id,
            "provider": self.provider,
            "http_status": self.http_status,
            "retryable": self.is_retryable,
            "retry_policy": self.retry_policy.to_dict(),
            "details": self.details,
            "timestamp": _iso(self.timestamp),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExecutionError:
        ts = data.get("timestamp")
        return cls(
            category=ErrorCategory(data["category"]),
            message=str(data["message"]),
            retry_policy=RetryPolicy.from_dict(data.get("retry_policy") or {}),
            code=data.get("code"),
            attempt=int(data.get("attempt", 1)),
            step_id=data.get("step_id"),
            provider=data.get("provider"),
            http_status=data.get("http_status"),
            details=dict(data.get("details") or {}),
            timestamp=datetime.fromisoformat(ts.replace("Z", "+00:00")) if ts else None,
        )


def _rebuild_error(fields: dict[str, Any]) -> ExecutionError:
    error = ExecutionError(fields["category"], fields["message"])
    error.__dict__.update(fields)
    return error


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
