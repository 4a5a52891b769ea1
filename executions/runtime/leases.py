"""Leases: a worker claims an execution with a compare-and-set (by id, or the next one fairly
among tenants), renews its lease while it runs, and lets go when the execution ends, pauses or
waits. Also the worker's own presence record."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, F, Min, Q, Subquery, When
from django.utils import timezone

from enact_platform.locks import locked
from executions import queue
from executions.models import Execution, InboxMessage, WorkerHeartbeat
from executions.services.children import execution_child_ended
from executions.services.controls import execution_cancel
from tenants.models import Tenant, TenantLimits

S = Execution.State


def worker_id() -> str:
    """This process's name in leases and heartbeats: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_until() -> Any:
    return timezone.now() + timedelta(seconds=settings.ENACT_LEASE_SECONDS)


# Ready to run: not held by any worker, and new, orphaned (running with no lease: its worker died
# or was fenced off), or paused or waiting with a resume asked for. The execution table is the queue.
READY = Q(lease_owner="") & (
    Q(state__in=(S.QUEUED, S.CREATED, S.RUNNING)) | Q(state__in=(S.PAUSED, S.WAITING), resume_requested=True)
)
# Ready executions that take no new slot of their tenant: orphans hold theirs already, and a
# cancel needs a worker only to finish, so both go first and past the tenant's limit.
_URGENT = Q(state=S.RUNNING) | Q(cancel_requested_at__isnull=False)


def execution_claim(*, execution_id: str, worker: str) -> Execution | None:
    """Take the lease on this execution if it is ready and its tenant has a free slot.

    The tenant row is locked (PostgreSQL) or the write lock held (SQLite, IMMEDIATE) while the
    slots are counted and the lease is taken, so concurrent claims never overfill a tenant. The
    locks are NO KEY UPDATE: they serialize claims but not the foreign-key checks of a worker
    appending events meanwhile (FOR UPDATE would deadlock with those)."""
    with transaction.atomic():
        # Pickup latency is mostly round trips: the tenant is found and locked in one statement.
        owner = Execution.objects.filter(pk=execution_id).values("tenant_id")
        if locked(Tenant.objects.filter(pk=Subquery(owner)), no_key=True).values("pk").first() is None:
            return None
        execution = locked(
            Execution.objects.select_related("tenant", "tenant__limits").filter(pk=execution_id),
            no_key=True,
            of=("self",),
        ).get()
        if execution.is_terminal or execution.has_live_lease or not _runnable(execution):
            return None
        return _take_lease(execution, worker)


def execution_claim_next(*, worker: str) -> Execution | None:
    """Claim the next ready execution, fairly among tenants (see ``execution_claim_batch``)."""
    claimed = execution_claim_batch(worker=worker, limit=1)
    return claimed[0] if claimed else None


def execution_claim_batch(*, worker: str, limit: int) -> list[Execution]:
    """Claim up to ``limit`` ready executions of the tenant a free slot should serve next, fairly
    among tenants: the tenant with the fewest running executions for its weight goes first
    (weighted fair share of the slots), ties to the tenant whose ready work is oldest, each
    tenant under its ``max_concurrent_executions``; within a tenant, oldest first. So one
    tenant's backlog delays another tenant's first execution by one claim at most, not by its
    length. One transaction for the batch: a worker with many free slots fills them at the cost
    of a few round trips, not a few per execution. Returns [] when nothing is ready."""
    for tenant_id in tenants_in_fair_order():
        with transaction.atomic():
            if locked(Tenant.objects.filter(pk=tenant_id), no_key=True).values("pk").first() is None:
                continue
            oldest = (
                Execution.objects.select_related("tenant", "tenant__limits")
                .filter(READY, tenant_id=tenant_id)
                .order_by(Case(When(_URGENT, then=0), default=1), "created_at", "id")
            )
            claimed = _take_leases(list(locked(oldest, no_key=True, of=("self",))[:limit]), worker)
        if claimed:
            return claimed
    return []


def tenants_in_fair_order() -> list[int]:
    """Tenants with ready work, in the order a free slot should serve them; tenants at their
    limit are left out unless they have urgent work (an orphan, a cancel).

    One statement, as every claim starts with it: each tenant's ready work (oldest, urgent),
    joined to its limits and to what it runs now (the active arm reads only running and claimed
    rows, by the (tenant, state) index, however many finished executions there are)."""
    ready_sql, ready_params = (
        Execution.objects.filter(READY)
        .values("tenant_id")
        .annotate(oldest=Min("created_at"), urgent=Count("id", filter=_URGENT))
        .order_by()
        .query.sql_with_params()
    )
    active_sql, active_params = (
        Execution.objects.active().values("tenant_id").annotate(n=Count("id")).order_by().query.sql_with_params()
    )
    limits = connection.ops.quote_name(TenantLimits._meta.db_table)
    sql = (
        "SELECT r.tenant_id, r.oldest, r.urgent, l.weight, l.max_concurrent_executions, COALESCE(a.n, 0) "
        f"FROM ({ready_sql}) r JOIN {limits} l ON l.tenant_id = r.tenant_id "
        f"LEFT JOIN ({active_sql}) a ON a.tenant_id = r.tenant_id"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, (*ready_params, *active_params))
        rows = cursor.fetchall()
    order = []
    for tenant_id, oldest, urgent, weight, limit, busy in rows:
        if busy < limit or urgent:
            # ``oldest`` is a datetime on PostgreSQL, ISO text on SQLite: either sorts by time.
            order.append((busy / weight, oldest, tenant_id))
    return [tenant_id for *_, tenant_id in sorted(order)]


