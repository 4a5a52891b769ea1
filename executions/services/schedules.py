"""Schedules: a tenant's blueprint run at cron times (in a time zone) or every N seconds.

What a schedule means (times, overlap, catch-up, pause) is said once, on ``models.Schedule``.
Cron expressions are parsed and stepped by croniter; this module only maps its wall-clock times
to instants with ``zoneinfo`` (croniter's own time-zone handling has moved across releases, and
the rule for times that occur twice or never is ours to state). Firing is here too: each firing
is ``execution_submit``, so every limit and quota of the tenant applies; the worker processes'
ticker (``runtime/scheduler.py``) calls ``schedules_fire_due``.
"""

from __future__ import annotations

import functools
import logging
import re
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from croniter import CroniterError, croniter
from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from enact_platform.errors import Conflict, InvalidInput, NotFound, PlatformError
from enact_platform.locks import locked
from executions.catalog import blueprint_lookup
from executions.kernel import ids
from executions.kernel.events import iso_timestamp
from executions.models import Execution, Schedule
from executions.registry import validate_input
from executions.services.controls import execution_cancel
from executions.services.submit import execution_submit
from tenants.models import Tenant

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
# The most cron times looked at to find the next one (a time that never exists at all is refused).
_MAX_STEPS = 1000
# How many missed times a catch-up counts at most (it fires once whatever the count).
MAX_MISSED_COUNTED = 1000
EDITABLE = ("name", "blueprint", "version", "input", "cron", "timezone", "interval_seconds", "overlap", "paused")


def _field_error(field: str, problem: str) -> InvalidInput:
    """A field refused for what it means (the shape was fine): ``details`` names it and the problem."""
    return InvalidInput(f"{field}: {problem}", details={"field": field, "problem": problem})


@functools.cache
def _zones() -> frozenset[str]:
    # The system's zone folder also has names that are no IANA zone: the host's own and helpers.
    return frozenset(zoneinfo.available_timezones()) - {"localtime", "posixrules", "Factory"}


def time_zone(name: Any) -> zoneinfo.ZoneInfo:
    """The IANA time zone ``name``, or a 400 naming the field."""
    if not isinstance(name, str) or name not in _zones():
        raise _field_error("timezone", f"{name!r} is not an IANA time zone (such as 'Europe/Paris' or 'UTC')")
    return zoneinfo.ZoneInfo(name)


def cron_check(expression: Any, tz: zoneinfo.ZoneInfo) -> str:
    """The expression if croniter takes it and it has a next time, else a 400 with croniter's words."""
    if not isinstance(expression, str) or not expression.strip():
        raise _field_error("cron", "a cron expression such as '0 9 * * 1-5' is required")
    try:
        _cron_after(expression, tz, timezone.now())
    except CroniterError as exc:
        raise _field_error("cron", str(exc)) from None
    return expression


def _cron_after(expression: str, tz: zoneinfo.ZoneInfo, after: datetime) -> datetime:
    """The first instant after ``after`` of the cron expression's wall-clock times in ``tz``: a time
    that occurs twice counts at its first occurrence (fold 0), a time that does not exist is
    shifted by the gap (fold 0 reads it with the offset before the change); an instant already
    passed (a shifted time, the second pass of a repeated hour) is stepped over."""
    times = croniter(expression, after.astimezone(tz).replace(tzinfo=None))
    for _ in range(_MAX_STEPS):
        instant = times.get_next(datetime).replace(tzinfo=tz)
        if instant > after:
            return instant.astimezone(UTC)
    raise InvalidInput("the cron expression has no time within reach")  # unreachable for a real expression


