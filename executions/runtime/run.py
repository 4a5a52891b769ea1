"""Running one execution in a worker: claim it, build its graph and a kernel with Django stores,
run or resume it until it ends or lets go, release it. ``execution_run`` is the unit of work."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from executions.catalog import blueprint_lookup, run_resources
from executions.kernel import (
    MISSING,
    CancellationToken,
    Checkpoint,
    CompiledGraph,
    ExecutionError,
    ExecutionKernel,
    ExecutionState,
    StepState,
)
from executions.kernel import ids as kernel_ids
from executions.kernel.persistence import Lane, Position
from executions.models import Execution
from executions.ops.logs import log_context
from executions.persistence.connections import give_back
from executions.persistence.events import LeaseLost, StorageFull
from executions.persistence.kernels import kernel_close, kernel_for
from executions.persistence.stores import DjangoCheckpointStore, last_seq
from executions.runtime.leases import execution_claim, execution_release, worker_id
from executions.runtime.monitor import Running, monitor
from executions.services.children import execution_spawn_child

logger = logging.getLogger(__name__)

# An execution that keeps crashing its worker is failed after this many claims, not retried forever.
MAX_CLAIMS = 5


def execution_run(execution_id: str) -> str:
    """Claim the execution, run it until it ends or lets go, release it. Returns what happened."""
    execution = execution_claim(execution_id=execution_id, worker=worker_id())
    if execution is None:
        return "not claimed"
    return execution_run_claimed(execution)


def execution_run_claimed(execution: Execution) -> str:
    """Run an execution this worker has claimed until it ends or lets go, then release it."""
    worker = execution.lease_owner
    token = CancellationToken()
    entry = monitor.register(execution.pk, token, execution.tenant_id)
    context = log_context(tenant_id=execution.tenant_id, execution_id=execution.pk)
    context.__enter__()
    try:
        if execution.claims > MAX_CLAIMS:
            return _give_up(execution, f"the execution stopped its worker {MAX_CLAIMS} times")
        if execution.cancel_requested_at:
            token.cancel(execution.cancel_reason or "cancelled")
        return _run(execution, token, entry)
    except LeaseLost:
        return "lease lost"
    except StorageFull as full:
        return _fail_for_storage(execution, full.error)
    finally:
        monitor.unregister(execution.pk)
        execution_release(execution_id=execution.pk, worker=worker, hand_back_message=entry.hand_back_message)
        context.__exit__(None, None, None)


def _run(execution: Execution, token: CancellationToken, entry: Running) -> str:
    try:
        runnable = runnable_for(execution)
    except Exception as exc:  # e.g. a graph no longer registered: fail clearly, do not retry
        return _give_up(execution, f"cannot build blueprint {execution.blueprint!r}: {exc}")
    kernel = kernel_for(
        execution,
        token,
        entry.inbox_pending,
        fence=entry.fence,
        limits=execution.tenant.limits,
        background_commits=True,
    )
    try:
        outcome = _drive(kernel, execution, runnable)
    except BaseException:
        try:
            kernel_close(kernel)
        except Exception:  # the error being raised says more than what closing found after it
            logger.exception("closing the run of %s after its failure", execution.pk)
        raise
    kernel_close(kernel)
    return outcome


def _drive(kernel: ExecutionKernel, execution: Execution, runnable: Runnable) -> str:
    # A run's start commits with its first step, and the first checkpoint with it: an execution
    # still queued has none, and needs no look, unless it is a fork, which starts from the
    # checkpoint stored with it (services.derive).
    fresh = execution.state in (Execution.State.QUEUED, Execution.State.CREATED)
    look = not fresh or execution.origin == Execution.Origin.FORK
    checkpoint = DjangoCheckpointStore().load_checkpoint(execution.pk) if look else None
    if not fresh and checkpoint is None:  # the worker died before the first step finished
        checkpoint = _entry_checkpoint(execution, runnable)
    give_back()  # this thread waits for the run now; the run's own threads borrow their own
    if checkpoint is None:
        result = kernel.execute_graph(runnable.graph, runnable.initial_state)
    else:
        answer = execution.resume_input["value"] if execution.resume_input else MISSING
        result = kernel.resume_graph(runnable.graph, checkpoint, input=answer)
    return result.state.value


def _entry_checkpoint(execution: Execution, runnable: Runnable) -> Checkpoint:
    return Checkpoint(
        id=kernel_ids.new_checkpoint_id(),
        execution_id=execution.pk,
        graph=runnable.graph.name,
        seq=last_seq(execution.pk),
        position=Position((Lane("main", runnable.graph.entry_point, runnable.initial_state),)),
        usage={},
        created_at=datetime.now(UTC),
    )


def _give_up(execution: Execution, message: str) -> str:
    kernel = kernel_for(execution)
    if not kernel.state.is_terminal:
        kernel.fail(ExecutionError.kernel_internal(message, code="unrunnable"))
    return ExecutionState.FAILED.value


def _fail_for_storage(execution: Execution, error: ExecutionError) -> str:
    """What the run would store next does not fit the tenant's storage quota (none of it was
    stored): its running steps, then the run, fail with the quota error."""
    kernel = kernel_for(Execution.objects.get(pk=execution.pk))
    if not kernel.state.is_terminal:
        for step in list(kernel.execution.steps.values()):
            if step.state is StepState.RUNNING:
                kernel.fail_step(step.id, error)
        kernel.fail(error)
    return ExecutionState.FAILED.value


@dataclass(frozen=True)
class Runnable:
    """An execution's graph, built for a run, and the state its entry node starts from."""

    graph: CompiledGraph
    initial_state: Any


def runnable_for(execution: Execution) -> Runnable:
    """Build the graph an execution runs, at the version it recorded, with what its nodes need
    (a blueprint's secrets, prices, tool policy) resolved now, before the kernel runs."""
    entry = blueprint_lookup(tenant=execution.tenant, name=execution.blueprint, version=execution.blueprint_version)
    resources = None
    if entry.definition is not None:
        resources = run_resources(
            tenant_id=execution.tenant_id, definition=entry.definition, spawn_child=_child_spawner(execution.pk)
        )
    return Runnable(entry.build(execution.input, resources), entry.initial_state(execution.input))


def _child_spawner(parent_id: str) -> Any:
    """What a blueprint node calls to start a child of this execution; returns the child's id."""

    def spawn(name: str, version: int | None, input: Any, inherit_inbox: bool, node: str) -> str:
        parent = Execution.objects.select_related("tenant").get(pk=parent_id)
        child = execution_spawn_child(
            parent=parent, blueprint=name, version=version, input=input, inherit_inbox=inherit_inbox, node=node
        )
        return child.pk

    return spawn
