"""Writes for executions: the platform's use cases. The tenant is always explicit.

Interfaces (API, websocket, admin, CLI) call these; they never write models themselves.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F, Q, Subquery
from django.utils import timezone

from enact_platform.errors import Conflict, InvalidInput, PayloadTooLarge, QuotaExceeded
from executions import kernel_bridge, streaming
from executions.blueprints.catalog import graph_lookup
from executions.kernel.events import EventType
from executions.kernel.inbox import message_from_dict, message_to_dict
from executions.models import Execution, ExecutionEvent, Step, WorkerHeartbeat
from executions.registry import validate_input
from executions.selectors import execution_get
from executions.stores import DjangoInboxStore
from tenants.models import Tenant, TenantLimits
from tenants.services import tenant_consume_execution_quota

logger = logging.getLogger(__name__)

S = Execution.State
# A queued execution whose task was enqueued this recently is taken to have it still on its way.
QUEUE_STALE_SECONDS = 30.0
# A wait for a child is answered by the child's end, not by an operator's resume.
RESUMABLE_WAITS = {"rate_limit", "external", "checkpoint", "cost_threshold", "memory_pressure"}
INPUT_WAITS = {"approval", "user_input"}


def _enqueue_after_commit(execution_id: str) -> None:
    from executions.tasks import enqueue_run

    transaction.on_commit(lambda: enqueue_run(execution_id))


# --- submit ----------------------------------------------------------------------------------


def execution_submit(
    *,
    tenant: Tenant,
    graph: str,
    input: Any,
    idempotency_key: str | None = None,
    metadata: dict[str, Any] | None = None,
    user: User | None = None,
    version: int | None = None,
    parent: Execution | None = None,
) -> tuple[Execution, bool]:
    """Create an execution (``queued``) of graph ``graph`` (a built-in graph or one of the tenant's
    blueprints, at ``version`` or its latest) and enqueue it after commit. Returns it and whether
    it is new: a repeated idempotency key returns the first execution, unchanged."""
    limits = TenantLimits.objects.get(tenant=tenant)
    if not tenant.is_active:
        raise QuotaExceeded(
            f"tenant {tenant.slug} is suspended and cannot submit executions", details={"status": tenant.status}
        )
    entry = graph_lookup(tenant=tenant, name=graph, version=version)
    if idempotency_key is not None and (not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 200):
        raise InvalidInput("idempotency_key must be a string of 1 to 200 characters")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidInput("metadata must be an object")
    size = len(json.dumps(input, separators=(",", ":")).encode())
    if size > limits.max_input_bytes:
        raise PayloadTooLarge(
            f"input is {size} bytes; this tenant allows {limits.max_input_bytes}",
            details={"size": size, "maximum": limits.max_input_bytes},
        )
    validate_input(entry.input_schema, input)
    entry.build(input)  # an input that shapes an invalid graph is refused now, not by a worker

    if idempotency_key:
        existing = Execution.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            tenant_consume_execution_quota(tenant=tenant, limits=limits)
            execution = Execution.objects.create(
                tenant=tenant,
                graph=entry.name,
                graph_version=entry.version,
                input=input,
                idempotency_key=idempotency_key or None,
                metadata=metadata or {},
                created_by=user if user is not None and user.is_authenticated else None,
                parent=parent,
            )
            _enqueue_after_commit(execution.pk)
            transaction.on_commit(partial(streaming.publish_created, tenant.pk, execution.pk))
    except IntegrityError:
        # A concurrent submission with the same key won; its quota use stands, ours rolled back.
        existing = Execution.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return existing, False
    return execution, True


# --- controls --------------------------------------------------------------------------------


def execution_cancel(*, tenant: Tenant, execution_id: str, reason: str = "", actor: str = "") -> Execution:
    """Cancel at once if no worker holds the execution; otherwise record the request durably and
    let the worker's watcher cancel the running step. Cancelling a terminal execution changes
    nothing and returns it. The returned execution's ``had_ended`` says which it was, as seen
    under the row's lock."""
    reason = _text(reason, "reason") or (f"cancelled by {actor}" if actor else "cancelled")
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    with transaction.atomic():
        execution = Execution.objects.select_for_update(no_key=True).get(pk=execution.pk)
        if execution.is_terminal:
            execution.had_ended = True  # type: ignore[attr-defined]
            return execution
        if _leased(execution):
            Execution.objects.filter(pk=execution.pk, cancel_requested_at__isnull=True).update(
                cancel_requested_at=timezone.now(), cancel_reason=reason
            )
        else:
            kernel_bridge.kernel_for(execution).cancel_execution(reason)
            Execution.objects.filter(pk=execution.pk).update(cancel_requested_at=timezone.now(), cancel_reason=reason)
            if execution.parent_id:
                transaction.on_commit(partial(_tell_parent_after_commit, execution.pk))
        cancel_children = list(
            Execution.objects.filter(parent=execution)
            .exclude(state__in=Execution.TERMINAL)
            .values_list("pk", flat=True)
        )
    for child_id in cancel_children:
        execution_cancel(tenant=tenant, execution_id=child_id, reason=f"parent cancelled: {reason}", actor=actor)
    if not _leased(execution):
        _release_slot_after_commit(tenant.pk)
    execution.refresh_from_db()
    execution.had_ended = False  # type: ignore[attr-defined]
    return execution


