"""Schedules fired by real worker clusters: two clusters (four worker processes, each with its
ticker) on one database race for every due time of an every-second schedule; each time fires
exactly once. Meant for PostgreSQL (``SELECT … FOR NO KEY UPDATE SKIP LOCKED``); on SQLite the
write lock serializes the same claims."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from executions.models import Execution, Schedule
from executions.services.schedules import schedule_create, schedule_pause
from tenants.models import Tenant
from tenants.services import tenant_set_limits

from ..conftest import wait_until
from .test_processes import Cluster, _log

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FAST = {"ENACT_SCHEDULE_POLL_SECONDS": "0.2"}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    started: list[Cluster] = []

    def start(**options: Any) -> Cluster:
        started.append(Cluster(tmp_path / f"cluster-{len(started)}.log", **options))
        return started[-1]

    yield start
    for running in started:
        running.stop()


def _firings(schedule: Schedule) -> list[tuple[datetime, int]]:
    """(scheduled time, further times it stood for) of each execution the schedule started."""
    rows = Execution.objects.filter(schedule=schedule).values_list("metadata", flat=True)
    return sorted((datetime.fromisoformat(m["schedule"]["scheduled_at"]), int(m["schedule"]["missed"])) for m in rows)


@pytest.mark.timeout(120)
def test_two_clusters_fire_each_time_of_an_every_second_schedule_exactly_once(
    tenant_a: Tenant, cluster: Callable[..., Cluster]
) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 50})
    first, second = cluster(extra=FAST), cluster(extra=FAST)
    schedule = schedule_create(
        tenant=tenant_a,
        name="every-second",
        blueprint="demo.slow",
        input={"steps": 1, "seconds": 0},
        interval_seconds=1,
        overlap="queue",
    )
    assert wait_until(lambda: Execution.objects.filter(schedule=schedule).exists(), timeout=30), _log(first)
    time.sleep(6)
    schedule_pause(tenant=tenant_a, schedule_id=schedule.pk)
    time.sleep(0.5)  # a firing that claimed the row before the pause commits

    firings = _firings(schedule)
    times = [at for at, _ in firings]
    # No time fired twice: one execution per scheduled time.
    assert [t for t, n in Counter(times).items() if n > 1] == [], firings
    # Every second from the first to the last fired, each once: by its own firing, or (had every
    # ticker been late) within a catch-up firing that says how many times it stood for.
    span = int((times[-1] - times[0]).total_seconds()) + 1
    assert sum(1 + missed for _, missed in firings) == span, firings
    assert all(t.microsecond == 0 for t in times)
    assert span >= 5
    # The firings ran (the clusters' slots took them) and each is the schedule's.
    assert wait_until(
        lambda: not Execution.objects.filter(schedule=schedule).exclude(state="completed").exists(), timeout=30
    ), _log(second)
    assert set(Execution.objects.filter(schedule=schedule).values_list("origin", flat=True)) == {"schedule"}


@pytest.mark.timeout(120)
def test_times_missed_while_no_worker_ran_fire_once_when_one_starts(
    tenant_a: Tenant, cluster: Callable[..., Cluster]
) -> None:
    schedule = schedule_create(
        tenant=tenant_a,
        name="while-down",
        blueprint="demo.slow",
        input={"steps": 1, "seconds": 0},
        interval_seconds=2,
        overlap="queue",
    )
    # Down for a while: its next time is seven of its times ago.
    due = schedule.next_fire_at - timedelta(seconds=14)
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=due)
    cluster(extra=FAST), cluster(extra=FAST)
    assert wait_until(lambda: Execution.objects.filter(schedule=schedule).count() >= 2, timeout=30)
    schedule_pause(tenant=tenant_a, schedule_id=schedule.pk)
    time.sleep(0.5)
    firings = _firings(schedule)
    catch_up, *regular = firings
    assert catch_up[0] == due
    assert catch_up[1] >= 6  # the missed times fired once, in one execution, not one each
    assert all(missed == 0 for _, missed in regular)
    assert regular[0][0] > due + timedelta(seconds=2 * catch_up[1])
