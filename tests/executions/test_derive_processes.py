"""A fork run by real worker processes (a django-q2 cluster), and one that loses its worker."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

import pytest

from executions.models import Execution, ExecutionEvent, Step
from executions.services.derive import execution_fork
from executions.services.submit import execution_submit
from tenants.models import Tenant

from ..conftest import wait_until
from .test_processes import Cluster, _log, cluster, state_of

__all__ = ["cluster"]  # the fixture, used by name

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_a_fork_whose_worker_is_killed_mid_step_resumes_from_its_own_checkpoint(
    tenant_a: Tenant, cluster: Callable[..., Cluster]
) -> None:
    workers = cluster()
    source, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 3, "seconds": 0.1})
    assert wait_until(lambda: state_of(source) == "completed", timeout=60), _log(workers)
    second = Step.objects.get(execution=source, name="step_2")
    # The state gives the step its duration: long enough to kill its worker during it.
    fork, _ = execution_fork(
        tenant=tenant_a,
        execution_id=source.pk,
        from_step=second.pk,
        state={"steps": 3, "seconds": 1.5, "done": 100},
    )
    assert wait_until(lambda: Step.objects.filter(execution=fork, state="running").exists(), timeout=60), _log(workers)
    owner = Execution.objects.values_list("lease_owner", flat=True).get(pk=fork.pk)
    os.kill(int(owner.rsplit(":", 1)[1]), signal.SIGKILL)

    assert wait_until(lambda: state_of(fork) == "completed", timeout=60), _log(workers)
    fork.refresh_from_db()
    assert fork.output == {"steps": 3, "seconds": 1.5, "done": 102}
    steps = list(Step.objects.filter(execution=fork).order_by("position").values_list("name", "state", "attempt"))
    assert [name for name, state, _ in steps if state == "completed"] == ["step_2", "step_3"]
    assert [(name, attempt) for name, state, attempt in steps if state == "failed"] == [("step_2", 1)]
    seqs = list(ExecutionEvent.objects.filter(execution=fork).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert Execution.objects.get(pk=source.pk).output == {"steps": 3, "seconds": 0.1, "done": 3}