def execution_pause(*, tenant: Tenant, execution_id: str, reason: str = "", actor: str = "") -> Execution:
    """Ask a running execution to pause at its next step boundary."""
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    if execution.state != S.RUNNING:
        raise Conflict(f"cannot pause an execution that is {execution.state}", details={"state": execution.state})
    message = {
        "kind": "control",
        "action": "pause",
        "actor": actor or "unknown",
        "reason": _text(reason, "reason") or None,
    }
    DjangoInboxStore(tenant.pk).push(execution.pk, message_from_dict(message))
    return execution


def execution_resume(*, tenant: Tenant, execution_id: str, actor: str = "") -> Execution:
    """Resume a paused execution, or one waiting on something an operator can wave through
    (a cost alert, a rate limit); it continues from its checkpoint on a worker."""
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    with transaction.atomic():
        execution = Execution.objects.select_for_update(no_key=True).get(pk=execution.pk)
        if execution.state == S.WAITING and execution.wait_reason in INPUT_WAITS:
            raise Conflict(
                f"execution is waiting for {execution.wait_reason}; answer it with input",
                details={"state": execution.state, "wait_reason": execution.wait_reason},
            )
        if execution.state not in (S.PAUSED, S.WAITING):
            raise Conflict(f"cannot resume an execution that is {execution.state}", details={"state": execution.state})
        if execution.state == S.WAITING and execution.wait_reason not in RESUMABLE_WAITS:
            raise Conflict(
                f"cannot resume an execution waiting for {execution.wait_reason}: it goes on when that ends",
                details={"state": execution.state, "wait_reason": execution.wait_reason},
            )
        if not execution.resume_requested:
            Execution.objects.filter(pk=execution.pk).update(resume_requested=True, resume_input=None)
            _enqueue_after_commit(execution.pk)
    execution.refresh_from_db()
    return execution


def execution_provide_input(
    *, tenant: Tenant, execution_id: str, input: Any = None, approve: bool | None = None, actor: str = ""
) -> Execution:
    """Answer an execution waiting for user input or approval; it resumes with the answer."""
    if approve is not None and not isinstance(approve, bool):
        raise InvalidInput("approve must be true or false")
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    with transaction.atomic():
        execution = Execution.objects.select_for_update(no_key=True).get(pk=execution.pk)
        if execution.state != S.WAITING or execution.wait_reason not in INPUT_WAITS:
            raise Conflict(
                "execution is not waiting for input or approval",
                details={"state": execution.state, "wait_reason": execution.wait_reason},
            )
        waiting_seq = _waiting_event_seq(execution)
        if execution.resume_requested or execution.answered_wait_seq == waiting_seq:
            raise Conflict("execution was already answered and is resuming")
        if execution.wait_reason == "approval":
            if approve is None:
                raise InvalidInput("an approval needs approve: true or false")
            answer: Any = {"approved": approve, "input": input, "actor": actor}
        else:
            schema = (execution.wait_detail or {}).get("schema")
            if schema:
                validate_input(schema, input)
            answer = input
        Execution.objects.filter(pk=execution.pk).update(
            resume_requested=True, resume_input={"value": answer}, answered_wait_seq=waiting_seq
        )
        _enqueue_after_commit(execution.pk)
    execution.refresh_from_db()
    return execution


