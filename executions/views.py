"""The dashboard: server-rendered pages for a tenant's people. Pages render what is stored; the
small script in ``static/executions/dashboard.js`` keeps them live over the websockets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from enact_platform.errors import NotFound
from executions import selectors
from executions.catalog import blueprint_catalog
from executions.live.groups import STATE_AFTER_EVENT
from executions.models import Execution
from executions.services import schedules
from tenants.models import Membership, Tenant, TenantLimits
from tenants.selectors import tenant_membership, tenant_usage, tenants_for_user

STATES = [state for state, _ in Execution.State.choices]


@dataclass(frozen=True)
class Seat:
    """The tenant a page shows, and what the user may do there."""

    tenant: Tenant
    tenants: list[Tenant]
    role: str
    can_operate: bool


def _seat(request: HttpRequest) -> Seat | None:
    user = request.user
    tenants = tenants_for_user(user=user)  # type: ignore[arg-type]
    if not tenants and user.is_superuser:
        tenants = list(Tenant.objects.order_by("slug"))
    if not tenants:
        return None
    wanted = request.GET.get("tenant") or request.session.get("tenant")
    tenant = next((t for t in tenants if t.slug == wanted), tenants[0])
    request.session["tenant"] = tenant.slug
    membership = tenant_membership(user=user, tenant=tenant)  # type: ignore[arg-type]
    role = membership.role if membership else ("admin" if user.is_superuser else Membership.Role.VIEWER)
    can_operate = bool(user.is_superuser or (membership is not None and membership.can_operate))
    return Seat(tenant=tenant, tenants=tenants, role=role, can_operate=can_operate)


def _page(request: HttpRequest, template: str, seat: Seat, **context: Any) -> HttpResponse:
    return render(request, template, {"seat": seat, **context})


def _no_tenant(request: HttpRequest) -> HttpResponse:
    return render(request, "dashboard/no_tenant.html", status=403)


@login_required
def executions_page(request: HttpRequest) -> HttpResponse:
    seat = _seat(request)
    if seat is None:
        return _no_tenant(request)
    state = request.GET.get("state") if request.GET.get("state") in STATES else None
    blueprint = request.GET.get("blueprint") or None
    q = (request.GET.get("q") or "").strip()[:200] or None
    rows = list(selectors.execution_list(tenant=seat.tenant, state=state, blueprint=blueprint, q=q)[:100])
    blueprints = [
        {"name": g.name, "version": g.version, "description": g.description, "input_schema": g.input_schema}
        for g in blueprint_catalog(tenant=seat.tenant)
    ]
    return _page(
        request,
        "dashboard/executions.html",
        seat,
        executions=rows,
        states=STATES,
        filters={"state": state or "", "blueprint": blueprint or "", "q": q or ""},
        blueprints=blueprints,
    )


@login_required
def execution_page(request: HttpRequest, execution_id: str) -> HttpResponse:
    seat = _seat(request)
    if seat is None:
        return _no_tenant(request)
    try:
        execution = selectors.execution_get_detailed(tenant=seat.tenant, execution_id=execution_id)
    except NotFound:
        raise Http404("execution not found") from None
    limits = TenantLimits.objects.get(tenant=seat.tenant)
    page = {
        "execution": {
            "id": execution.pk,
            "state": execution.state,
            "wait_reason": execution.wait_reason,
            "wait_detail": execution.wait_detail,
            "usage": execution.usage,
        },
        "graph": selectors.execution_graph_outline(execution=execution),
        "limits": {
            "steps": limits.max_steps,
            "tokens": limits.max_tokens,
            "cost_usd": float(limits.max_cost_usd) if limits.max_cost_usd is not None else None,
            "wall_time_s": limits.max_wall_time_s,
        },
        "can_operate": seat.can_operate,
        "tenant": seat.tenant.slug,
        "states": STATE_AFTER_EVENT,
    }
    return _page(
        request,
        "dashboard/execution.html",
        seat,
        execution=execution,
        steps=list(selectors.execution_steps(tenant=seat.tenant, execution_id=execution.pk)),
        artifacts=list(selectors.execution_artifacts(tenant=seat.tenant, execution_id=execution.pk)),
        page=page,
    )


@login_required
def usage_page(request: HttpRequest) -> HttpResponse:
    seat = _seat(request)
    if seat is None:
        return _no_tenant(request)
    limits = TenantLimits.objects.get(tenant=seat.tenant)
    usage = tenant_usage(tenant=seat.tenant)
    bars = [
        ("Running now", usage["running_executions"], limits.max_concurrent_executions),
        ("Executions today", usage["executions_today"], limits.executions_per_day),
        ("Tokens today", usage["tokens_today"], limits.tokens_per_day),
        ("Cost today (USD)", round(usage["cost_today_usd"], 4), limits.cost_per_day_usd),
        ("Storage (bytes)", usage["storage_bytes"], limits.max_storage_bytes),
    ]
    per_hour = selectors.executions_per_hour(tenant=seat.tenant)
    peak = max([h["count"] for h in per_hour] + [1])
    return _page(
        request,
        "dashboard/usage.html",
        seat,
        bars=[
            {"label": label, "used": used, "limit": limit, "percent": _percent(used, limit)}
            for label, used, limit in bars
        ],
        limits=limits,
        per_hour=[{**h, "height": round(100 * h["count"] / peak)} for h in per_hour],
        peak=peak,
    )


def _percent(used: Any, limit: Any) -> int | None:
    if limit in (None, 0):
        return None
    return min(100, round(100 * float(used) / float(limit)))


@login_required
def schedules_page(request: HttpRequest) -> HttpResponse:
    """The tenant's schedules: what each runs and when, its next firings, its last error; an
    operator pauses and resumes them here."""
    seat = _seat(request)
    if seat is None:
        return _no_tenant(request)
    rows = [
        {"schedule": schedule, "next_runs": [] if schedule.paused else schedules.next_runs(schedule, 3)}
        for schedule in schedules.schedule_list(tenant=seat.tenant)
    ]
    return _page(request, "dashboard/schedules.html", seat, rows=rows)


@login_required
@require_POST
def schedule_control(request: HttpRequest, schedule_id: str, action: str) -> HttpResponse:
    seat = _seat(request)
    if seat is None:
        return _no_tenant(request)
    if not seat.can_operate:
        return HttpResponse("your role may not pause or resume schedules", status=403)
    controls = {"pause": schedules.schedule_pause, "resume": schedules.schedule_resume}
    if action not in controls:
        raise Http404("no such action")
    try:
        controls[action](tenant=seat.tenant, schedule_id=schedule_id)
    except NotFound:
        raise Http404("no such schedule") from None
    return redirect("dashboard:schedules")
