"""Executions that come from another one: a rerun and a fork.

A **rerun** is a new execution of the source's blueprint, at the version the source ran, with the
source's input: ``origin=rerun``, ``source`` the execution it came from.

A **fork** (LangGraph's time travel, Temporal's reset) is a new execution (``origin=fork``) that
starts from the checkpoint taken before one of the source's steps began: the state that step was
given (or a replacement), so that step runs again, and what follows it; the steps before it are
not run again. The fork has its own events (from seq 1), steps, usage and limits; the source is not
touched.

Both are submitted like any execution (:func:`execution_submit`): the tenant's quotas and
limits, the input checked against the blueprint's schema, an idempotency key.

Where a fork starts: every checkpoint an execution takes is kept (``PastCheckpoint``, written
with the checkpoint itself). The one a fork starts from is the last taken before the step's
``step_start`` event; before the first step of a run there is none, and the run's entry (the
blueprint's entry node, with the state built from the input) is where that step started. A fork
stores its starting checkpoint (at seq 0) before it is queued; the worker resumes from it
(``runtime.run``), and keeps it among the fork's past checkpoints, so a fork can be forked.

A step that ran inside a parallel branch, a map or a subgraph (it has a parent step) cannot be
forked from: the other branches' positions at that moment are not one state to start from. Fork
from the step that started them, or from the join after them.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from enact_platform.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from executions.catalog import CatalogEntry, blueprint_lookup
from executions.kernel import Checkpoint as KernelCheckpoint
from executions.kernel import ids as kernel_ids
from executions.kernel.events import EventType
from executions.kernel.persistence import Lane, Position
from executions.models import Checkpoint, Execution, ExecutionEvent, PastCheckpoint, Step
from executions.selectors import execution_get
from executions.services.submit import execution_submit
from tenants.models import ApiKey, Tenant, TenantLimits

# A fork's source must not be running: its log and checkpoints are still being written.
FORKABLE_STATES = (*Execution.TERMINAL, Execution.State.PAUSED, Execution.State.WAITING)

# Given for ``state`` when the fork keeps the state the step was given.
KEEP = object()


def execution_rerun(
    *,
    tenant: Tenant,
    execution_id: str,
    idempotency_key: str | None = None,
    metadata: dict[str, Any] | None = None,
    user: User | None = None,
    api_key: ApiKey | None = None,
) -> tuple[Execution, bool]:
    """Submit the source's blueprint at its version with its input again. Returns the new
    execution and whether it is new (a repeated idempotency key returns the first one)."""
    source = execution_get(tenant=tenant, execution_id=execution_id)
    _lookup(source)  # a version that is gone is the request's fault, not an unknown URL
    return execution_submit(
        tenant=tenant,
        blueprint=source.blueprint,
        version=source.blueprint_version,
        input=source.input,
        idempotency_key=idempotency_key,
        metadata=metadata,
        user=user,
        api_key=api_key,
        derived_from=(source, Execution.Origin.RERUN),
    )


def execution_fork(
    *,
    tenant: Tenant,
    execution_id: str,
    from_step: Any,
    state: Any = KEEP,
    idempotency_key: str | None = None,
    metadata: dict[str, Any] | None = None,
    user: User | None = None,
    api_key: ApiKey | None = None,
) -> tuple[Execution, bool]:
    """Start a new execution from the checkpoint before step ``from_step`` of the source (that
    step runs again), with ``state`` in place of the state the step was given if one is given.
    Returns it and whether it is new (a repeated idempotency key returns the first one)."""
    source = execution_get(tenant=tenant, execution_id=execution_id)
    if source.state not in FORKABLE_STATES:
        raise Conflict(
            f"execution {source.pk} is {source.state}: fork it once it has ended, paused or waits",
            details={"state": source.state},
        )
    step = _step(source, from_step)
    entry = _lookup(source)
    if state is not KEEP:
        _check_state(tenant, state)
    graph = entry.build(source.input)
    lane = lane_before(source, step, entry, graph)
    if state is not KEEP:
        lane = Lane(lane.key, lane.node, state)
    with transaction.atomic():
        execution, created = execution_submit(
            tenant=tenant,
            blueprint=source.blueprint,
            version=source.blueprint_version,
            input=source.input,
            idempotency_key=idempotency_key,
            metadata=metadata,
            user=user,
            api_key=api_key,
            derived_from=(source, Execution.Origin.FORK),
        )
        if not created:
            return execution, False
        checkpoint = KernelCheckpoint(
            id=kernel_ids.new_checkpoint_id(),
            execution_id=execution.pk,
            graph=graph.name,
            seq=0,
            position=Position((lane,)),
            usage={},
            created_at=datetime.now(UTC),
        )
        fields = {"checkpoint_id": checkpoint.id, "seq": 0, "data": checkpoint.to_dict()}
        Checkpoint.objects.create(execution=execution, **fields)
        PastCheckpoint.objects.create(execution=execution, created_at=checkpoint.created_at, **fields)
    return execution, True


def _lookup(source: Execution) -> CatalogEntry:
    try:
        return blueprint_lookup(tenant=source.tenant, name=source.blueprint, version=source.blueprint_version)
    except NotFound as gone:
        raise InvalidInput(
            f"{source.blueprint} version {source.blueprint_version}, which {source.pk} ran, no longer exists",
            details={"blueprint": source.blueprint, "version": source.blueprint_version},
        ) from gone


def _step(source: Execution, from_step: Any) -> Step:
    """The step to fork from; a refusal's details name it (``step``) and the field."""
    if not isinstance(from_step, str) or not from_step:
        raise InvalidInput("from_step must be the id of a step of the execution", details={"field": "from_step"})
    # A step of another execution, the tenant's or not, is refused alike: nothing tells them apart.
    step = Step.objects.filter(execution=source, pk=from_step).first()
    if step is None:
        raise InvalidInput(f"{source.pk} has no step {from_step}", details={"field": "from_step", "step": from_step})
    if step.parent_step_id:
        raise InvalidInput(
            f"step {step.pk} ({step.name}) ran inside a parallel branch, a map or a subgraph: fork from the "
            f"step that started it ({step.parent_step_id}) or from the step after them",
            details={"field": "from_step", "step": step.pk, "parent_step_id": step.parent_step_id},
        )
    return step


