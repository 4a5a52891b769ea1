"""Where the platform meets the kernel: an execution's rows in, a kernel with every Django store
plugged in out."""

from __future__ import annotations

import threading

from django.db import connection

from executions.kernel import (
    CancellationToken,
    ExecutionError,
    ExecutionKernel,
    ExecutionState,
    LongRunningPolicy,
    ResourceLimits,
    SpawnMode,
    StepState,
    StepType,
    TenantContext,
    WaitReason,
)
from executions.kernel import (
    Execution as KernelExecution,
)
from executions.kernel import (
    Step as KernelStep,
)
from executions.live import publisher
from executions.models import Execution, Step
from executions.ops import tracing
from executions.persistence.connections import give_back
from executions.persistence.events import DjangoEventSink
from executions.persistence.group_commit import GroupCommitter
from executions.persistence.sql import write_staged_unit
from executions.persistence.stores import (
    DjangoArtifactStore,
    DjangoCheckpointStore,
    DjangoInboxStore,
    DjangoUnitOfWork,
    last_seq,
)
from tenants.models import TenantLimits


def _float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def tenant_context(limits: TenantLimits, user_id: str | None = None) -> TenantContext:
    """The kernel's view of a tenant: its id and its per-execution limits."""
    return TenantContext(
        tenant_id=str(limits.tenant_id),
        user_id=user_id,
        limits=ResourceLimits(
            max_steps=limits.max_steps,
            max_tokens=limits.max_tokens,
            max_wall_time_s=limits.max_wall_time_s,
            max_cost_usd=_float(limits.max_cost_usd),
            warning_threshold=limits.warning_threshold,
        ),
        long_running=LongRunningPolicy(
            max_discovered_steps=limits.max_discovered_steps,
            max_discovery_depth=limits.max_discovery_depth,
            idle_timeout_s=limits.idle_timeout_s,
            max_step_repetitions=limits.max_step_repetitions,
            cost_alert_threshold_usd=_float(limits.cost_alert_threshold_usd),
        ),
        pii_masking=limits.pii_masking,
        max_concurrent_branches=limits.max_concurrent_branches,
    )


def _never_started(execution: Execution) -> bool:
    """Queued and never started: no steps and no events yet (a run's start event commits with
    its first step), so there is nothing to read back."""
    return execution.state in (Execution.State.QUEUED, Execution.State.CREATED)


def kernel_execution(execution: Execution) -> KernelExecution:
    """Rebuild the kernel's execution from its rows (projections of the event log)."""
    steps = {}
    order = []
    rows = [] if _never_started(execution) else Step.objects.filter(execution=execution).order_by("position")
    for row in rows:
        steps[row.pk] = KernelStep(
            id=row.pk,
            name=row.name,
            step_type=StepType(row.step_type),
            state=StepState(row.state),
            parent_step_id=row.parent_step_id or None,
            attempt=row.attempt,
            output=row.output,
            error=ExecutionError.from_dict(row.error) if row.error else None,
            duration_ms=row.duration_ms,
            started_at=row.started_at,
            ended_at=row.ended_at,
        )
        order.append(row.pk)
    return KernelExecution(
        id=execution.pk,
        tenant_id=str(execution.tenant_id),
        state=ExecutionState(execution.state),
        wait_reason=WaitReason(execution.wait_reason) if execution.wait_reason else None,
        steps=steps,
        step_order=order,
        output=execution.output,
        error=ExecutionError.from_dict(execution.error) if execution.error else None,
        parent_id=execution.parent_id,
        created_at=execution.created_at,
        started_at=execution.started_at,
        ended_at=execution.ended_at,
    )


def kernel_for(
    execution: Execution,
    token: CancellationToken | None = None,
    inbox_pending: threading.Event | None = None,
    *,
    fence: threading.Event | None = None,
    limits: TenantLimits | None = None,
    background_commits: bool = False,
) -> ExecutionKernel:
    """A kernel for this execution with every Django store plugged in. ``fence``, once set (the
    worker lost its lease), stops every store from writing. ``limits``: the tenant's, if the
    caller has them already. ``background_commits``: follow the tenant's ``durability`` (a run
    of a worker); the caller must then :func:`kernel_close` the kernel when the run is over."""
    limits = limits or TenantLimits.objects.get(tenant_id=execution.tenant_id)
    user_id = str(execution.created_by_id) if execution.created_by_id else None
    rebuilt = kernel_execution(execution)
    fence = fence or threading.Event()
    sink = DjangoEventSink(execution, fence, steps_so_far=len(rebuilt.step_order))
    kernel = (
        ExecutionKernel.with_execution(
            rebuilt,
            tenant_context(limits, user_id),
            last_seq=0 if _never_started(execution) else last_seq(execution.pk),
        )
        .with_event_sink(tracing.traced(sink, execution))  # the sink itself when tracing is off
        .with_checkpoint_store(DjangoCheckpointStore(sink))
        .with_inbox(DjangoInboxStore(execution.tenant_id, inbox_pending))
        .with_artifact_store(DjangoArtifactStore(execution.tenant_id, limits, sink.fence, sink))
        .with_unit_of_work(DjangoUnitOfWork(sink))
    )
    kernel.with_before_wait(give_back)  # the run goes on on runner threads; the caller only waits
    if token is not None:
        kernel.with_cancellation_token(token)
    if execution.parent_id and (execution.metadata or {}).get("inherit_inbox"):
        kernel.with_spawn_mode(SpawnMode.child(inherit_inbox=True))  # its parent's inbox is read too
    if background_commits and limits.durability == TenantLimits.Durability.ASYNC and connection.vendor == "postgresql":
        # Made last, so nothing above can fail and leave its thread running.
        sink.committer = _committer(execution.tenant_id, fence, token)
    return kernel


def _committer(tenant_id: int, fence: threading.Event, token: CancellationToken | None) -> GroupCommitter:
    def failed(error: BaseException) -> None:
        # Stop the run now, not at its next write: the node that runs meanwhile may act on the world.
        fence.set()
        if token is not None:
            token.cancel("a background commit failed; this worker stops")

    return GroupCommitter(
        write_staged_unit,
        lambda wires: publisher.publish_events(tenant_id, wires),
        fence=fence,
        on_failure=failed,
    )


def kernel_close(kernel: ExecutionKernel) -> None:
    """Store what the run still has in flight (asynchronous durability) and stop its committer."""
    sink = kernel.sink
    if isinstance(sink, tracing.TracingSink):
        sink.close()
        sink = sink.inner
    if isinstance(sink, DjangoEventSink):
        sink.close()
