"""ExecutionError: category retry defaults, deterministic backoff, serialization, wrapping."""

from __future__ import annotations

import copy
import json
import pickle
from datetime import UTC, datetime, timedelta, timezone

import pytest

from executions.kernel.errors import Backoff, ErrorCategory, ExecutionError, RetryPolicy, default_retry_policy

FATAL = [
    ErrorCategory.POLICY_VIOLATION,
    ErrorCategory.QUOTA_EXCEEDED,
    ErrorCategory.KERNEL_INTERNAL,
    ErrorCategory.VALIDATION,
]
NO_RETRY = RetryPolicy(0, Backoff.NONE, 0, 0, False)
LLM_POLICY = RetryPolicy(3, Backoff.EXPONENTIAL, 1_000, 30_000)
TOOL_POLICY = RetryPolicy(2, Backoff.EXPONENTIAL, 500, 10_000, requires_idempotency_key=True)
TIMEOUT_POLICY = RetryPolicy(2, Backoff.FIXED, 1_000, 1_000)
NETWORK_POLICY = RetryPolicy(3, Backoff.EXPONENTIAL, 500, 15_000)
STAMP = datetime(2024, 5, 1, 12, 0, 0, 123_000, tzinfo=UTC)


# --- default retry policies -----------------------------------------------------------------------


def test_no_retry_is_the_empty_policy() -> None:
    assert RetryPolicy.no_retry() == NO_RETRY
    assert RetryPolicy() == NO_RETRY


@pytest.mark.parametrize("category", FATAL, ids=str)
@pytest.mark.parametrize("retryable", [None, True, False])
def test_fatal_categories_never_retry(category: ErrorCategory, retryable: bool | None) -> None:
    assert default_retry_policy(category, retryable=retryable) == NO_RETRY
    error = ExecutionError.of(category, "no", retryable=retryable)
    assert error.retry_policy == NO_RETRY
    assert error.is_retryable is False
    assert error.should_retry() is False
    assert error.backoff_ms() == 0


@pytest.mark.parametrize(
    ("category", "policy"),
    [
        (ErrorCategory.LLM, LLM_POLICY),
        (ErrorCategory.TIMEOUT, TIMEOUT_POLICY),
        (ErrorCategory.NETWORK, NETWORK_POLICY),
    ],
    ids=str,
)
def test_llm_timeout_and_network_retry_by_default(category: ErrorCategory, policy: RetryPolicy) -> None:
    assert default_retry_policy(category) == policy
    assert default_retry_policy(category, retryable=True) == policy
    assert ExecutionError.of(category, "try again").retry_policy == policy
    assert ExecutionError.of(category, "try again").is_retryable is True
    # A caller that knows better can say no.
    assert default_retry_policy(category, retryable=False) == NO_RETRY


def test_tools_retry_only_when_they_say_so() -> None:
    assert default_retry_policy(ErrorCategory.TOOL) == NO_RETRY
    assert default_retry_policy(ErrorCategory.TOOL, retryable=False) == NO_RETRY
    assert default_retry_policy(ErrorCategory.TOOL, retryable=True) == TOOL_POLICY
    assert ExecutionError.tool("down").retry_policy == NO_RETRY
    assert ExecutionError.tool("down").is_retryable is False
    assert ExecutionError.tool("down", retryable=True).retry_policy == TOOL_POLICY
    assert ExecutionError.tool("down", retryable=True).retry_policy.requires_idempotency_key is True


@pytest.mark.parametrize(
    ("factory", "category", "policy"),
    [
        (ExecutionError.llm, ErrorCategory.LLM, LLM_POLICY),
        (ExecutionError.timeout, ErrorCategory.TIMEOUT, TIMEOUT_POLICY),
        (ExecutionError.network, ErrorCategory.NETWORK, NETWORK_POLICY),
        (ExecutionError.tool, ErrorCategory.TOOL, NO_RETRY),
        (ExecutionError.policy_violation, ErrorCategory.POLICY_VIOLATION, NO_RETRY),
        (ExecutionError.quota_exceeded, ErrorCategory.QUOTA_EXCEEDED, NO_RETRY),
        (ExecutionError.kernel_internal, ErrorCategory.KERNEL_INTERNAL, NO_RETRY),
        (ExecutionError.validation, ErrorCategory.VALIDATION, NO_RETRY),
    ],
    ids=lambda v: v.value if isinstance(v, ErrorCategory) else None,
)
def test_each_factory_gives_its_category_and_default_policy(
    factory: object, category: ErrorCategory, policy: RetryPolicy
) -> None:
    assert callable(factory)
    error = factory("it failed", code="x1")
    assert isinstance(error, ExecutionError)
    assert (error.category, error.message, error.code, error.attempt) == (category, "it failed", "x1", 1)
    assert error.retry_policy == policy
    assert str(error) == f"{category.value}: it failed"


