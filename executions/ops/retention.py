"""Retention: ended executions older than their tenant's ``retention_days`` are deleted, with their
events, steps and artifacts (files too), and the tenant's storage is given back.

Deletion goes in small batches, each its own short transaction, so no table is locked for long
while workers append events. An execution is removed only once every child of it has expired
too (a child is deleted with its parent). A sweep cut short (a crash, a time limit) leaves only
executions that are still due, and the next sweep finishes them.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from executions.models import Artifact, Execution, ExecutionEvent, Step
from executions.persistence.events import stored_bytes
from tenants.models import Tenant, TenantLimits

logger = logging.getLogger(__name__)

EXECUTIONS_PER_BATCH = 100
ROWS_PER_DELETE = 2000


def executions_sweep(*, now: datetime | None = None, seconds: float = 60.0) -> dict[str, dict[str, int]]:
    """Delete what the tenants' retention periods let go of; returns, by tenant slug, what was
    removed: executions, events, steps, artifacts and artifact bytes. Stops after ``seconds``."""
    now = now or timezone.now()
    deadline = time.monotonic() + seconds
    removed: dict[str, dict[str, int]] = defaultdict(
        lambda: {"executions": 0, "events": 0, "steps": 0, "artifacts": 0, "artifact_bytes": 0}
    )
    for limits in TenantLimits.objects.filter(retention_days__isnull=False).select_related("tenant"):
        cutoff = now - timedelta(days=limits.retention_days or 0)
        while time.monotonic() < deadline:
            ids = _due(limits.tenant, cutoff)
            if not ids:
                break
            counts = _remove(limits.tenant, ids)
            for key, value in counts.items():
                removed[limits.tenant.slug][key] += value
    if removed:
        logger.info("retention sweep removed %s", dict(removed))
    return dict(removed)


def _due(tenant: Tenant, cutoff: datetime) -> list[str]:
    """A batch of the tenant's executions past retention, none with a child that is not."""
    live_child = Execution.objects.filter(parent=OuterRef("pk")).exclude(
        state__in=Execution.TERMINAL, ended_at__lt=cutoff
    )
    due = Execution.objects.filter(tenant=tenant, state__in=Execution.TERMINAL, ended_at__lt=cutoff)
    return list(
        due.filter(~Exists(live_child)).order_by("ended_at").values_list("pk", flat=True)[:EXECUTIONS_PER_BATCH]
    )


def _remove(tenant: Tenant, ids: list[str]) -> dict[str, int]:
    ids = _with_descendants(ids)
    rows_size = stored_bytes(ids)  # what their events and steps counted against the tenant's storage
    counts = {
        "events": _delete_in_chunks(ExecutionEvent, "pk_id", ids),
        "steps": _delete_in_chunks(Step, "pk", ids),
    }
    artifacts = list(Artifact.objects.filter(execution_id__in=ids))
    size = sum(a.size for a in artifacts)
    with transaction.atomic():
        Artifact.objects.filter(pk__in=[a.pk for a in artifacts]).delete()
        Tenant.objects.filter(pk=tenant.pk).update(storage_bytes=F("storage_bytes") - size - rows_size)
        deleted = Execution.objects.filter(pk__in=ids).delete()[1].get(Execution._meta.label, 0)
    for artifact in artifacts:  # after the commit: a file is never gone while its row is there
        if artifact.file:
            artifact.file.delete(save=False)
    return {**counts, "executions": deleted, "artifacts": len(artifacts), "artifact_bytes": size}


def _with_descendants(ids: list[str]) -> list[str]:
    """The executions and every child below them: they go together (the parent's key cascades)."""
    found, frontier = list(ids), list(ids)
    while frontier:
        frontier = list(Execution.objects.filter(parent_id__in=frontier).values_list("pk", flat=True))
        found += frontier
    return found


def _delete_in_chunks(model: Any, key: str, execution_ids: list[str]) -> int:
    total = 0
    while True:
        chunk = list(model.objects.filter(execution_id__in=execution_ids).values_list(key, flat=True)[:ROWS_PER_DELETE])
        if not chunk:
            return total
        total += model.objects.filter(**{f"{key}__in": chunk}).delete()[0]
