"""Reads for executions, always scoped to a tenant."""

from __future__ import annotations

from django.db.models import QuerySet

from enact_platform.errors import NotFound
from executions.kernel.ids import IdKind, is_valid_id
from executions.models import Execution, ExecutionEvent, Step
from tenants.models import Tenant


def execution_get(*, tenant: Tenant, execution_id: object) -> Execution:
    """The tenant's execution, or :class:`NotFound`: for a malformed id, an unknown one, and
    another tenant's alike, so nothing tells them apart."""
    if not is_valid_id(execution_id, IdKind.EXECUTION):
        raise NotFound("execution not found")
    execution = Execution.objects.for_tenant(tenant).filter(pk=execution_id).first()
    if execution is None:
        raise NotFound("execution not found")
    return execution


def execution_list(*, tenant: Tenant, state: str | None = None, graph: str | None = None) -> QuerySet[Execution]:
    rows = Execution.objects.for_tenant(tenant)
    if state:
        rows = rows.filter(state=state)
    if graph:
        rows = rows.filter(graph=graph)
    return rows.order_by("-created_at", "-id")


def execution_steps(*, tenant: Tenant, execution_id: str) -> QuerySet[Step]:
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    return Step.objects.filter(execution=execution).order_by("position")


def execution_events(*, tenant: Tenant, execution_id: str, after: int = 0, limit: int = 1000) -> list[ExecutionEvent]:
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    return list(ExecutionEvent.objects.filter(execution=execution, seq__gt=after).order_by("seq")[:limit])
