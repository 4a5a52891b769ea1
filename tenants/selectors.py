"""Reads for tenants."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.utils import timezone

from enact_platform.errors import NotFound
from tenants.models import Membership, Tenant, TenantDailyUsage


def tenant_get(*, slug: str) -> Tenant:
    tenant = Tenant.objects.select_related("limits").filter(slug=slug).first()
    if tenant is None:
        raise NotFound(f"tenant {slug!r} not found")
    return tenant


def tenant_membership(*, user: User | AnonymousUser, tenant: Tenant) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, tenant=tenant).first()


def tenants_for_user(*, user: User | AnonymousUser) -> list[Tenant]:
    if not user.is_authenticated:
        return []
    return list(Tenant.objects.filter(memberships__user=user).order_by("slug"))


def tenant_usage(*, tenant: Tenant) -> dict[str, Any]:
    """Live usage against the tenant's limits: running now, today's totals, storage."""
    from executions.models import Execution

    today = TenantDailyUsage.objects.filter(tenant=tenant, day=timezone.now().date()).first()
    return {
        "running_executions": Execution.objects.filter(tenant=tenant).active().count(),
        "queued_executions": Execution.objects.filter(tenant=tenant, state=Execution.State.QUEUED).count(),
        "executions_today": today.executions if today else 0,
        "tokens_today": today.tokens if today else 0,
        "cost_today_usd": float(today.cost_usd) if today else 0.0,
        "storage_bytes": tenant.storage_bytes,
    }
