"""The queue of executions ready to run: the one seam between what makes an execution ready and
the worker processes that run it. Tests replace ``enqueue_run`` and ``enqueue_runs`` on this module.

The execution table is the queue: a ready execution's row says so (``runtime/leases.py``
``READY``), and a worker's free slot takes the next one fairly among tenants. Enqueueing is then
only a wake-up, so workers sleep when there is nothing to do (``wakeups``).

Who enqueues: a submission, a resume or an answer (after commit), a slot of a tenant that frees
(``executions_dispatch_queued``), and the reaper.
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Subquery
from django.db.models.functions import Coalesce
from django_q.tasks import async_task

from executions import wakeups
from executions.models import Execution
from tenants.models import TenantLimits

S = Execution.State


def enqueue_run(execution_id: str) -> None:
    """Tell the workers that ``execution_id`` is ready to run (its row says so already)."""
    if settings.Q_CLUSTER.get("sync"):
        # ENACT_QUEUE_SYNC, for a script or a debugger: run it here and now, by its task's dotted
        # name (the worker side imports it; this side never does).
        async_task("executions.tasks.run_execution", execution_id, sync=True)
        return
    wakeups.work_ready()


def enqueue_runs(execution_ids: list[str]) -> None:
    """Tell the workers that these executions are ready: one wake-up for them all (the reaper
    hands on hundreds at once). Tests replace it with ``enqueue_run`` for each."""
    if settings.Q_CLUSTER.get("sync"):
        for execution_id in execution_ids:
            enqueue_run(execution_id)
    elif execution_ids:
        wakeups.work_ready()


def work_ready() -> None:
    """Tell the workers that some execution is ready (which one, their fair pick decides)."""
    wakeups.work_ready()


def enqueue_after_commit(execution_id: str) -> None:
    # Looked up at call time, so a test's replacement of enqueue_run is the one that runs.
    transaction.on_commit(lambda: enqueue_run(execution_id))


def dispatch_after_commit(tenant_id: int) -> None:
    """Once the transaction commits, start the tenant's next queued execution in the slot it freed."""
    transaction.on_commit(lambda: executions_dispatch_queued(tenant_id=tenant_id))


def executions_dispatch_queued(*, tenant_id: int) -> list[str]:
    """A slot of the tenant freed: enqueue its oldest queued execution if it has a free slot (a
    wake-up for the workers, who pick fairly among every tenant's ready work). One, not as many as
    it has free slots: each slot that frees says so, and a flood must not cost a wake-up per
    waiting execution per release."""
    # One statement: the oldest queued execution, if the tenant runs fewer than its limit.
    limit = TenantLimits.objects.filter(tenant_id=tenant_id).values("max_concurrent_executions")
    busy = Execution.objects.filter(tenant_id=tenant_id).active().order_by().values("tenant_id").annotate(n=Count("id"))
    ids = list(
        Execution.objects.filter(tenant_id=tenant_id, state=S.QUEUED, lease_owner="")
        .alias(busy=Coalesce(Subquery(busy.values("n")), 0), limit=Subquery(limit))
        .filter(busy__lt=F("limit"))
        .order_by("created_at", "id")
        .values_list("pk", flat=True)[:1]
    )
    for execution_id in ids:
        enqueue_run(execution_id)
    return ids