# --- child executions -----------------------------------------------------------------------------


def execution_spawn_child(
    *, parent: Execution, graph: str, version: int | None, input: Any, inherit_inbox: bool, node: str
) -> Execution:
    """Submit a child of ``parent`` (same tenant, its quotas) for its node ``node``: linked to it,
    cancelled with it, and, with ``inherit_inbox``, reading its parent's inbox as well as its own.

    Idempotent per visit of the node: the key counts the node's completed steps so far, which a
    rerun of the same visit (a worker that died before the wait was stored) finds unchanged."""
    visits = Step.objects.filter(execution=parent, name=node, state="completed").count()
    child, _ = execution_submit(
        tenant=parent.tenant,
        graph=graph,
        version=version,
        input=input,
        idempotency_key=f"child:{parent.pk}:{visits}:{node}"[:200],
        metadata={"inherit_inbox": bool(inherit_inbox)},
        parent=parent,
    )
    return child


def execution_child_ended(*, child_id: str) -> bool:
    """Answer the parent that waits for this (ended) child with how it ended; it resumes. Returns
    whether a parent was answered. Called when a child ends and when a parent starts to wait, so
    whichever comes second answers."""
    child = Execution.objects.filter(pk=child_id).first()
    if child is None or child.parent_id is None or not child.is_terminal:
        return False
    with transaction.atomic():
        parent = Execution.objects.select_for_update(no_key=True).get(pk=child.parent_id)
        if _child_waited_for(parent) != child.pk:
            return False
        # The wait's seq is the question's identity: a second delivery (the child's release and the
        # parent's both found it ended) must not answer it again, nor a later wait of the parent.
        waiting_seq = _waiting_event_seq(parent)
        if parent.resume_requested or parent.answered_wait_seq == waiting_seq:
            return False
        answer = {"child_id": child.pk, "state": child.state, "output": child.output, "error": child.error}
        Execution.objects.filter(pk=parent.pk).update(
            resume_requested=True, resume_input={"value": answer}, answered_wait_seq=waiting_seq
        )
        _enqueue_after_commit(parent.pk)
    return True


def _tell_parent_after_commit(child_id: str) -> None:
    execution_child_ended(child_id=child_id)


def _child_waited_for(execution: Execution) -> str | None:
    prompt = (execution.wait_detail or {}).get("prompt")
    if execution.state == S.WAITING and execution.wait_reason == "sub_agent" and isinstance(prompt, dict):
        return prompt.get("child_id")
    return None


