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

    def __init__(self, log: Path, lease_seconds: float = 2, queue: str | None = None) -> None:
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
        }
        if settings.REDIS_URL:
            env["REDIS_URL"] = settings.REDIS_URL
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

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
