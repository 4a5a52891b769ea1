"""Real worker processes (a django-q2 cluster) on the test database: end to end, SIGKILL, restarts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from executions.models import Execution, ExecutionEvent, Step
from executions.services.controls import execution_cancel, execution_provide_input
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import tenant_set_limits

from ..conftest import wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _database_env() -> dict[str, str]:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return {"ENACT_SQLITE_PATH": str(db["NAME"])}
    user = db["USER"] or ""
    auth = f"{user}:{db['PASSWORD']}@" if db["PASSWORD"] else (f"{user}@" if user else "")
    return {"DATABASE_URL": f"postgres://{auth}{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"}


class Cluster:
    """``manage.py qcluster`` in its own process group, with short leases so recovery is quick."""

    def __init__(
        self, log: Path, lease_seconds: float = 2, queue: str | None = None, extra: dict[str, str] | None = None
    ) -> None:
        env = {
            **os.environ,
            **_database_env(),
            # A queue of its own when its work comes through web processes of the test's own:
            # tasks other tests left on the shared queue are not its to wade through.
            **({"ENACT_QUEUE_NAME": queue} if queue else {}),
            "ENACT_WORKERS": "2",
            "ENACT_LEASE_SECONDS": str(lease_seconds),
            "ENACT_HEARTBEAT_SECONDS": "0.5",
            "ENACT_REAP_SECONDS": "0.5",
            "ENACT_QUEUE_POLL_SECONDS": "0.05",
            "ENACT_DISPATCH_POLL_SECONDS": "0.2",
        }
        if settings.REDIS_URL:
            env["REDIS_URL"] = settings.REDIS_URL
        env.update(extra or {})
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop_gracefully(self, timeout: float = 10) -> float:
        """SIGTERM to the cluster's main process, as a deploy does; returns how long until every
        process of the cluster was gone."""
        asked = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout)
        while time.monotonic() - asked < timeout:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return time.monotonic() - asked
            time.sleep(0.05)
        raise AssertionError(f"cluster {self.process.pid} still has processes {timeout} s after SIGTERM")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(2)  # a graceful stop takes django-q2 long; these tests need none
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        # Workers forked by the cluster share its process group; none may outlive the test, or a
        # leftover worker could take the next test's work from the shared queue.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError(f"processes of cluster {self.process.pid} survived SIGKILL")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    started: list[Cluster] = []

    def start(**options: Any) -> Cluster:
        started.append(Cluster(tmp_path / f"cluster-{len(started)}.log", **options))
        return started[-1]

    yield start
    for running in started:
        running.stop()


def submit(tenant: Tenant, blueprint: str, input: Any) -> Execution:
    execution, _ = execution_submit(tenant=tenant, blueprint=blueprint, input=input)
    return execution


def state_of(execution: Execution) -> str:
    return Execution.objects.values_list("state", flat=True).get(pk=execution.pk)


def _log(cluster: Cluster) -> str:
    return cluster.log.read_text(errors="replace")[-3000:]


def test_a_real_worker_runs_an_execution(tenant_a: Tenant, cluster: Callable[..., Cluster]) -> None:
    workers = cluster()
    execution = submit(tenant_a, "demo.chain", {"n": 3})
    assert wait_until(lambda: state_of(execution) == "completed", timeout=60), _log(workers)
    execution.refresh_from_db()
    assert execution.output == 3
    assert execution.claims == 1
    # The worker lets go just after the last event commits.
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).lease_owner == "", timeout=10)


def test_sigkill_mid_run_resumes_from_the_checkpoint_on_another_worker(
    tenant_a: Tenant, cluster: Callable[..., Cluster]
) -> None:
    workers = cluster()
    execution = submit(tenant_a, "demo.slow", {"steps": 4, "seconds": 0.6})
    assert wait_until(lambda: Step.objects.filter(execution=execution, state="completed").count() >= 1, timeout=60), (
        _log(workers)
    )
    owner = Execution.objects.values_list("lease_owner", flat=True).get(pk=execution.pk)
    victim = int(owner.rsplit(":", 1)[1])
    os.kill(victim, signal.SIGKILL)

    assert wait_until(lambda: state_of(execution) == "completed", timeout=60), _log(workers)
    execution.refresh_from_db()
    assert execution.claims == 2
    steps = list(Step.objects.filter(execution=execution).values_list("name", "state", "attempt"))
    completed = [name for name, state, _ in steps if state == "completed"]
    assert completed == ["step_1", "step_2", "step_3", "step_4"]  # each exactly once, in order
    abandoned = [(name, attempt) for name, state, attempt in steps if state == "failed"]
    assert len(abandoned) <= 1
    for name, _ in abandoned:
        error = Step.objects.get(execution=execution, name=name, state="failed").error
        assert error["code"] == "worker_lost"
    seqs = list(ExecutionEvent.objects.filter(execution=execution).values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    terminal = ExecutionEvent.objects.filter(execution=execution, type="data-execution-end").count()
    assert terminal == 1


def test_approval_survives_a_restart_of_every_worker(tenant_a: Tenant, cluster: Callable[..., Cluster]) -> None:
    first = cluster()
    execution = submit(tenant_a, "demo.approval", {})
    assert wait_until(lambda: state_of(execution) == "waiting", timeout=60), _log(first)
    first.stop()

    second = cluster()
    execution_provide_input(tenant=tenant_a, execution_id=execution.pk, approve=True, input=None, actor="ann")
    assert wait_until(lambda: state_of(execution) == "completed", timeout=60), _log(second)
    execution.refresh_from_db()
    assert execution.output == {"published": True, "note": None}


def test_cancel_reaches_a_real_worker_blocked_in_a_long_call(tenant_a: Tenant, cluster: Callable[..., Cluster]) -> None:
    # Leases far longer than the test: only the worker's own monitor can deliver this cancel
    # (the reaper of an expired lease would cancel it too, but much later).
    workers = cluster(lease_seconds=60)
    execution = submit(tenant_a, "demo.slow", {"steps": 1, "seconds": 60})
    assert wait_until(lambda: Step.objects.filter(execution=execution, state="running").exists(), timeout=60), _log(
        workers
    )
    first_lease = Execution.objects.get(pk=execution.pk).lease_expires_at
    # The worker's monitor renews its lease while the step is blocked.
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).lease_expires_at > first_lease, timeout=3)
    execution_cancel(tenant=tenant_a, execution_id=execution.pk, reason="stop now")
    assert wait_until(lambda: state_of(execution) == "cancelled", timeout=1), _log(workers)
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).lease_owner == "", timeout=5)


# --- slots: many executions per worker process --------------------------------------------------


def _completed_once(execution_ids: list[str], steps: int) -> list[str]:
    """The executions whose completed steps are not each of their steps exactly once."""
    wrong = []
    for execution_id in execution_ids:
        names = sorted(Step.objects.filter(execution_id=execution_id, state="completed").values_list("name", flat=True))
        if names != [f"step_{i}" for i in range(1, steps + 1)]:
            wrong.append(execution_id)
    return wrong


def _states(ids: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for state in Execution.objects.filter(pk__in=ids).values_list("state", flat=True):
        found[state] = found.get(state, 0) + 1
    return found


def test_sigkill_of_a_worker_with_many_executions_in_its_slots_loses_none(
    tenant_a: Tenant, cluster: Callable[..., Cluster]
) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 50})
    workers = cluster()
    ids = [submit(tenant_a, "demo.slow", {"steps": 3, "seconds": 0.5}).pk for _ in range(30)]
    assert wait_until(lambda: Step.objects.filter(execution_id__in=ids, state="completed").count() >= 10, timeout=60)
    owners = list(Execution.objects.filter(pk__in=ids).exclude(lease_owner="").values_list("lease_owner", flat=True))
    victim = max(set(owners), key=owners.count)
    held = owners.count(victim)
    assert held >= 5, owners  # many executions in one process's slots
    os.kill(int(victim.rsplit(":", 1)[1]), signal.SIGKILL)

    assert wait_until(lambda: _states(ids) == {"completed": 30}, timeout=90), (_states(ids), _log(workers))
    assert _completed_once(ids, 3) == []
    resumed = Execution.objects.filter(pk__in=ids, claims__gte=2).count()
    assert resumed >= held


@pytest.mark.timeout(300)
def test_a_rolling_restart_of_both_clusters_loses_no_execution_and_reruns_no_step(
    tenant_a: Tenant, cluster: Callable[..., Cluster]
) -> None:
    # 200 in flight on PostgreSQL; SQLite's one writer makes 200 side by side a test of its lock
    # more than of the restart, so there 60.
    count = 200 if connection.vendor == "postgresql" else 60
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 200, "max_queued": 200})
    # Leases long enough that only the restarts hand executions on, not a heartbeat that a busy
    # SQLite kept waiting.
    first, second = cluster(lease_seconds=10), cluster(lease_seconds=10)
    ids = [submit(tenant_a, "demo.slow", {"steps": 3, "seconds": 0.4}).pk for _ in range(count)]
    assert wait_until(lambda: Step.objects.filter(execution_id__in=ids, state="completed").count() >= 20, timeout=60)
    for old in (first, second):  # one at a time, as a deploy restarts them
        stopped_in = old.stop_gracefully()
        assert stopped_in < 8, _log(old)
        cluster(lease_seconds=10)
    assert wait_until(lambda: _states(ids) == {"completed": count}, timeout=200), _states(ids)
    assert _completed_once(ids, 3) == []
    handed = ExecutionEvent.objects.filter(execution_id__in=ids, type="data-execution-paused").count()
    assert handed > 0  # the restarts did catch executions mid-run, and handed them on


@pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL's pool")
def test_a_worker_process_holds_no_more_connections_than_its_pool(
    tenant_a: Tenant, cluster: Callable[..., Cluster]
) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 400, "max_queued": 400})
    extra = {
        "ENACT_DB_POOL_SIZE": "3",
        "ENACT_DB_APPLICATION_NAME": "enact-pool-test",
        "ENACT_WORKERS": "1",
        "ENACT_SLOTS": "400",
    }
    workers = cluster(extra=extra)
    blocked = [submit(tenant_a, "demo.slow", {"steps": 1, "seconds": 30}).pk for _ in range(200)]
    short = [submit(tenant_a, "demo.slow", {"steps": 2, "seconds": 0.2}).pk for _ in range(200)]
    peak = 0

    def connections() -> int:
        nonlocal peak
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
                ["enact-pool-test"],
            )
            peak = max(peak, cursor.fetchone()[0])
        return peak

    assert wait_until(lambda: connections() >= 0 and _states(short).get("completed") == 200, timeout=90), _log(workers)
    assert wait_until(lambda: connections() >= 0 and _states(blocked).get("running") == 200, timeout=30)
    for execution_id in blocked:  # cancelled while blocked in their step
        execution_cancel(tenant=tenant_a, execution_id=execution_id, reason="enough")
    assert wait_until(lambda: connections() >= 0 and _states(blocked) == {"cancelled": 200}, timeout=60)
    # One worker process with 400 executions in its slots: its pool's 3, and the cluster's other
    # processes' (sentinel, monitor, pusher) 3 each at most, never one per execution.
    assert 1 <= peak <= 4 * 3


@pytest.mark.skipif(not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"), reason="PostgreSQL's pool")
def test_a_cluster_on_postgresql_without_redis_runs_its_executions(
    tenant_a: Tenant, cluster: Callable[..., Cluster]
) -> None:
    # The ORM broker: the cluster's processes use the database before they fork their workers,
    # and a worker must not go on with its parent's pooled connections (the same sockets).
    workers = cluster(extra={"REDIS_URL": ""})
    ids = [submit(tenant_a, "demo.chain", {"n": 2}).pk for _ in range(5)]
    assert wait_until(lambda: _states(ids) == {"completed": 5}, timeout=30), _log(workers)
    assert "Traceback" not in workers.log.read_text(errors="replace"), _log(workers)
