"""Leases: a worker claims an execution with a compare-and-set, renews its lease while it runs,
and lets go when the execution ends, pauses or waits. Also the worker's own presence record."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Subquery
from django.utils import timezone

from enact_platform.locks import locked
from executions import queue
from executions.models import Execution, WorkerHeartbeat
from executions.services.children import execution_child_ended
from executions.services.controls import execution_cancel
from tenants.models import Tenant

S = Execution.State


def worker_id() -> str:
    """This process's name in leases and heartbeats: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def lease_until() -> Any:
    return timezone.now() + timedelta(seconds=settings.ENACT_LEASE_SECONDS)


def execution_claim(*, execution_id: str, worker: str) -> Execution | None:
    """Take the lease on an execution if it is runnable, unleased, and its tenant has a free slot.

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
        if execution.state != S.RUNNING and not execution.cancel_requested_at:
            limit = execution.tenant.limits.max_concurrent_executions
            busy = Execution.objects.filter(tenant_id=execution.tenant_id).active().exclude(pk=execution.pk).count()
            if busy >= limit:
                # Its task is spent: no longer "in flight", so the next free slot dispatches it.
                Execution.objects.filter(pk=execution.pk, state=S.QUEUED).update(enqueued_at=None)
                return None
        # The answer to a waiting execution is taken with the claim, so one that arrives while
        # this run goes on is kept for the next run instead of being cleared after this one.
        answer = execution.resume_input
        lease = {"lease_owner": worker, "lease_expires_at": lease_until(), "resume_requested": False}
        claimed = Execution.objects.filter(pk=execution.pk, claims=execution.claims).update(
            claims=F("claims") + 1, resume_input=None, **lease
        )
        if not claimed:
            return None
    # What the update wrote, without reading the row back (under the lock nothing else changed it).
    for field, value in lease.items():
        setattr(execution, field, value)
    execution.claims += 1
    execution.resume_input = answer
    return execution


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


def execution_release(*, execution_id: str, worker: str) -> None:
    """Let go of an execution (it ended, paused or waits) and start queued work in its slot.

    A cancel or an answer that came while this worker held the execution is acted on now; a
    clean let-go (paused, waiting) resets the count of claims that crash-looping is judged by."""
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


def worker_seen(*, worker: str, running: int) -> None:
    """Record that a worker process is alive (and how much it runs); old records are swept."""
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(worker=worker, defaults={"last_seen": now, "running": running})
    WorkerHeartbeat.objects.filter(last_seen__lt=now - timedelta(days=1)).delete()
