"""Reads for executions, always scoped to a tenant."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, OuterRef, Q, QuerySet, Subquery, TextField
from django.db.models.functions import Cast, Coalesce, TruncHour
from django.utils import timezone

from enact_platform.errors import NotFound
from executions.blueprints.definition import Resources, compile_definition
from executions.catalog import blueprint_lookup
from executions.kernel.events import EventType
from executions.kernel.ids import IdKind, is_valid_id
from executions.kernel.persistence import Position
from executions.models import (
    Artifact,
    Blueprint,
    BlueprintVersion,
    Checkpoint,
    Execution,
    ExecutionEvent,
    PastCheckpoint,
    Step,
)
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


def execution_get_detailed(*, tenant: Tenant, execution_id: object) -> Execution:
    """:func:`execution_get`, with ``last_seq`` (the seq of its latest event) set."""
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    execution.last_seq = last_event_seq(execution_id=execution.pk)  # type: ignore[attr-defined]
    return execution


def last_event_seq(*, execution_id: str) -> int:
    found = ExecutionEvent.objects.filter(execution_id=execution_id).aggregate(n=Max("seq"))["n"]
    return int(found or 0)


def waiting_event_seq(*, execution_id: str) -> int:
    """The seq of the event that put the execution in its current wait: the question's identity."""
    latest = (
        ExecutionEvent.objects.filter(execution_id=execution_id, type=EventType.EXECUTION_WAITING.value)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return int(latest or 0)


def tenant_activity(*, tenant: Tenant) -> dict[str, int]:
    """How many of the tenant's executions hold a slot now, and how many wait for one."""
    return {
        "running_executions": Execution.objects.filter(tenant=tenant).active().count(),
        "queued_executions": Execution.objects.filter(tenant=tenant, state=Execution.State.QUEUED).count(),
    }


def execution_list(
    *,
    tenant: Tenant,
    state: str | None = None,
    blueprint: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    q: str | None = None,
    origin: str | None = None,
    source: str | None = None,
) -> QuerySet[Execution]:
    """The tenant's executions, newest first, each with ``last_seq``. ``q`` matches an id
    (or its start), a blueprint name, or an idempotency key; ``source``, the execution a rerun
    or fork came from."""
    rows = _narrowed(Execution.objects.for_tenant(tenant), state=state, blueprint=blueprint, before=created_before)
    if created_after:  # the API's bound: after it, as a cursor reads
        rows = rows.filter(created_at__gt=created_after)
    if q:
        rows = rows.filter(Q(id__startswith=q) | Q(blueprint__icontains=q) | Q(idempotency_key=q))
    if origin:
        rows = rows.filter(origin=origin)
    if source:
        rows = rows.filter(source_id=source)
    # The (execution, seq) unique index answers this with one backward index step per row.
    latest = ExecutionEvent.objects.filter(execution_id=OuterRef("pk")).order_by("-seq").values("seq")[:1]
    return rows.annotate(last_seq=Subquery(latest)).order_by("-created_at", "-id")


def execution_browse(
    *,
    tenants: QuerySet[Tenant] | list[Tenant],
    state: str | None = None,
    blueprint: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    q: str | None = None,
    parent_id: str | None = None,
    top_level: bool = False,
    ids: list[str] | None = None,
) -> QuerySet[Execution]:
    """The dashboard's list: executions of ``tenants`` (named each time, so a page shows no
    tenant it did not choose), newest first, each with ``child_count`` (its direct children)
    and its tenant. ``q`` matches an id (or its start), a blueprint name, an idempotency key, or
    text inside the input or metadata; ``top_level`` leaves children out (they are shown under
    their parent), ``parent_id`` keeps only that execution's children."""
    rows = _narrowed(
        Execution.objects.filter(tenant__in=tenants), state=state, blueprint=blueprint, before=created_before
    )
    if created_after:  # the page's "from": a day's list starts at its first moment
        rows = rows.filter(created_at__gte=created_after)
    if q:
        rows = rows.annotate(input_text=Cast("input", TextField()), metadata_text=Cast("metadata", TextField()))
        rows = rows.filter(_text_search(q))
    if parent_id:
        rows = rows.filter(parent_id=parent_id)
    elif top_level:
        rows = rows.filter(parent__isnull=True)
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    children = Execution.objects.filter(parent_id=OuterRef("pk")).order_by().values("parent_id").annotate(n=Count("pk"))
    return (
        rows.select_related("tenant")
        .annotate(child_count=Coalesce(Subquery(children.values("n")[:1]), 0))
        .order_by("-created_at", "-id")
    )


def _narrowed(
    rows: QuerySet[Execution], *, state: str | None, blueprint: str | None, before: datetime | None
) -> QuerySet[Execution]:
    """The filters the API's list and the dashboard's share."""
    if state:
        rows = rows.filter(state=state)
    if blueprint:
        rows = rows.filter(blueprint=blueprint)
    if before:
        rows = rows.filter(created_at__lt=before)
    return rows


def _text_search(q: str) -> Q:
    """Containment in the JSON's text. SQLite stores non-ASCII text as \\u escapes, PostgreSQL
    prints it as it is: both spellings are looked for."""
    match = Q(id__startswith=q) | Q(blueprint__icontains=q) | Q(idempotency_key=q)
    for spelling in dict.fromkeys([q, json.dumps(q)[1:-1]]):
        match |= Q(input_text__icontains=spelling) | Q(metadata_text__icontains=spelling)
    return match


def execution_steps(*, tenant: Tenant, execution_id: str) -> QuerySet[Step]:
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    return Step.objects.filter(execution=execution).order_by("position")


def execution_step(*, tenant: Tenant, execution_id: object, step_id: object) -> tuple[Execution, Step]:
    """The tenant's execution and one of its steps, or :class:`NotFound` (malformed, unknown and
    foreign ids alike; its message says which of the two was not found)."""
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    step = Step.objects.filter(execution=execution, pk=step_id).first() if is_valid_id(step_id, IdKind.STEP) else None
    if step is None:
        raise NotFound("step not found")
    return execution, step


def step_events(*, execution: Execution, step: Step, types: list[str]) -> list[dict[str, Any]]:
    """The step's stored events of these ``types`` (seq, type, data), in order, of an execution
    the caller already holds."""
    rows = ExecutionEvent.objects.filter(execution=execution, step_id=step.pk, type__in=types).order_by("seq")
    return list(rows.values("seq", "type", "data"))


def checkpoint_after(*, execution: Execution, seq: int) -> Position | None:
    """Where the run stood at its first kept checkpoint at or after event ``seq``, if one was kept."""
    past = PastCheckpoint.objects.filter(execution=execution, seq__gte=seq).order_by("seq", "pk_id").first()
    return Position.from_dict(past.data["position"]) if past is not None else None


def execution_next_nodes(*, execution: Execution) -> list[str]:
    """The nodes an unfinished execution goes on from (its latest checkpoint's lanes)."""
    if execution.is_terminal:
        return []
    checkpoint = Checkpoint.objects.filter(execution=execution).only("data").first()
    if checkpoint is None:
        return []
    try:
        return [lane.node for lane in Position.from_dict(checkpoint.data["position"]).lanes if lane.node]
    except (KeyError, TypeError, ValueError):
        return []


def execution_events(*, tenant: Tenant, execution_id: str, after: int = 0, limit: int = 1000) -> list[ExecutionEvent]:
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    return events_after(execution_id=execution.pk, after=after, limit=limit)


def events_from(*, execution_id: str, after: int = 0) -> QuerySet[ExecutionEvent]:
    """Stored events of an execution the caller already holds, seq > ``after``, ascending, to page."""
    return ExecutionEvent.objects.filter(execution_id=execution_id, seq__gt=after).order_by("seq")


def events_after(*, execution_id: str, after: int, limit: int = 1000) -> list[ExecutionEvent]:
    """Stored events of an execution the caller already holds, seq > ``after``, ascending."""
    return list(ExecutionEvent.objects.filter(execution_id=execution_id, seq__gt=after).order_by("seq")[:limit])


def execution_artifacts(*, tenant: Tenant, execution_id: str) -> QuerySet[Artifact]:
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    return Artifact.objects.filter(execution=execution).defer("content").order_by("created_at", "id")


def artifact_get(*, tenant: Tenant, artifact_id: object) -> Artifact:
    """The tenant's artifact, or :class:`NotFound` (malformed, unknown and foreign ids alike)."""
    if not is_valid_id(artifact_id, IdKind.ARTIFACT):
        raise NotFound("artifact not found")
    artifact = Artifact.objects.filter(tenant=tenant, pk=artifact_id).defer("content").first()
    if artifact is None:
        raise NotFound("artifact not found")
    return artifact


def artifact_chunks(*, artifact: Artifact, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
    """An artifact's content, from its row or from storage."""
    if artifact.file:
        with artifact.file.open("rb") as handle:
            while chunk := handle.read(chunk_size):
                yield chunk
        return
    content = Artifact.objects.filter(pk=artifact.pk).values_list("content", flat=True).first()
    yield bytes(content or b"")


def execution_graph_outline(*, execution: Execution) -> dict[str, Any]:
    """The graph an execution runs, as a picture needs it: nodes and edges, entry first."""
    try:
        entry = blueprint_lookup(tenant=execution.tenant, name=execution.blueprint, version=execution.blueprint_version)
        graph = entry.build(execution.input)
    except Exception:  # an input the graph no longer accepts: draw nothing rather than fail the page
        return {"entry": None, "nodes": [], "edges": []}
    edges = [{"from": src, "to": dst, "label": ""} for src, targets in graph.static.items() for dst in targets]
    for src, conditional in graph.conditional.items():
        edges += [{"from": src, "to": dst, "label": key} for key, dst in conditional.destinations.items()]
    nodes = [{"name": node.name, "type": node.step_type.value} for node in graph.nodes.values()]
    return {"entry": graph.entry_point, "nodes": nodes, "edges": edges}


def executions_per_hour(*, tenant: Tenant, hours: int = 24) -> list[dict[str, Any]]:
    """How many executions the tenant started in each of the last ``hours`` hours, oldest first."""
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(hours=hours - 1)
    counts = dict(
        Execution.objects.for_tenant(tenant)
        .filter(created_at__gte=start)
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
        .values_list("hour", "n")
    )
    return [
        {"hour": start + timedelta(hours=i), "count": counts.get(start + timedelta(hours=i), 0)} for i in range(hours)
    ]


def blueprint_get(*, tenant: Tenant, name: str) -> Blueprint:
    blueprint = Blueprint.objects.filter(tenant=tenant, name=name).first()
    if blueprint is None:
        raise NotFound(f"no blueprint named {name!r}")
    return blueprint


def blueprint_versions(*, tenant: Tenant, name: str) -> list[int]:
    return list(
        BlueprintVersion.objects.filter(tenant=tenant, blueprint__name=name)
        .order_by("version")
        .values_list("version", flat=True)
    )


def blueprint_version_outline(*, version: BlueprintVersion) -> dict[str, Any]:
    """A saved version's graph as a picture needs it (as ``execution_graph_outline`` draws a run's)."""
    try:
        graph = compile_definition(version.blueprint.name, version.definition, Resources())
    except Exception:  # a version that no longer compiles: draw nothing rather than fail the page
        return {"entry": None, "nodes": [], "edges": []}
    edges = [{"from": src, "to": dst, "label": ""} for src, targets in graph.static.items() for dst in targets]
    for src, conditional in graph.conditional.items():
        edges += [{"from": src, "to": dst, "label": key} for key, dst in conditional.destinations.items()]
    nodes = [{"name": node.name, "type": node.step_type.value} for node in graph.nodes.values()]
    return {"entry": graph.entry_point, "nodes": nodes, "edges": edges}
