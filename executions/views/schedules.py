"""The tenant's schedules."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from enact_platform.errors import NotFound
from executions.services import schedules
from executions.views.common import no_tenant, render_page, seat_for


@login_required
def schedules_page(request: HttpRequest) -> HttpResponse:
    """The tenant's schedules: what each runs and when, its next firings, its last error; an
    operator pauses and resumes them here."""
    seat = seat_for(request)
    if seat is None:
        return no_tenant(request)
    rows = [
        {"schedule": schedule, "next_runs": [] if schedule.paused else schedules.next_runs(schedule, 3)}
        for schedule in schedules.schedule_list(tenant=seat.tenant)
    ]
    return render_page(request, "dashboard/schedules.html", seat, rows=rows)


@login_required
@require_POST
def schedule_control(request: HttpRequest, schedule_id: str, action: str) -> HttpResponse:
    seat = seat_for(request)
    if seat is None:
        return no_tenant(request)
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
