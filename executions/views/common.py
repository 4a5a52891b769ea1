"""What every dashboard page shares: the tenant a page shows (its seat) and how a page renders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from executions.models import Execution
from tenants.models import Membership, Tenant
from tenants.selectors import tenant_membership, tenants_for_user

STATES = [state for state, _ in Execution.State.choices]


@dataclass(frozen=True)
class Seat:
    """The tenant a page shows, and what the user may do there."""

    tenant: Tenant
    tenants: list[Tenant]
    role: str
    can_operate: bool


def seat_for(request: HttpRequest) -> Seat | None:
    user = request.user
    tenants = tenants_for_user(user=user)  # type: ignore[arg-type]
    if not tenants and user.is_superuser:
        tenants = list(Tenant.objects.order_by("slug"))
    if not tenants:
        return None
    wanted = request.GET.get("tenant") or request.session.get("tenant")
    tenants = _with_any_for_superusers(user, tenants, wanted)
    tenant = next((t for t in tenants if t.slug == wanted), tenants[0])
    request.session["tenant"] = tenant.slug
    membership = tenant_membership(user=user, tenant=tenant)  # type: ignore[arg-type]
    role = membership.role if membership else ("admin" if user.is_superuser else Membership.Role.VIEWER)
    can_operate = bool(user.is_superuser or (membership is not None and membership.can_operate))
    return Seat(tenant=tenant, tenants=tenants, role=role, can_operate=can_operate)


def render_page(request: HttpRequest, template: str, seat: Seat, **context: Any) -> HttpResponse:
    return render(request, template, {"seat": seat, **context})


def no_tenant(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/no_tenant.html", status=403)


def _with_any_for_superusers(user: Any, tenants: list[Tenant], wanted: str | None) -> list[Tenant]:
    """A superuser may open any tenant (as in the admin), members of some or not: the one asked
    for joins the tenants offered."""
    if not user.is_superuser or not wanted or "\x00" in wanted or any(t.slug == wanted for t in tenants):
        return tenants
    asked = Tenant.objects.filter(slug=wanted[:100]).first()
    return [*tenants, asked] if asked else tenants
