"""The tenant's usage against its limits."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse

from executions import selectors
from executions.views.common import no_tenant, render_page, seat_for
from tenants.models import TenantLimits
from tenants.selectors import tenant_usage


@login_required
def usage_page(request: HttpRequest) -> HttpResponse:
    seat = seat_for(request)
    if seat is None:
        return no_tenant(request)
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
    return render_page(
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
