"""The executions list and its start form."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse

from executions import selectors
from executions.catalog import blueprint_catalog
from executions.views.common import STATES, no_tenant, render_page, seat_for


@login_required
def executions_page(request: HttpRequest) -> HttpResponse:
    seat = seat_for(request)
    if seat is None:
        return no_tenant(request)
    state = request.GET.get("state") if request.GET.get("state") in STATES else None
    blueprint = request.GET.get("blueprint") or None
    q = (request.GET.get("q") or "").strip()[:200] or None
    rows = list(selectors.execution_list(tenant=seat.tenant, state=state, blueprint=blueprint, q=q)[:100])
    blueprints = [
        {"name": g.name, "version": g.version, "description": g.description, "input_schema": g.input_schema}
        for g in blueprint_catalog(tenant=seat.tenant)
    ]
    return render_page(
        request,
        "dashboard/executions.html",
        seat,
        executions=rows,
        states=STATES,
        filters={"state": state or "", "blueprint": blueprint or "", "q": q or ""},
        blueprints=blueprints,
    )