def test_an_explicit_policy_wins_over_the_default() -> None:
    custom = RetryPolicy(5, Backoff.LINEAR, 10, 0)
    assert ExecutionError.llm("x", retry_policy=custom).retry_policy == custom
    assert ExecutionError.of(ErrorCategory.TOOL, "x", retry_policy=custom).retry_policy == custom


# --- backoff --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "delays"),
    [
        (RetryPolicy(5, Backoff.NONE, 1_000, 5_000), [0, 0, 0, 0, 0]),
        (RetryPolicy(5, Backoff.FIXED, 700, 0), [700, 700, 700, 700, 700]),
        (RetryPolicy(5, Backoff.FIXED, 700, 500), [500, 500, 500, 500, 500]),
        (RetryPolicy(5, Backoff.LINEAR, 250, 0), [250, 500, 750, 1_000, 1_250]),
        (RetryPolicy(5, Backoff.LINEAR, 250, 600), [250, 500, 600, 600, 600]),
        (RetryPolicy(5, Backoff.EXPONENTIAL, 100, 0), [100, 200, 400, 800, 1_600]),
        (RetryPolicy(5, Backoff.EXPONENTIAL, 100, 500), [100, 200, 400, 500, 500]),
        (LLM_POLICY, [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]),
        (NETWORK_POLICY, [500, 1_000, 2_000, 4_000, 8_000, 15_000]),
        (TOOL_POLICY, [500, 1_000, 2_000, 4_000, 8_000, 10_000]),
        (TIMEOUT_POLICY, [1_000, 1_000, 1_000]),
    ],
    ids=[
        "none",
        "fixed",
        "fixed-capped",
        "linear",
        "linear-capped",
        "exponential",
        "exponential-capped",
        "llm-default",
        "network-default",
        "tool-default",
        "timeout-default",
    ],
)
def test_backoff_is_deterministic(policy: RetryPolicy, delays: list[int]) -> None:
    attempts = range(1, len(delays) + 1)
    assert [policy.delay_ms(attempt) for attempt in attempts] == delays
    # No jitter: asking again gives the same answer.
    assert [policy.delay_ms(attempt) for attempt in attempts] == delays


def test_error_backoff_follows_its_attempt() -> None:
    error = ExecutionError.llm("busy")
    assert [error.with_attempt(n).backoff_ms() for n in (1, 2, 3)] == [1_000, 2_000, 4_000]


@pytest.mark.parametrize(
    ("policy", "retries"),
    [
        (NO_RETRY, [False, False]),
        (RetryPolicy(1), [True, False, False]),
        (LLM_POLICY, [True, True, True, False, False]),
        (TIMEOUT_POLICY, [True, True, False]),
    ],
    ids=["no-retry", "one", "llm", "timeout"],
)
def test_should_retry_counts_the_attempt_that_just_failed(policy: RetryPolicy, retries: list[bool]) -> None:
    assert [policy.should_retry(attempt) for attempt in range(1, len(retries) + 1)] == retries


def test_error_should_retry_uses_its_attempt() -> None:
    error = ExecutionError.network("reset")
    assert [error.with_attempt(n).should_retry() for n in (1, 2, 3, 4)] == [True, True, True, False]


# --- serialization --------------------------------------------------------------------------------


def full_error() -> ExecutionError:
    return ExecutionError.llm(
        "rate limited",
        code="rate_limit",
        attempt=2,
        step_id="step_abc",
        provider="openai",
        http_status=429,
        details={"retry_after_s": 3, "model": "gpt"},
        timestamp=STAMP,
    )


def test_to_dict_is_exact() -> None:
    assert full_error().to_dict() == {
        "category": "llm",
        "message": "rate limited",
        "code": "rate_limit",
        "attempt": 2,
        "step_id": "step_abc",
        "provider": "openai",
        "http_status": 429,
        "retryable": True,
        "retry_policy": {
            "max_retries": 3,
            "backoff": "exponential",
            "base_delay_ms": 1_000,
            "max_delay_ms": 30_000,
            "requires_idempotency_key": False,
        },
        "details": {"retry_after_s": 3, "model": "gpt"},
        "timestamp": "2024-05-01T12:00:00.123Z",
    }