def _take_lease(execution: Execution, worker: str) -> Execution | None:
    """Under the tenant's lock: lease ``execution`` to ``worker`` if its tenant has a free slot."""
    claimed = _take_leases([execution], worker)
    return claimed[0] if claimed else None


def _take_leases(rows: list[Execution], worker: str) -> list[Execution]:
    """Under the tenant's lock, with ``rows`` (ready, of one tenant) locked: lease to ``worker``
    the urgent ones (an orphan holds its slot already; a cancel only needs to finish) and as many
    of the others as the tenant has free slots."""
    if not rows:
        return []
    urgent = [row for row in rows if row.state == S.RUNNING or row.cancel_requested_at]
    others = [row for row in rows if not (row.state == S.RUNNING or row.cancel_requested_at)]
    if others:
        tenant_id = rows[0].tenant_id
        busy = Execution.objects.filter(tenant_id=tenant_id).active().exclude(pk__in=[r.pk for r in rows]).count()
        held = sum(1 for row in urgent if row.state == S.RUNNING)
        others = others[: max(0, rows[0].tenant.limits.max_concurrent_executions - busy - held)]
    chosen = urgent + others
    if not chosen:
        return []
    # The rows are locked, so one update claims them all. The answer to a waiting execution is
    # taken with the claim, so one that arrives while this run goes on is kept for the next run.
    lease = {"lease_owner": worker, "lease_expires_at": lease_until(), "resume_requested": False}
    Execution.objects.filter(pk__in=[row.pk for row in chosen]).update(
        claims=F("claims") + 1, resume_input=None, **lease
    )
    for row in chosen:  # what the update wrote, without reading the rows back
        for field, value in lease.items():
            setattr(row, field, value)
        row.claims += 1
    return chosen


def _runnable(execution: Execution) -> bool:
    if execution.state in (S.QUEUED, S.CREATED, S.RUNNING):
        return True  # new, or running with no live lease: its worker died
    return execution.state in (S.PAUSED, S.WAITING) and execution.resume_requested


def execution_heartbeat(*, execution_ids: list[str], worker: str) -> list[str]:
    """Renew this worker's leases; returns the ids whose lease this worker no longer holds."""
    if not execution_ids:
        return []
    Execution.objects.filter(pk__in=execution_ids, lease_owner=worker).update(lease_expires_at=lease_until())
    held = set(Execution.objects.filter(pk__in=execution_ids, lease_owner=worker).values_list("pk", flat=True))
    return [i for i in execution_ids if i not in held]


def execution_release(*, execution_id: str, worker: str, hand_back_message: str | None = None) -> None:
    """Let go of an execution (it ended, paused or waits) and start queued work in its slot.

    A cancel or an answer that came while this worker held the execution is acted on now; a
    clean let-go (paused, waiting) resets the count of claims that crash-looping is judged by.
    ``hand_back_message``: the worker is stopping and asked the execution (with that inbox
    message) to pause for another worker to go on with at once: it is ready again as it is let
    go. A pause the run never read (it was stopped mid-step) is withdrawn, or the next worker
    would read it and pause the execution for good."""
    handed_back = hand_back_message is not None
    if handed_back:
        Execution.objects.filter(pk=execution_id, lease_owner=worker, state=S.PAUSED).update(resume_requested=True)
        InboxMessage.objects.filter(pk=hand_back_message, consumed_at__isnull=True).delete()
    released = Execution.objects.filter(pk=execution_id, lease_owner=worker).update(
        lease_owner="", lease_expires_at=None
    )
    execution = Execution.objects.select_related("tenant").filter(pk=execution_id).first()
    if execution is None:
        return
    if released and execution.is_terminal and execution.parent_id:
        execution_child_ended(child_id=execution.pk)
    waited_for = execution.child_waited_for if released else None
    if waited_for:  # the child may have ended before this parent began to wait for it
        execution_child_ended(child_id=waited_for)
    if released and execution.state in (S.PAUSED, S.WAITING):
        Execution.objects.filter(pk=execution_id).update(claims=0)
        if execution.cancel_requested_at:
            execution_cancel(tenant=execution.tenant, execution_id=execution_id, reason=execution.cancel_reason)
        elif execution.resume_requested:
            queue.enqueue_run(execution_id)
    queue.executions_dispatch_queued(tenant_id=execution.tenant_id)
    if handed_back or (released and execution.state == S.RUNNING):
        queue.work_ready()  # another worker takes it over now, not when a lease would expire


def worker_seen(*, worker: str, running: int) -> None:
    """Record that a worker process is alive (and how much it runs); old records are swept."""
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(worker=worker, defaults={"last_seen": now, "running": running})
    WorkerHeartbeat.objects.filter(last_seen__lt=now - timedelta(days=1)).delete()