def next_fire_after(schedule: Schedule, after: datetime) -> datetime:
    """The schedule's first time strictly after ``after``."""
    if schedule.interval_seconds:
        step = timedelta(seconds=schedule.interval_seconds)
        return EPOCH + ((after - EPOCH) // step + 1) * step
    return _cron_after(schedule.cron, zoneinfo.ZoneInfo(schedule.timezone), after)


def next_runs(schedule: Schedule, count: int = 5, *, after: datetime | None = None) -> list[datetime]:
    """The next ``count`` times it will fire (none while paused)."""
    if schedule.paused:
        return []
    times: list[datetime] = []
    start = schedule.next_fire_at or next_fire_after(schedule, after or timezone.now())
    times.append(start)
    while len(times) < count:
        times.append(next_fire_after(schedule, times[-1]))
    return times


# Reading --------------------------------------------------------------------------------------


def schedule_list(*, tenant: Tenant) -> QuerySet[Schedule]:
    return Schedule.objects.filter(tenant=tenant)


def schedules_recent_executions(
    *, tenant: Tenant, schedule_ids: list[str], limit: int = 5
) -> dict[str, list[Execution]]:
    """The executions each schedule's last firings started, newest first, keyed by schedule id:
    one query however many schedules (each schedule's rows numbered, the first ``limit`` kept)."""
    rows = (
        Execution.objects.for_tenant(tenant)
        .filter(schedule_id__in=schedule_ids)
        .only("id", "state", "created_at", "ended_at", "schedule_id", "tenant_id")
        .annotate(
            recent_rank=Window(
                RowNumber(), partition_by=[F("schedule_id")], order_by=[F("created_at").desc(), F("id").desc()]
            )
        )
        .filter(recent_rank__lte=limit)
        .order_by("schedule_id", "-created_at", "-id")
    )
    found: dict[str, list[Execution]] = {schedule_id: [] for schedule_id in schedule_ids}
    for execution in rows:
        found[execution.schedule_id].append(execution)
    return found


def schedule_get(*, tenant: Tenant, schedule_id: Any) -> Schedule:
    """The tenant's schedule; unknown, malformed and other tenants' ids are alike not found."""
    if ids.is_valid_id(schedule_id, ids.IdKind.SCHEDULE):
        found = Schedule.objects.filter(tenant=tenant, pk=schedule_id).first()
        if found is not None:
            return found
    raise NotFound("no such schedule")


def schedule_get_by_name(*, tenant: Tenant, name: str) -> Schedule:
    found = Schedule.objects.filter(tenant=tenant, name=name).first()
    if found is None:
        raise NotFound(f"no schedule named {name!r}")
    return found


# Writing --------------------------------------------------------------------------------------


def schedule_create(*, tenant: Tenant, **fields: Any) -> Schedule:
    """A new schedule of the tenant; ``fields`` are those of ``EDITABLE`` (the API's names).
    Everything is checked before anything is written: a refusal changes nothing."""
    values: dict[str, Any] = {
        "version": None,
        "input": None,
        "cron": "",
        "timezone": "UTC",
        "interval_seconds": None,
        "overlap": Schedule.Overlap.SKIP,
        "paused": False,
    }
    given = _given(fields)
    if "cron" in given and "interval_seconds" in given:
        raise _field_error("cron", "give either cron or interval_seconds, not both")
    values.update(given)
    schedule = Schedule(tenant=tenant)
    _apply(schedule, values, timing_changed=True)
    try:
        with transaction.atomic():
            schedule.save(force_insert=True)
    except IntegrityError:
        raise Conflict(f"this tenant has a schedule named {schedule.name!r} already") from None
    return schedule


def schedule_update(*, tenant: Tenant, schedule_id: str, **fields: Any) -> Schedule:
    """Change the given fields. Giving ``cron`` (not null) clears ``interval_seconds`` and the
    other way round; a change of times (or a resume) sets the next firing from now."""
    given = _given(fields)
    with transaction.atomic():
        schedule = locked(Schedule.objects.filter(pk=schedule_get(tenant=tenant, schedule_id=schedule_id).pk)).get()
        values = {
            "name": schedule.name,
            "blueprint": schedule.blueprint,
            "version": schedule.blueprint_version,
            "input": schedule.input,
            "cron": schedule.cron,
            "timezone": schedule.timezone,
            "interval_seconds": schedule.interval_seconds,
            "overlap": schedule.overlap,
            "paused": schedule.paused,
        }
        if given.get("cron") is not None and "interval_seconds" not in given:
            values["interval_seconds"] = None
        if given.get("interval_seconds") is not None and "cron" not in given:
            values["cron"] = ""
        if "blueprint" in given and "version" not in given:
            values["version"] = None  # another blueprint: its latest, not the old one's pinned version
        values.update(given)
        timing = ("cron", "timezone", "interval_seconds")
        timing_changed = any(values[k] != getattr(schedule, k) for k in timing) or (
            schedule.paused and not values["paused"]
        )
        _apply(schedule, values, timing_changed=timing_changed)
        try:
            with transaction.atomic():
                schedule.save()
        except IntegrityError:
            raise Conflict(f"this tenant has a schedule named {schedule.name!r} already") from None
    return schedule


def schedule_pause(*, tenant: Tenant, schedule_id: str) -> Schedule:
    return schedule_update(tenant=tenant, schedule_id=schedule_id, paused=True)


def schedule_resume(*, tenant: Tenant, schedule_id: str) -> Schedule:
    return schedule_update(tenant=tenant, schedule_id=schedule_id, paused=False)


def schedule_delete(*, tenant: Tenant, schedule_id: str) -> None:
    """Delete it; the executions it started stay (without the link)."""
    with transaction.atomic():
        schedule = locked(Schedule.objects.filter(pk=schedule_get(tenant=tenant, schedule_id=schedule_id).pk)).get()
        schedule.delete()


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(fields) - set(EDITABLE))
    if unknown:
        raise _field_error(unknown[0], "unknown field")
    return dict(fields)