@pytest.mark.parametrize(
    "error",
    [
        full_error(),
        ExecutionError.tool("down", retryable=True, details={"tool": "search"}),
        ExecutionError.validation("bad"),
        ExecutionError(
            ErrorCategory.TIMEOUT, "slow", timestamp=datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
        ),
    ],
    ids=["full", "tool", "minimal", "offset-timestamp"],
)
def test_to_dict_from_dict_round_trips_through_json(error: ExecutionError) -> None:
    restored = ExecutionError.from_dict(json.loads(json.dumps(error.to_dict())))
    assert restored == error
    assert restored.to_dict() == error.to_dict()
    assert (restored.category, restored.message, restored.code, restored.attempt) == (
        error.category,
        error.message,
        error.code,
        error.attempt,
    )
    assert (restored.step_id, restored.provider, restored.http_status) == (
        error.step_id,
        error.provider,
        error.http_status,
    )
    assert restored.retry_policy == error.retry_policy
    assert restored.details == error.details
    assert restored.timestamp == error.timestamp


def test_from_dict_fills_defaults() -> None:
    restored = ExecutionError.from_dict({"category": "tool", "message": "m"})
    assert restored == ExecutionError(ErrorCategory.TOOL, "m")
    assert restored.retry_policy == NO_RETRY
    assert (restored.attempt, restored.details, restored.timestamp) == (1, {}, None)


def test_equality_is_by_value() -> None:
    assert full_error() == full_error()
    assert full_error() != full_error().with_attempt(3)
    assert full_error() != full_error().with_step_id("step_other")
    assert full_error() != "llm: rate limited"
    with pytest.raises(TypeError):
        hash(full_error())


def test_with_methods_return_copies() -> None:
    error = ExecutionError.llm("x")
    later = datetime(2024, 6, 1, tzinfo=UTC)
    assert error.with_step_id("step_1").step_id == "step_1"
    assert error.with_attempt(3).attempt == 3
    assert error.with_timestamp(later).timestamp == later
    assert (error.step_id, error.attempt, error.timestamp) == (None, 1, None)


def test_an_error_can_be_deep_copied() -> None:
    error = full_error()
    copied = copy.deepcopy(error)
    assert copied == error
    assert copied.details is not error.details


def test_an_error_can_be_pickled() -> None:
    # Needed to raise one across a process pool (and by copy.deepcopy of an execution).
    error = full_error()
    restored = pickle.loads(pickle.dumps(error))
    assert restored == error
    assert restored.timestamp == error.timestamp


# --- wrapping node exceptions ---------------------------------------------------------------------


def _raise_value_error() -> None:
    raise ValueError("bad value")


def test_from_exception_wraps_an_unknown_exception_as_fatal() -> None:
    with pytest.raises(ValueError, match="bad value") as info:
        _raise_value_error()
    error = ExecutionError.from_exception(info.value)
    assert error.category is ErrorCategory.KERNEL_INTERNAL
    assert error.message == "ValueError: bad value"
    assert error.code == "node_exception"
    assert error.retry_policy == NO_RETRY
    assert error.should_retry() is False
    assert set(error.details) == {"exception", "traceback"}
    assert error.details["exception"] == "ValueError"
    assert "_raise_value_error" in error.details["traceback"]
    assert error.details["traceback"].endswith("ValueError: bad value\n")


def test_from_exception_without_a_traceback() -> None:
    error = ExecutionError.from_exception(RuntimeError("never raised"))
    assert error.message == "RuntimeError: never raised"
    assert error.details == {"exception": "RuntimeError", "traceback": "RuntimeError: never raised\n"}


def test_from_exception_keeps_the_last_frames_and_caps_the_text() -> None:
    def recurse(depth: int) -> None:
        if depth == 0:
            raise KeyError("k" * 5_000)
        recurse(depth - 1)

    with pytest.raises(KeyError) as info:
        recurse(30)
    error = ExecutionError.from_exception(info.value)
    traceback_text = error.details["traceback"]
    assert len(traceback_text) == 4_000
    assert traceback_text.endswith("k" * 100 + "'\n")
    # Only the innermost five frames are kept: the outer frames that led into the recursion are gone.
    short = ExecutionError.from_exception(_deep_key_error(30)).details["traceback"]
    assert "in recurse" in short
    assert "in _deep_key_error" not in short
    assert short.endswith("KeyError: 'deep'\n")


def _deep_key_error(depth: int) -> KeyError:
    def recurse(remaining: int) -> None:
        if remaining == 0:
            raise KeyError("deep")
        recurse(remaining - 1)

    try:
        recurse(depth)
    except KeyError as exc:
        return exc
    raise AssertionError("recurse did not raise")


def test_from_exception_passes_an_execution_error_through() -> None:
    original = ExecutionError.network("reset", attempt=2)
    assert ExecutionError.from_exception(original) is original


def test_an_execution_error_is_an_exception_with_its_message() -> None:
    error = ExecutionError.timeout("too slow")
    assert isinstance(error, Exception)
    assert error.args == ("too slow",)
    with pytest.raises(ExecutionError, match="too slow"):
        raise error
