"""One execution's page."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse

from enact_platform.errors import NotFound
from executions import selectors
from executions.live.groups import STATE_AFTER_EVENT
from executions.models import Step
from executions.views.common import no_tenant, render_page, seat_for
from tenants.models import TenantLimits


@login_required
def execution_page(request: HttpRequest, execution_id: str) -> HttpResponse:
    seat = seat_for(request)
    if seat is None:
        return no_tenant(request)
    # The seq first, then what is stored: the page follows the events after that seq, so anything
    # that happens while the page is put together arrives again over the socket, never goes missing.
    last_seq = selectors.last_event_seq(execution_id=execution_id)
    try:
        execution = selectors.execution_get(tenant=seat.tenant, execution_id=execution_id)
    except NotFound:
        raise Http404("execution not found") from None
    steps = list(selectors.execution_steps(tenant=seat.tenant, execution_id=execution.pk))
    limits = TenantLimits.objects.get(tenant=seat.tenant)
    page = {
        "execution": {
            "id": execution.pk,
            "state": execution.state,
            "wait_reason": execution.wait_reason,
            "wait_detail": execution.wait_detail,
            "usage": execution.usage,
            "started_at": execution.started_at,
            "ended_at": execution.ended_at,
        },
        "last_seq": last_seq,
        "steps": [_step(step) for step in steps],
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
    return render_page(
        request,
        "dashboard/execution.html",
        seat,
        execution=execution,
        steps=steps,
        artifacts=list(selectors.execution_artifacts(tenant=seat.tenant, execution_id=execution.pk)),
        page=page,
    )


def _step(step: Step) -> dict[str, Any]:
    return {
        "id": step.pk,
        "name": step.name,
        "step_type": step.step_type,
        "state": step.state,
        "attempt": step.attempt,
        "parent_step_id": step.parent_step_id,
        "started_at": step.started_at,
        "ended_at": step.ended_at,
        "duration_ms": step.duration_ms,
        "output": step.output,
        "error": step.error,
    }