def schedule_apply(schedule: Schedule, values: dict[str, Any]) -> None:
    """Check every field of ``values`` (all of ``EDITABLE``), then set them on ``schedule``, unsaved,
    with its next firing: what the admin's form saves. Refused as the API refuses."""
    timing_changed = schedule._state.adding or any(
        values[k] != getattr(schedule, k) for k in ("cron", "timezone", "interval_seconds")
    )
    _apply(schedule, values, timing_changed=timing_changed or (schedule.paused and not values["paused"]))


def _apply(schedule: Schedule, values: dict[str, Any], *, timing_changed: bool) -> None:
    """Check ``values`` whole, then set them on ``schedule`` (unsaved)."""
    name = values.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise _field_error("name", "1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if values["overlap"] not in Schedule.Overlap.values:
        raise _field_error("overlap", f"one of {', '.join(Schedule.Overlap.values)}")
    if not isinstance(values["paused"], bool):
        raise _field_error("paused", "true or false")
    tz = time_zone(values["timezone"])
    cron, interval = values["cron"] or "", values["interval_seconds"]
    if cron and interval is not None:
        raise _field_error("cron", "give either cron or interval_seconds, not both")
    if interval is not None:
        if not isinstance(interval, int) or isinstance(interval, bool) or not 1 <= interval <= 366 * 86400:
            raise _field_error("interval_seconds", "a whole number of seconds from 1 to 31622400")
    else:
        cron = cron_check(cron, tz)
    entry = blueprint_lookup(tenant=schedule.tenant, name=values["blueprint"], version=values["version"])
    validate_input(entry.input_schema, values["input"])

    schedule.name = name
    schedule.blueprint = entry.name
    schedule.blueprint_version = values["version"]
    schedule.input = values["input"]
    schedule.cron = cron
    schedule.timezone = tz.key
    schedule.interval_seconds = interval
    schedule.overlap = values["overlap"]
    schedule.paused = values["paused"]
    if schedule.paused:
        schedule.next_fire_at = None
    elif timing_changed or schedule.next_fire_at is None:
        schedule.next_fire_at = next_fire_after(schedule, timezone.now())


# Firing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Firing:
    schedule_id: str
    scheduled_at: datetime
    outcome: str  # "submitted", "skipped" (overlap) or "refused" (limits, quotas, a bad blueprint)
    execution_id: str | None = None
    missed: int = 0


def schedules_next_due() -> datetime | None:
    """When the next unpaused schedule comes due (maybe in the past), or None with none."""
    return (
        Schedule.objects.filter(paused=False, next_fire_at__isnull=False)
        .order_by("next_fire_at")
        .values_list("next_fire_at", flat=True)
        .first()
    )


def schedules_fire_due(*, limit: int = 100) -> list[Firing]:
    """Fire every schedule that is due, one transaction each: the schedule's row is claimed
    (``FOR NO KEY UPDATE SKIP LOCKED`` on PostgreSQL; SQLite's write lock, taken at the start of
    every transaction), the firing submitted, and ``next_fire_at`` moved past now, all committed
    together. So any number of workers, in any number of clusters, fire each time once: another
    worker skips the row while it is claimed and finds it no longer due once committed."""
    fired: list[Firing] = []
    for _ in range(limit):
        # A read first: with nothing due, no transaction that writes (on SQLite, one takes the
        # database's write lock as it begins) is opened at all.
        if not Schedule.objects.filter(paused=False, next_fire_at__lte=timezone.now()).exists():
            break
        with transaction.atomic():
            now = timezone.now()
            due = locked(
                Schedule.objects.select_related("tenant").filter(paused=False, next_fire_at__lte=now),
                no_key=True,
                of=("self",),
                skip_locked=True,
            )
            schedule = due.order_by("next_fire_at", "id").first()
            if schedule is None:
                break
            fired.append(_fire(schedule, now))
    return fired


def _fire(schedule: Schedule, now: datetime) -> Firing:
    scheduled_at = schedule.next_fire_at
    assert scheduled_at is not None
    # Catch-up: the times missed since (downtime) fire with this one, once; counted for the record.
    missed, later = 0, next_fire_after(schedule, scheduled_at)
    while later <= now and missed < MAX_MISSED_COUNTED:
        missed += 1
        later = next_fire_after(schedule, later)
    if later <= now:
        later = next_fire_after(schedule, now)
    unfinished = list(
        Execution.objects.filter(schedule=schedule).exclude(state__in=Execution.TERMINAL).values_list("pk", flat=True)
    )
    firing = Firing(schedule.pk, scheduled_at, "skipped", missed=missed)
    if not (unfinished and schedule.overlap == Schedule.Overlap.SKIP):
        try:
            with transaction.atomic():  # a refused submission undoes the cancels of cancel_previous too
                if schedule.overlap == Schedule.Overlap.CANCEL_PREVIOUS:
                    for execution_id in unfinished:
                        execution_cancel(
                            tenant=schedule.tenant,
                            execution_id=execution_id,
                            reason=f"schedule {schedule.name}: a newer firing replaces it",
                            actor=f"schedule:{schedule.name}",
                        )
                execution, _ = execution_submit(
                    tenant=schedule.tenant,
                    blueprint=schedule.blueprint,
                    version=schedule.blueprint_version,
                    input=schedule.input,
                    metadata={
                        "schedule": {
                            "id": schedule.pk,
                            "name": schedule.name,
                            "scheduled_at": iso_timestamp(scheduled_at),
                            "missed": missed,
                        }
                    },
                    schedule=schedule,
                )
            firing = Firing(schedule.pk, scheduled_at, "submitted", execution.pk, missed)
            schedule.last_error = None
        except PlatformError as exc:
            firing = Firing(schedule.pk, scheduled_at, "refused", missed=missed)
            schedule.last_error = {**exc.to_body()["error"], "scheduled_at": iso_timestamp(scheduled_at)}
        except Exception as exc:  # a bug must not stop the schedule's clock: recorded, logged, moved on
            logger.exception("schedule %s failed to fire", schedule.pk)
            firing = Firing(schedule.pk, scheduled_at, "refused", missed=missed)
            schedule.last_error = {
                "code": "error",
                "message": f"{type(exc).__name__}: {exc}",
                "details": {},
                "scheduled_at": iso_timestamp(scheduled_at),
            }
    schedule.last_fired_at = now
    schedule.next_fire_at = later
    schedule.save(update_fields=["last_fired_at", "next_fire_at", "last_error", "updated_at"])
    return firing
