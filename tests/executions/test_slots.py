"""Slots: one process runs many executions at once, each on a thread; cancel, pause and a stop
keep their guarantees per execution (runtime/slots.py, on the test database, in this process)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from executions.models import Execution, InboxMessage, Step
from executions.runtime.run import execution_run
from executions.runtime.slots import Slots
from executions.services.controls import execution_cancel, execution_pause, execution_resume
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import tenant_set_limits

from ..conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

S = Execution.State


@pytest.fixture
def slots(settings: Any) -> Iterator[Slots]:
    settings.ENACT_DISPATCH_POLL_SECONDS = 0.05
    runner = Slots(size=20)
    runner.start()
    yield runner
    runner.stop(timeout=5)


def submit(tenant: Tenant, count: int, **input: Any) -> list[str]:
    return [execution_submit(tenant=tenant, blueprint="demo.slow", input=input)[0].pk for _ in range(count)]


def states(ids: list[str]) -> list[str]:
    return sorted(Execution.objects.filter(pk__in=ids).values_list("state", flat=True))


def test_executions_waiting_in_a_step_share_one_process(tenant_a: Tenant, slots: Slots) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 20})
    ids = submit(tenant_a, 12, steps=1, seconds=1.5)
    started = time.monotonic()
    peak = 0

    def all_done() -> bool:
        nonlocal peak
        peak = max(peak, slots.busy)
        return states(ids) == [S.COMPLETED] * 12

    assert wait_until(all_done, timeout=20, interval=0.05)
    # One after the other they would take 18 s; side by side, little more than one step.
    assert time.monotonic() - started < 6
    assert peak == 12


def test_a_tenant_past_its_limit_waits_for_its_own_slot_to_free(tenant_a: Tenant, slots: Slots) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 2})
    ids = submit(tenant_a, 5, steps=1, seconds=0.4)
    seen = 0

    def done() -> bool:
        nonlocal seen
        seen = max(seen, Execution.objects.filter(pk__in=ids).active().count())
        return states(ids) == [S.COMPLETED] * 5

    assert wait_until(done, timeout=20, interval=0.02)
    assert seen == 2


def test_cancel_and_pause_reach_an_execution_in_a_slot(tenant_a: Tenant, slots: Slots) -> None:
    cancelled, paused, untouched = submit(tenant_a, 3, steps=3, seconds=0.5)
    assert wait_until(lambda: states([cancelled, paused, untouched]) == [S.RUNNING] * 3)
    execution_cancel(tenant=tenant_a, execution_id=cancelled, reason="enough")
    execution_pause(tenant=tenant_a, execution_id=paused, reason="lunch")
    assert wait_until(lambda: Execution.objects.get(pk=cancelled).state == S.CANCELLED, timeout=2)
    assert wait_until(lambda: Execution.objects.get(pk=paused).state == S.PAUSED, timeout=5)
    execution_resume(tenant=tenant_a, execution_id=paused)
    assert wait_until(lambda: states([paused, untouched]) == [S.COMPLETED] * 2, timeout=15)
    assert Step.objects.filter(execution_id=paused, state="completed").count() == 3
    assert wait_until(lambda: slots.busy == 0)  # each slot let go once its run was over


def test_a_stop_hands_running_executions_back_at_a_step_boundary(tenant_a: Tenant, settings: Any) -> None:
    settings.ENACT_DISPATCH_POLL_SECONDS = 0.05
    first = Slots(size=10)
    first.start()
    ids = submit(tenant_a, 3, steps=2, seconds=0.6)
    assert wait_until(lambda: states(ids) == [S.RUNNING] * 3)
    stopped_at = time.monotonic()
    handed = first.stop(timeout=3)
    assert sorted(handed) == sorted(ids)
    assert time.monotonic() - stopped_at < 3  # a step boundary came first
    # Each paused at a boundary, checkpointed, and is ready again: nobody holds it.
    for execution in Execution.objects.filter(pk__in=ids):
        assert (execution.state, execution.resume_requested, execution.lease_owner) == (S.PAUSED, True, "")
    second = Slots(size=10)
    second.start()
    try:
        assert wait_until(lambda: states(ids) == [S.COMPLETED] * 3, timeout=15)
    finally:
        second.stop(timeout=1)
    for execution_id in ids:  # no completed step ran again
        names = list(Step.objects.filter(execution_id=execution_id, state="completed").values_list("name", flat=True))
        assert sorted(names) == ["step_1", "step_2"]


def test_a_stop_that_cannot_wait_hands_back_mid_step_and_the_step_reruns(tenant_a: Tenant, settings: Any) -> None:
    settings.ENACT_DISPATCH_POLL_SECONDS = 0.05
    first = Slots(size=10)
    first.start()
    (execution_id,) = submit(tenant_a, 1, steps=1, seconds=30)
    assert wait_until(lambda: states([execution_id]) == [S.RUNNING])
    time.sleep(0.2)  # in its one long step
    first.stop(timeout=0.2)
    execution = Execution.objects.get(pk=execution_id)
    assert (execution.state, execution.lease_owner) == (S.RUNNING, "")  # ready: another takes it over now
    assert not Step.objects.filter(execution_id=execution_id, state="completed").exists()
    # The pause it asked for and the run never read is withdrawn: the next worker must not pause it.
    assert not InboxMessage.objects.filter(execution_id=execution_id, consumed_at__isnull=True).exists()


def test_execution_run_by_id_still_claims_one(tenant_a: Tenant, enqueued: list[str]) -> None:
    (execution_id,) = submit(tenant_a, 1, steps=1, seconds=0)
    done = threading.Event()
    assert execution_run(execution_id) == "completed"
    done.set()
    assert execution_run(execution_id) == "not claimed"


def test_executions_ending_while_their_leases_renew_are_not_called_lost(
    tenant_a: Tenant, slots: Slots, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Leases renewed on every look (heartbeat 0 s, a look every 5 ms) while 60 short runs end:
    a run that let go of its lease between the renewal and its own end was reported as
    ``lease on … lost; stopping it here``, a warning about nothing."""
    settings.ENACT_HEARTBEAT_SECONDS = 0.0
    settings.ENACT_CONTROL_POLL_SECONDS = 0.005
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 20})
    caplog.set_level("WARNING", logger="executions.runtime.monitor")
    ids = submit(tenant_a, 60, steps=2, seconds=0.01)
    assert wait_until(lambda: states(ids) == [S.COMPLETED] * 60, timeout=60, interval=0.05)
    lost = [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]
    assert lost == []
