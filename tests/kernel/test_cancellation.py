from __future__ import annotations

import threading
import time

import pytest

from executions.kernel import CancellationToken, Cancelled


def test_cancel_spreads_to_children_not_parents() -> None:
    parent = CancellationToken()
    child = parent.child_token()
    grandchild = child.child_token()
    sibling = parent.child_token()

    assert child.cancel("child only") is True
    assert (parent.is_cancelled, child.is_cancelled, grandchild.is_cancelled, sibling.is_cancelled) == (
        False,
        True,
        True,
        False,
    )
    assert grandchild.reason == "child only"

    parent.cancel("everything")
    assert sibling.is_cancelled
    assert sibling.reason == "everything"
    assert child.reason == "child only"  # set once, never overwritten


def test_cancel_is_idempotent_and_callbacks_run_once() -> None:
    token = CancellationToken()
    calls: list[str] = []
    token.on_cancel(calls.append)
    assert token.cancel("first") is True
    assert token.cancel("second") is False
    assert calls == ["first"]
    token.on_cancel(calls.append)  # registered after the fact: called at once
    assert calls == ["first", "first"]


def test_unsubscribed_callback_is_not_called() -> None:
    token = CancellationToken()
    calls: list[str] = []
    unsubscribe = token.on_cancel(calls.append)
    unsubscribe()
    token.cancel()
    assert calls == []


def test_child_of_a_cancelled_token_starts_cancelled() -> None:
    parent = CancellationToken()
    parent.cancel("gone")
    assert parent.child_token().is_cancelled


def test_a_failing_callback_does_not_stop_the_cancel() -> None:
    token = CancellationToken()
    child = token.child_token()
    token.on_cancel(lambda reason: 1 / 0)  # type: ignore[func-returns-value]
    token.cancel()
    assert child.is_cancelled


def test_wait_returns_as_soon_as_cancelled() -> None:
    token = CancellationToken()
    threading.Timer(0.05, token.cancel).start()
    started = time.monotonic()
    assert token.wait(10) is True
    assert time.monotonic() - started < 1
    with pytest.raises(Cancelled):
        token.raise_if_cancelled()


def test_a_failing_runner_hook_does_not_cost_the_job() -> None:
    from executions.kernel.runner import StepRunnerPool

    pool = StepRunnerPool("test")
    ran = threading.Event()

    def broken_hook() -> None:
        raise RuntimeError("no database here")

    pool.before_job.append(broken_hook)
    pool.submit(ran.set)
    assert ran.wait(2)