def _waiting_event_seq(execution: Execution) -> int:
    """The seq of the event that put the execution in its current wait: the question's identity."""
    latest = (
        ExecutionEvent.objects.filter(execution=execution, type=EventType.EXECUTION_WAITING.value)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return int(latest or 0)


def execution_post_inbox(*, tenant: Tenant, execution_id: str, message: dict[str, Any], actor: str = "") -> str:
    """Post guidance, evidence or an agent message for the execution's next step boundary.

    The message records who posted it (``actor``), whatever names it carries inside."""
    if not isinstance(message, dict) or message.get("kind") not in ("guidance", "evidence", "a2a"):
        raise InvalidInput("kind must be one of guidance, evidence, a2a")
    data = {k: v for k, v in message.items() if k != "id"}
    if data["kind"] == "guidance" and actor:
        data["sender"] = actor
    for name in _INBOX_SHORT_FIELDS:
        if name in data and not (isinstance(data[name], str) and 0 < len(data[name]) <= 200):
            raise InvalidInput(f"{name} must be a string of 1 to 200 characters")
    try:
        parsed = message_from_dict(data)
        stored = json.dumps(message_to_dict(parsed), allow_nan=False)  # NaN and infinity are not JSON
    except (KeyError, ValueError, TypeError) as exc:
        missing = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InvalidInput(f"invalid {data['kind']} message: {missing}") from None
    if len(stored.encode()) > 64 * 1024:
        raise PayloadTooLarge("inbox messages are limited to 64 KiB")
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    if execution.is_terminal:
        raise Conflict(f"execution is {execution.state}; it reads no more messages", details={"state": execution.state})
    DjangoInboxStore(tenant.pk).push(execution.pk, parsed, actor=actor)
    return parsed.id


# Names and labels inside inbox messages; longer ones are refused, not truncated.
_INBOX_SHORT_FIELDS = ("sender", "source", "title", "from_agent", "message_type", "priority", "impact")


def executions_bulk_cancel(
    *,
    tenant: Tenant,
    ids: list[str] | None = None,
    filter: dict[str, Any] | None = None,
    reason: str = "",
    actor: str = "",
) -> dict[str, int]:
    """Cancel many executions of one tenant, by ids or by a filter; returns counts."""
    if (ids is None) == (filter is None):
        raise InvalidInput("give either ids or filter")
    counts = {"cancelled": 0, "cancel_requested": 0, "already_terminal": 0, "not_found": 0}
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 1000:
            raise InvalidInput("ids must be a list of up to 1000 execution ids")
        targets = ids
    else:
        targets = _ids_matching(tenant, filter)
    from enact_platform.errors import NotFound

    for execution_id in dict.fromkeys(targets):
        try:
            before = execution_get(tenant=tenant, execution_id=execution_id)
        except NotFound:
            counts["not_found"] += 1
            continue
        if before.is_terminal:
            counts["already_terminal"] += 1
            continue
        after = execution_cancel(tenant=tenant, execution_id=execution_id, reason=reason, actor=actor)
        counts["cancelled" if after.state == S.CANCELLED else "cancel_requested"] += 1
    return counts


def _ids_matching(tenant: Tenant, filter: dict[str, Any] | None) -> list[str]:
    if not isinstance(filter, dict) or not filter or set(filter) - {"state", "graph", "blueprint"}:
        raise InvalidInput("filter takes state and/or blueprint")
    rows = Execution.objects.filter(tenant=tenant).exclude(state__in=Execution.TERMINAL)
    if "state" in filter:
        if filter["state"] not in S.values:
            raise InvalidInput(f"unknown state {filter['state']!r}")
        rows = rows.filter(state=filter["state"])
    graph = filter.get("blueprint", filter.get("graph"))
    if graph is not None:
        rows = rows.filter(graph=graph)
    return list(rows.values_list("pk", flat=True)[:1000])


def _text(value: Any, name: str, maximum: int = 500) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    if len(value) > maximum:
        raise InvalidInput(f"{name} must be at most {maximum} characters")
    return value.strip()


# --- workers: claim, release, dispatch, reap --------------------------------------------------


def _leased(execution: Execution) -> bool:
    return (
        bool(execution.lease_owner)
        and execution.lease_expires_at is not None
        and execution.lease_expires_at > timezone.now()
    )


def _lease_until() -> Any:
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
        if Tenant.objects.select_for_update(no_key=True).filter(pk=Subquery(owner)).values("pk").first() is None:
            return None
        execution = (
            Execution.objects.select_for_update(no_key=True, of=("self",))
            .select_related("tenant", "tenant__limits")
            .get(pk=execution_id)
        )
        if execution.is_terminal or _leased(execution) or not _runnable(execution):
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
        lease = {"lease_owner": worker, "lease_expires_at": _lease_until(), "resume_requested": False}
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
    Execution.objects.filter(pk__in=execution_ids, lease_owner=worker).update(lease_expires_at=_lease_until())
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
    waited_for = _child_waited_for(execution) if released else None
    if waited_for:  # the child may have ended before this parent began to wait for it
        execution_child_ended(child_id=waited_for)
    if released and execution.state in (S.PAUSED, S.WAITING):
        Execution.objects.filter(pk=execution_id).update(claims=0)
        if execution.cancel_requested_at:
            execution_cancel(tenant=execution.tenant, execution_id=execution_id, reason=execution.cancel_reason)
        elif execution.resume_requested:
            from executions.tasks import enqueue_run

            enqueue_run(execution_id)
    executions_dispatch_queued(tenant_id=execution.tenant_id)


def _release_slot_after_commit(tenant_id: int) -> None:
    transaction.on_commit(lambda: executions_dispatch_queued(tenant_id=tenant_id))


def executions_dispatch_queued(*, tenant_id: int) -> list[str]:
    """Enqueue the tenant's oldest queued executions, as many as it has free slots."""
    limit = TenantLimits.objects.filter(tenant_id=tenant_id).values_list("max_concurrent_executions", flat=True).first()
    if limit is None:
        return []
    free = limit - Execution.objects.filter(tenant_id=tenant_id).active().count()
    if free <= 0:
        return []
    # Not those whose task is still on its way: enqueueing them again only grows the queue. A
    # task that was lost (a broker restarted) shows as an old enqueued_at, and goes again.
    in_flight = Q(enqueued_at__gte=timezone.now() - timedelta(seconds=QUEUE_STALE_SECONDS))
    ids = list(
        Execution.objects.filter(tenant_id=tenant_id, state=S.QUEUED, lease_owner="")
        .exclude(in_flight)
        .order_by("created_at", "id")
        .values_list("pk", flat=True)[:free]
    )
    from executions.tasks import enqueue_run

    for execution_id in ids:
        enqueue_run(execution_id)
    return ids


def worker_seen(*, worker: str, running: int) -> None:
    """Record that a worker process is alive (and how much it runs); old records are swept."""
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(worker=worker, defaults={"last_seen": now, "running": running})
    WorkerHeartbeat.objects.filter(last_seen__lt=now - timedelta(days=1)).delete()


def executions_reap(*, stale_queue_seconds: float | None = None) -> dict[str, int]:
    """Hand on work whose worker died: clear expired leases (whatever the state: a worker can
    die between pausing an execution and letting it go), then enqueue what can run."""
    now = timezone.now()
    expired = list(
        Execution.objects.exclude(lease_owner="").filter(lease_expires_at__lt=now).values_list("pk", flat=True)[:500]
    )
    for execution_id in expired:
        # Clear the dead lease only if nobody re-claimed it meanwhile.
        Execution.objects.filter(pk=execution_id, lease_expires_at__lt=now).update(
            lease_owner="", lease_expires_at=None
        )
    # A child whose worker died after it ended, before it let go, still owes its parent an answer.
    for child_id in (
        Execution.objects.filter(pk__in=expired, state__in=Execution.TERMINAL)
        .exclude(parent=None)
        .values_list("pk", flat=True)
    ):
        execution_child_ended(child_id=child_id)
    # Running with no lease at all: its worker was fenced off or died between run and release.
    unowned = Execution.objects.filter(state=S.RUNNING, lease_owner="")
    orphaned = set(
        Execution.objects.filter(pk__in=expired)
        .filter(Q(state__in=(S.RUNNING, S.QUEUED)) | Q(resume_requested=True, state__in=(S.PAUSED, S.WAITING)))
        .values_list("pk", flat=True)
    ) | set(unowned.values_list("pk", flat=True)[:500])
    from executions.tasks import enqueue_run

    for execution_id in sorted(orphaned):
        enqueue_run(execution_id)
    resumable = list(
        Execution.objects.filter(lease_owner="", resume_requested=True, state__in=(S.PAUSED, S.WAITING))
        .exclude(pk__in=orphaned)
        .values_list("pk", flat=True)[:500]
    )
    for execution_id in resumable:
        enqueue_run(execution_id)
    stale = Execution.objects.filter(lease_owner="", state=S.QUEUED).filter(
        Q(enqueued_at__isnull=True)
        | Q(enqueued_at__lt=now - timedelta(seconds=stale_queue_seconds or QUEUE_STALE_SECONDS))
    )
    tenants = set(stale.values_list("tenant_id", flat=True).distinct())
    requeued = sum(len(executions_dispatch_queued(tenant_id=t)) for t in tenants)
    return {"orphaned": len(orphaned), "expired_leases": len(expired), "requeued": requeued, "resumed": len(resumable)}
