"""The tenant's schedules."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from enact_platform.errors import NotFound
from executions.models import Execution, Schedule
from executions.services import schedules
from executions.views.common import no_tenant, render_page, seat_for

RECENT = 5
OVERLAP_WORDS = {
    Schedule.Overlap.SKIP: "If the previous run is still going, this firing is skipped.",
    Schedule.Overlap.QUEUE: "If the previous run is still going, a new run starts anyway.",
    Schedule.Overlap.CANCEL_PREVIOUS: "If the previous run is still going, it is cancelled and a new run starts.",
}


def _when(schedule: Schedule) -> str:
    if schedule.cron:
        return ""  # the expression and its zone say it
    seconds = schedule.interval_seconds or 0
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds % size == 0:
            n = seconds // size
            return f"every {unit}" if n == 1 else f"every {n} {unit}s"
    return f"every {seconds} s"


def _row(schedule: Schedule, recent: list[Execution]) -> dict[str, Any]:
    last = recent[0] if recent else None
    # The last firing started `last` unless it came later (it was skipped, or refused).
    # A firing reads the clock, then submits: its execution is created at or just after it.
    started_last = last is not None and (
        schedule.last_fired_at is None or last.created_at >= schedule.last_fired_at - timedelta(seconds=1)
    )
    return {
        "schedule": schedule,
        "when": _when(schedule),
        "overlap_words": OVERLAP_WORDS.get(schedule.overlap, schedule.overlap),
        "next_runs": [] if schedule.paused else schedules.next_runs(schedule, 3),
        "recent": recent,
        "last_execution": last if started_last else None,
    }


@login_required
def schedules_page(request: HttpRequest) -> HttpResponse:
    """The tenant's schedules: what each runs and when, its next firings, its last firings and
    their executions, its last error; an operator pauses and resumes them here."""
    seat = seat_for(request)
    if seat is None:
        return no_tenant(request)
    listed = list(schedules.schedule_list(tenant=seat.tenant))
    recent = schedules.schedules_recent_executions(
        tenant=seat.tenant, schedule_ids=[s.pk for s in listed], limit=RECENT
    )
    rows = [_row(schedule, recent[schedule.pk]) for schedule in listed]
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
