"""Executions run by the worker through the kernel, on the real database, with real threads."""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import pytest
from django.db import connection

from executions.kernel import Backoff, ExecutionError, GraphBuilder, NodeContext, RetryPolicy
from executions.models import Artifact, Execution, ExecutionEvent, Step
from executions.persistence.events import stored_bytes
from executions.registry import blueprint
from executions.runtime.reaper import executions_reap
from executions.runtime.run import execution_run
from executions.services.controls import execution_cancel, execution_pause, execution_provide_input, execution_resume
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import tenant_set_limits

from ..conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


class Gauge:
    """Counts node bodies running at once, per tenant."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.done = 0

    def enter(self, tenant: str) -> None:
        with self.lock:
            self.now[tenant] = self.now.get(tenant, 0) + 1
            self.peak[tenant] = max(self.peak.get(tenant, 0), self.now[tenant])

    def leave(self, tenant: str) -> None:
        with self.lock:
            self.now[tenant] -= 1
            self.done += 1


GAUGE = Gauge()


def _gauged(state: Any, ctx: NodeContext) -> Any:
    GAUGE.enter(ctx.tenant.tenant_id)
    try:
        time.sleep(0.25)  # long enough that three really overlap, even with 50 threads about
    finally:
        GAUGE.leave(ctx.tenant.tenant_id)
    return state


@blueprint("test.gauged", input_schema={"type": "object"})
def _gauged_graph(input: Any) -> Any:
    return GraphBuilder("test.gauged").add_node("work", _gauged).set_entry_point("work").compile()


BACKOFF_RETRY = RetryPolicy(max_retries=1, backoff=Backoff.FIXED, base_delay_ms=1_500)


def _fails_once_then_waits(state: Any, ctx: NodeContext) -> Any:
    if ctx.attempt == 1:
        raise ExecutionError.network("connection reset", retry_policy=BACKOFF_RETRY)
    return {"attempt": ctx.attempt}


@blueprint("test.backoff", input_schema={"type": "object"})
def _backoff_graph(input: Any) -> Any:
    return GraphBuilder("test.backoff").add_node("call", _fails_once_then_waits).set_entry_point("call").compile()


def submit(tenant: Tenant, blueprint: str, input: Any) -> Execution:
    execution, _ = execution_submit(tenant=tenant, blueprint=blueprint, input=input)
    return execution


def state_of(execution: Execution) -> str:
    return Execution.objects.values_list("state", flat=True).get(pk=execution.pk)


def seqs(execution: Execution) -> list[int]:
    return list(ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("seq", flat=True))


def terminal_events(execution: Execution) -> int:
    types = ("data-execution-end", "data-execution-failed", "data-execution-cancelled")
    return ExecutionEvent.objects.filter(execution=execution, type__in=types).count()


def test_a_pipeline_runs_end_to_end(tenant_a: Tenant, inline_worker: list[threading.Thread]) -> None:
    execution = submit(tenant_a, "demo.pipeline", {"text": "the cat  and the hat"})
    assert wait_until(lambda: state_of(execution) == "completed")
    execution.refresh_from_db()

    assert execution.output["summary"] == "5 words; most frequent: the, and, cat, hat"
    assert execution.usage["steps"] == 3
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).lease_owner == "")
    assert list(Step.objects.filter(execution=execution).values_list("name", "state", "attempt")) == [
        ("normalize", "completed", 1),
        ("analyze", "completed", 1),
        ("report", "completed", 1),
    ]
    assert seqs(execution) == list(range(1, len(seqs(execution)) + 1))
    assert terminal_events(execution) == 1
    artifacts = {a.name: a for a in Artifact.objects.filter(execution=execution)}
    assert sorted(artifacts) == ["analysis.json", "summary.txt"]
    text = artifacts["summary.txt"]
    assert bytes(text.content) == execution.output["summary"].encode()
    assert text.sha256 == hashlib.sha256(bytes(text.content)).hexdigest()
    assert text.tenant_id == tenant_a.pk
    # Its artifacts, and its events and steps, as retention will give them back.
    rows = stored_bytes([execution.pk])
    assert Tenant.objects.get(pk=tenant_a.pk).storage_bytes == sum(a.size for a in artifacts.values()) + rows


def test_cancel_reaches_a_step_blocked_in_a_long_call(tenant_a: Tenant, inline_worker: list[threading.Thread]) -> None:
    execution = submit(tenant_a, "demo.slow", {"steps": 2, "seconds": 60})
    assert wait_until(lambda: Step.objects.filter(execution=execution, state="running").exists())
    requested = time.monotonic()
    execution_cancel(tenant=tenant_a, execution_id=execution.pk, reason="enough")
    assert wait_until(lambda: state_of(execution) == "cancelled", timeout=5)
    assert time.monotonic() - requested < 1.0
    step = Step.objects.get(execution=execution)
    assert (step.state, step.error["message"]) == ("failed", "cancelled during step")
    assert ExecutionEvent.objects.filter(execution=execution).last().data["reason"] == "enough"  # type: ignore[union-attr]
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).lease_owner == "")


def test_the_wall_time_of_a_run_reaches_the_execution_row(
    tenant_a: Tenant, inline_worker: list[threading.Thread]
) -> None:
    execution = submit(tenant_a, "demo.slow", {"steps": 2, "seconds": 0.3})
    assert wait_until(lambda: state_of(execution) == "completed")
    execution.refresh_from_db()
    assert 600 <= execution.usage["wall_time_ms"] < 5_000
    end = ExecutionEvent.objects.get(execution=execution, type="data-execution-end")
    assert end.data["usage"]["wall_time_ms"] == execution.usage["wall_time_ms"]


def test_a_step_cancelled_mid_call_says_it_was_cancelled(
    tenant_a: Tenant, inline_worker: list[threading.Thread]
) -> None:
    execution = submit(tenant_a, "demo.slow", {"steps": 1, "seconds": 60})
    assert wait_until(lambda: Step.objects.filter(execution=execution, state="running").exists())
    execution_cancel(tenant=tenant_a, execution_id=execution.pk, reason="enough")
    assert wait_until(lambda: state_of(execution) == "cancelled", timeout=5)
    step = Step.objects.get(execution=execution)
    assert (step.state, step.error["category"], step.error["code"]) == ("failed", "cancelled", "cancelled")


def test_a_pause_during_a_backoff_lets_go_and_the_resume_runs_the_next_attempt(
    tenant_a: Tenant, inline_worker: list[threading.Thread]
) -> None:
    execution = submit(tenant_a, "test.backoff", {})
    assert wait_until(lambda: Step.objects.filter(execution=execution, state="failed").exists())
    execution_pause(tenant=tenant_a, execution_id=execution.pk, reason="during the backoff", actor="ann")
    assert wait_until(lambda: state_of(execution) == "paused", timeout=1.2)  # before the backoff ends
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).lease_owner == "")
    execution_resume(tenant=tenant_a, execution_id=execution.pk, actor="ann")
    assert wait_until(lambda: state_of(execution) == "completed")
    execution.refresh_from_db()
    assert execution.output == {"attempt": 2}
    assert list(Step.objects.filter(execution=execution).values_list("state", "attempt")) == [
        ("failed", 1),
        ("completed", 2),
    ]


def test_pause_and_resume_across_worker_runs_without_rerunning_steps(
    tenant_a: Tenant, inline_worker: list[threading.Thread]
) -> None:
    execution = submit(tenant_a, "demo.slow", {"steps": 3, "seconds": 0.3})
    assert wait_until(lambda: Step.objects.filter(execution=execution, state="running").exists())
    execution_pause(tenant=tenant_a, execution_id=execution.pk, reason="lunch", actor="ann")
    assert wait_until(lambda: state_of(execution) == "paused")
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).lease_owner == "")
    done_before = list(Step.objects.filter(execution=execution).values_list("name", flat=True))
    assert done_before == ["step_1"]

    with pytest.raises(Exception, match="cannot pause"):
        execution_pause(tenant=tenant_a, execution_id=execution.pk)
    execution_resume(tenant=tenant_a, execution_id=execution.pk, actor="ann")
    assert wait_until(lambda: state_of(execution) == "completed")
    execution.refresh_from_db()
    assert list(Step.objects.filter(execution=execution).values_list("name", flat=True)) == [
        "step_1",
        "step_2",
        "step_3",
    ]
    assert execution.output == {"steps": 3, "seconds": 0.3, "done": 3}
    assert execution.claims == 1  # pausing let go cleanly, which resets the count
    types = list(ExecutionEvent.objects.filter(execution=execution).values_list("type", flat=True))
    assert types.count("data-execution-paused") == 1
    assert types.count("data-execution-resumed") == 1
    assert seqs(execution) == list(range(1, len(types) + 1))


@pytest.mark.parametrize(("approve", "published"), [(True, True), (False, False)])
def test_approval_across_worker_runs(
    tenant_a: Tenant, inline_worker: list[threading.Thread], approve: bool, published: bool
) -> None:
    execution = submit(tenant_a, "demo.approval", {})
    assert wait_until(lambda: state_of(execution) == "waiting")
    execution.refresh_from_db()
    assert execution.wait_reason == "approval"
    assert execution.wait_detail["prompt"] == "Approve publishing: 'Quarterly report, ready for review.'?"
    with pytest.raises(Exception, match="waiting for approval; answer it with input"):
        execution_resume(tenant=tenant_a, execution_id=execution.pk)

    execution_provide_input(
        tenant=tenant_a, execution_id=execution.pk, approve=approve, input="looks good", actor="ann"
    )
    assert wait_until(lambda: state_of(execution) == "completed")
    execution.refresh_from_db()
    assert execution.output == {"published": published, "note": "looks good"}
    assert list(Step.objects.filter(execution=execution).values_list("name", flat=True)) == [
        "draft",
        "approve",
        "approve",
        "finish",
    ]


def test_flaky_steps_are_retried_by_the_kernel(tenant_a: Tenant, inline_worker: list[threading.Thread]) -> None:
    execution = submit(tenant_a, "demo.flaky", {"failures": 2})
    assert wait_until(lambda: state_of(execution) == "completed")
    assert list(Step.objects.filter(execution=execution).values_list("state", "attempt")) == [
        ("failed", 1),
        ("failed", 2),
        ("completed", 3),
    ]


def test_concurrency_limit_holds_under_a_burst_and_every_execution_finishes(
    tenant_a: Tenant, tenant_b: Tenant, inline_worker: list[threading.Thread]
) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 3})
    tenant_set_limits(tenant=tenant_b, changes={"max_concurrent_executions": 2})
    GAUGE.peak.clear()
    done_before = GAUGE.done

    def burst(tenant: Tenant, n: int) -> None:
        try:
            for _ in range(n):
                submit(tenant, "test.gauged", {})
        finally:
            connection.close()

    submitters = [threading.Thread(target=burst, args=(t, 25)) for t in (tenant_a, tenant_a, tenant_b)]
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join(30)

    assert wait_until(lambda: Execution.objects.filter(state="completed").count() == 75, timeout=60)
    assert GAUGE.done - done_before == 75
    assert GAUGE.peak == {str(tenant_a.pk): 3, str(tenant_b.pk): 2}
    assert wait_until(lambda: Execution.objects.exclude(lease_owner="").count() == 0)


def test_a_worker_that_lost_its_lease_stops_writing_and_another_resumes(
    tenant_a: Tenant, enqueued: list[str], settings: Any
) -> None:
    execution = submit(tenant_a, "demo.slow", {"steps": 3, "seconds": 0.4})
    outcomes: dict[str, str] = {}

    def run(name: str) -> None:
        try:
            outcomes[name] = execution_run(execution.pk)
        finally:
            connection.close()

    first = threading.Thread(target=run, args=("first",), daemon=True)
    first.start()
    assert wait_until(lambda: Step.objects.filter(execution=execution, state="completed").count() == 1)

    # The first worker stalls past its lease: the reaper hands the execution on.
    Execution.objects.filter(pk=execution.pk).update(lease_expires_at="2000-01-01T00:00:00Z")
    found = executions_reap()
    assert found["orphaned"] == 1
    assert enqueued[-1] == execution.pk
    second = threading.Thread(target=run, args=("second",), daemon=True)
    second.start()
    first.join(10)
    second.join(10)

    # Whichever wrote a seq first kept the stream; the other was fenced off by the log's unique key.
    assert sorted(outcomes.values()) == ["completed", "lease lost"]

    execution.refresh_from_db()
    assert execution.state == "completed"
    assert execution.output["done"] == 3
    names = list(Step.objects.filter(execution=execution).values_list("name", "state"))
    assert names[0] == ("step_1", "completed")  # never run again
    assert [n for n, _ in names].count("step_1") == 1
    assert seqs(execution) == list(range(1, len(seqs(execution)) + 1))
    assert terminal_events(execution) == 1
