"""Reads for tenants."""

from __future__ import annotations

from collections.abc import Callable
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


# What runs is the executions app's to say, and tenants never imports it: the app registers its
# reader of a tenant's running and queued executions when it is ready (ExecutionsConfig.ready).
_activity_readers: list[Callable[..., dict[str, int]]] = []


def tenant_activity_reader_register(reader: Callable[..., dict[str, int]]) -> None:
    """Add ``reader(tenant=...)``, whose counts ``tenant_usage`` reports."""
    if reader not in _activity_readers:
        _activity_readers.append(reader)


def tenant_usage(*, tenant: Tenant) -> dict[str, Any]:
    """Live usage against the tenant's limits: running now, today's totals, storage."""
    today = TenantDailyUsage.objects.filter(tenant=tenant, day=timezone.now().date()).first()
    activity = {"running_executions": 0, "queued_executions": 0}
    for reader in _activity_readers:
        activity.update(reader(tenant=tenant))
    return {
        **activity,
        "executions_today": today.executions if today else 0,
        "tokens_today": today.tokens if today else 0,
        "cost_today_usd": float(today.cost_usd) if today else 0.0,
        "storage_bytes": tenant.storage_bytes,
    }
