"""Submitting an execution: the one way every execution comes to be (API, dashboard, command
line, a parent's child)."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from enact_platform.errors import InvalidInput, PayloadTooLarge, QuotaExceeded
from executions import queue
from executions.catalog import blueprint_lookup
from executions.live import publisher
from executions.models import Execution, Schedule
from executions.registry import validate_input
from executions.services.webhooks import submission_webhook_check
from tenants.models import ApiKey, Tenant, TenantLimits
from tenants.services import tenant_consume_execution_quota


def execution_submit(
    *,
    tenant: Tenant,
    blueprint: str,
    input: Any,
    idempotency_key: str | None = None,
    metadata: dict[str, Any] | None = None,
    user: User | None = None,
    api_key: ApiKey | None = None,
    version: int | None = None,
    parent: Execution | None = None,
    schedule: Schedule | None = None,
    webhook: str | None = None,
    derived_from: tuple[Execution, str] | None = None,
) -> tuple[Execution, bool]:
    """Create an execution (``queued``) of blueprint ``blueprint`` (a built-in one or one of the
    tenant's own, at ``version`` or its latest) and enqueue it after commit. Returns it and whether
    it is new: a repeated idempotency key returns the first execution, unchanged. A schedule's
    firing names its ``schedule`` (origin ``schedule``); ``user`` or ``api_key``, who submitted it; a rerun or fork its source and origin
    (``derived_from``, ``services.derive``). ``webhook``: a URL called, signed, when it
    ends (``services.webhooks``; its host must be allowed by the tenant's tool policy)."""
    limits = TenantLimits.objects.get(tenant=tenant)
    if not tenant.is_active:
        raise QuotaExceeded(
            f"tenant {tenant.slug} is suspended and cannot submit executions", details={"status": tenant.status}
        )
    entry = blueprint_lookup(tenant=tenant, name=blueprint, version=version)
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
    if webhook is not None:
        webhook = submission_webhook_check(tenant=tenant, webhook=webhook)
    entry.build(input)  # an input that shapes an invalid graph is refused now, not by a worker

    if idempotency_key:
        existing = Execution.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing, False
    try:
        with transaction.atomic():
            tenant_consume_execution_quota(tenant=tenant, limits=limits)
            _refuse_past_max_queued(tenant, limits)
            execution = Execution.objects.create(
                tenant=tenant,
                blueprint=entry.name,
                blueprint_version=entry.version,
                input=input,
                idempotency_key=idempotency_key or None,
                metadata=metadata or {},
                created_by=user if user is not None and user.is_authenticated else None,
                created_by_key=api_key,
                parent=parent,
                schedule=schedule,
                source=derived_from[0] if derived_from else None,
                origin=derived_from[1] if derived_from else _origin(parent, schedule),
                webhook=webhook or "",
            )
            queue.enqueue_after_commit(execution.pk)
            transaction.on_commit(partial(publisher.publish_created, tenant.pk, execution.pk))
    except IntegrityError:
        # A concurrent submission with the same key won; its quota use stands, ours rolled back.
        existing = Execution.objects.filter(tenant=tenant, idempotency_key=idempotency_key).first()
        if existing is None:
            raise
        return existing, False
    return execution, True


def _origin(parent: Execution | None, schedule: Schedule | None) -> str:
    if parent is not None:
        return Execution.Origin.CHILD
    return Execution.Origin.SCHEDULE if schedule is not None else Execution.Origin.SUBMIT


def _refuse_past_max_queued(tenant: Tenant, limits: TenantLimits) -> None:
    """A flood is refused, not stored. Counted after the day's quota was taken in this
    transaction: that update holds the tenant's usage row until commit, so concurrent submissions
    of the tenant count one after the other and never overshoot together."""
    queued = Execution.objects.filter(tenant=tenant, state=Execution.State.QUEUED, lease_owner="").count()
    if queued >= limits.max_queued:
        raise QuotaExceeded(
            f"{queued} executions of this tenant wait for a slot already; at most {limits.max_queued} may",
            details={"limit": "max_queued", "queued": queued, "maximum": limits.max_queued},
        )