def _check_state(tenant: Tenant, state: Any) -> None:
    try:
        encoded = json.dumps(state, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"state must be JSON: {exc}", details={"field": "state"}) from exc
    size, maximum = len(encoded.encode()), TenantLimits.objects.get(tenant=tenant).max_input_bytes
    if size > maximum:
        raise PayloadTooLarge(
            f"state is {size} bytes; this tenant allows {maximum}", details={"size": size, "maximum": maximum}
        )


def lane_before(source: Execution, step: Step, entry: CatalogEntry, graph: Any) -> Lane:
    """Where ``step`` started: its node, and the state it was given."""
    started = (
        ExecutionEvent.objects.filter(execution=source, step_id=step.pk, type=EventType.STEP_START.value)
        .order_by("seq")  # through the (execution, step_id, seq) index, not the execution's ordering
        .values_list("seq", flat=True)
        .first()
    )
    past = None
    if started is not None:
        past = PastCheckpoint.objects.filter(execution=source, seq__lt=started).order_by("-seq", "-pk_id").first()
    if past is None:
        if Step.objects.filter(execution=source, position__lt=step.position).exists() or started is None:
            raise InvalidInput(
                f"no checkpoint of {source.pk} was kept from before step {step.pk}",
                details={"field": "from_step", "step": step.pk},
            )
        # The first step of the run started at the entry, from the input.
        if graph.entry_point != step.name:
            raise InvalidInput(
                f"step {step.pk} is not where {source.pk} started", details={"field": "from_step", "step": step.pk}
            )
        return Lane("main", step.name, entry.initial_state(source.input))
    position = Position.from_dict(past.data["position"])
    if position.fanout_origin is not None:
        fanout = graph.fanouts.get(position.fanout_origin)
        if position.done and fanout is not None and fanout.join == step.name:
            # The branches had ended and were joined: the join was given what each branch left.
            return Lane("main", step.name, {lane.key: lane.state for lane in position.lanes})
        raise InvalidInput(
            f"step {step.pk} ({step.name}) started while parallel branches ran",
            details={"field": "from_step", "step": step.pk},
        )
    (lane,) = position.lanes
    if lane.node != step.name:
        raise InvalidInput(
            f"the checkpoint before step {step.pk} leads to {lane.node!r}, not {step.name!r}",
            details={"field": "from_step", "step": step.pk},
        )
    return Lane(lane.key, lane.node, lane.state)
