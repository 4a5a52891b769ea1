"""Schedules (executions/services/schedules.py): times across DST changes, overlap policies,
catch-up after downtime, pause, refusals recorded rather than raised, isolation between tenants."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from enact_platform.errors import Conflict, InvalidInput, NotFound
from executions.models import Execution, Schedule
from executions.services import schedules as svc
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import tenant_set_limits

SLOW = {"steps": 1, "seconds": 0}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def spec(**fields: Any) -> Schedule:
    """An unsaved schedule with these timing fields (next_fire_at unset)."""
    return Schedule(**{"cron": "", "timezone": "UTC", "interval_seconds": None, **fields})


def times(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    found = [svc.next_fire_after(schedule, after)]
    while len(found) < count:
        found.append(svc.next_fire_after(schedule, found[-1]))
    return found


# Times ----------------------------------------------------------------------------------------


def test_a_daily_cron_time_inside_the_spring_gap_fires_once_shifted_by_the_gap() -> None:
    # Paris, 29 March 2026: at 02:00 CET clocks go to 03:00 CEST; 02:30 does not exist that day.
    daily = spec(cron="30 2 * * *", timezone="Europe/Paris")
    assert times(daily, utc(2026, 3, 27, 12), 3) == [
        utc(2026, 3, 28, 1, 30),  # 02:30 CET
        utc(2026, 3, 29, 1, 30),  # "02:30" read as CET = 03:30 CEST, the gap's length later
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]


def test_hourly_cron_across_the_spring_gap_never_fires_one_instant_twice() -> None:
    # "30 * * * *" has 02:30 (which is 03:30 CEST once shifted) and 03:30: one firing, not two.
    hourly = spec(cron="30 * * * *", timezone="Europe/Paris")
    found = times(hourly, utc(2026, 3, 28, 23), 5)
    assert found == [utc(2026, 3, 28, 23, 30), utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 30), utc(2026, 3, 29, 3, 30)]  # fmt: skip
    assert len(set(found)) == len(found)


def test_a_cron_time_that_occurs_twice_when_clocks_go_back_fires_once() -> None:
    # Paris, 25 October 2026: at 03:00 CEST clocks go back to 02:00 CET; 02:30 happens twice.
    daily = spec(cron="30 2 * * *", timezone="Europe/Paris")
    assert times(daily, utc(2026, 10, 24, 12), 3) == [
        utc(2026, 10, 25, 0, 30),  # the first 02:30 (CEST)
        utc(2026, 10, 26, 1, 30),  # the next day's (CET): the second 02:30 of the 25th is not a firing
        utc(2026, 10, 27, 1, 30),
    ]
    # Asked from inside the repeated hour's second pass, it does not go back to the first.
    assert svc.next_fire_after(daily, utc(2026, 10, 25, 1, 10)) == utc(2026, 10, 26, 1, 30)


def test_a_cron_in_new_york_follows_its_own_dst_change() -> None:
    nine = spec(cron="0 9 * * *", timezone="America/New_York")
    # 8 March 2026 New York goes from EST (-5) to EDT (-4).
    assert times(nine, utc(2026, 3, 6, 20), 3) == [utc(2026, 3, 7, 14), utc(2026, 3, 8, 13), utc(2026, 3, 9, 13)]


def test_an_interval_counts_in_utc_from_the_epoch_whatever_the_time_zone() -> None:
    hourly = spec(interval_seconds=3600, timezone="Europe/Paris")
    found = times(hourly, utc(2026, 3, 29, 0, 10), 4)  # across Paris's spring change at 01:00 UTC
    assert found == [utc(2026, 3, 29, 1), utc(2026, 3, 29, 2), utc(2026, 3, 29, 3), utc(2026, 3, 29, 4)]
    assert {b - a for a, b in itertools.pairwise(found)} == {timedelta(hours=1)}
    # Strictly after: a time exactly on the grid is not its own next time.
    assert svc.next_fire_after(spec(interval_seconds=7), utc(1970, 1, 1, 0, 0, 14)) == utc(1970, 1, 1, 0, 0, 21)


# Creating and changing -----------------------------------------------------------------------


def create(tenant: Tenant, **fields: Any) -> Schedule:
    return svc.schedule_create(tenant=tenant, **{"name": "nightly", "blueprint": "demo.slow", "input": SLOW, **fields})


def test_a_new_schedule_shows_its_next_five_times(tenant_a: Tenant) -> None:
    schedule = create(tenant_a, cron="0 9 * * 1-5", timezone="Europe/Paris")
    runs = svc.next_runs(schedule)
    assert len(runs) == 5
    assert runs == sorted(runs)
    assert runs[0] == schedule.next_fire_at > timezone.now()
    assert all(t.astimezone(svc.time_zone("Europe/Paris")).hour == 9 for t in runs)
    assert all(t.astimezone(svc.time_zone("Europe/Paris")).weekday() < 5 for t in runs)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"cron": "61 * * * *"}, "cron", "out of range"),
        ({"cron": "every day"}, "cron", "Exactly 5, 6 or 7 columns"),
        ({"cron": "0 0 31 2 *"}, "cron", "failed to find next date"),
        ({"cron": "0 9 * * *", "timezone": "Europe/Pariss"}, "timezone", "not an IANA time zone"),
        ({"cron": "0 9 * * *", "timezone": "localtime"}, "timezone", "not an IANA time zone"),
        ({"interval_seconds": 0}, "interval_seconds", "from 1"),
        ({}, "cron", "required"),
        ({"cron": "0 9 * * *", "overlap": "sometimes"}, "overlap", "skip"),
        ({"cron": "0 9 * * *", "name": "no spaces"}, "name", "letters"),
        ({"cron": "0 9 * * *", "nightly": True}, "nightly", "unknown field"),
        ({"cron": "0 9 * * *", "interval_seconds": 60}, "cron", "either cron or interval_seconds"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_is_stored(
    tenant_a: Tenant, fields: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        create(tenant_a, **fields)
    assert refused.value.details["field"] == field
    assert words in refused.value.details["problem"]
    assert not Schedule.objects.exists()


def test_a_blueprint_input_that_fails_its_schema_is_refused_at_creation(tenant_a: Tenant) -> None:
    with pytest.raises(InvalidInput):
        create(tenant_a, cron="0 9 * * *", input={"steps": "many"})
    with pytest.raises(InvalidInput, match="unknown blueprint"):
        create(tenant_a, cron="0 9 * * *", blueprint="demo.nothing")
    assert not Schedule.objects.exists()


def test_names_are_unique_per_tenant_not_across_tenants(tenant_a: Tenant, tenant_b: Tenant) -> None:
    create(tenant_a, cron="0 9 * * *")
    create(tenant_b, cron="0 9 * * *")
    with pytest.raises(Conflict):
        create(tenant_a, interval_seconds=60)
    assert Schedule.objects.count() == 2


def test_another_tenants_schedule_is_not_found(tenant_a: Tenant, tenant_b: Tenant) -> None:
    theirs = create(tenant_b, cron="0 9 * * *")
    for call in (svc.schedule_pause, svc.schedule_resume, svc.schedule_delete):
        with pytest.raises(NotFound):
            call(tenant=tenant_a, schedule_id=theirs.pk)
    with pytest.raises(NotFound):
        svc.schedule_update(tenant=tenant_a, schedule_id=theirs.pk, cron="* * * * *")
    theirs.refresh_from_db()
    assert (theirs.cron, theirs.paused) == ("0 9 * * *", False)


def test_giving_cron_to_an_interval_schedule_replaces_the_interval(tenant_a: Tenant) -> None:
    schedule = create(tenant_a, interval_seconds=60)
    changed = svc.schedule_update(tenant=tenant_a, schedule_id=schedule.pk, cron="0 9 * * *", timezone="Asia/Tokyo")
    assert (changed.cron, changed.interval_seconds, changed.timezone) == ("0 9 * * *", None, "Asia/Tokyo")
    assert changed.next_fire_at.astimezone(svc.time_zone("Asia/Tokyo")).hour == 9


# Firing ---------------------------------------------------------------------------------------


def make_due(schedule: Schedule, ago: timedelta = timedelta(milliseconds=1)) -> datetime:
    due = timezone.now() - ago
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=due)
    return due


def fired_by(schedule: Schedule) -> list[Execution]:
    return list(Execution.objects.filter(schedule=schedule).order_by("created_at"))


def test_a_due_schedule_fires_one_execution_with_the_schedule_as_origin(tenant_a: Tenant) -> None:
    schedule = create(tenant_a, interval_seconds=3600)
    due = make_due(schedule)
    [firing] = svc.schedules_fire_due()
    assert firing.outcome == "submitted"
    [execution] = fired_by(schedule)
    assert (execution.origin, execution.input, execution.state) == ("schedule", SLOW, "queued")
    assert execution.metadata["schedule"]["scheduled_at"] == due.isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )
    schedule.refresh_from_db()
    assert schedule.next_fire_at > timezone.now()
    assert svc.schedules_fire_due() == []  # not due any more: no second firing of the same time


def test_overlap_skip_submits_nothing_while_the_last_firing_is_unfinished(tenant_a: Tenant) -> None:
    schedule = create(tenant_a, interval_seconds=60, overlap="skip")
    make_due(schedule)
    svc.schedules_fire_due()
    make_due(schedule)
    [firing] = svc.schedules_fire_due()
    assert firing.outcome == "skipped"
    assert len(fired_by(schedule)) == 1
    # Once it has ended, the next time fires again.
    Execution.objects.filter(schedule=schedule).update(state=Execution.State.COMPLETED)
    make_due(schedule)
    assert [f.outcome for f in svc.schedules_fire_due()] == ["submitted"]
    assert len(fired_by(schedule)) == 2


def test_overlap_queue_submits_beside_the_unfinished_one(tenant_a: Tenant) -> None:
    schedule = create(tenant_a, interval_seconds=60, overlap="queue")
    for _ in range(3):
        make_due(schedule)
        svc.schedules_fire_due()
    assert [e.state for e in fired_by(schedule)] == ["queued"] * 3


def test_overlap_cancel_previous_cancels_the_unfinished_then_submits(tenant_a: Tenant) -> None:
    schedule = create(tenant_a, interval_seconds=60, overlap="cancel_previous")
    make_due(schedule)
    svc.schedules_fire_due()
    make_due(schedule)
    [firing] = svc.schedules_fire_due()
    first, second = fired_by(schedule)
    assert first.state == "cancelled"
    assert "newer firing" in first.cancel_reason
    assert second.state == "queued"
    assert firing.execution_id == second.pk
    # Another execution of the tenant, not of this schedule, is left alone.
    other, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input=SLOW)
    make_due(schedule)
    svc.schedules_fire_due()
    other.refresh_from_db()
    assert other.state == "queued"


def test_after_downtime_missed_times_fire_once_for_the_earliest_then_regular_times(tenant_a: Tenant) -> None:
    schedule = create(tenant_a, interval_seconds=60, overlap="queue")
    # Down since a time on its grid, ten whole minutes (and a part of one) ago: ten more missed.
    missed_since = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=10)
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=missed_since)
    [firing] = svc.schedules_fire_due()
    assert (firing.outcome, firing.scheduled_at, firing.missed) == ("submitted", missed_since, 10)
    [execution] = fired_by(schedule)
    assert execution.metadata["schedule"]["missed"] == 10
    schedule.refresh_from_db()
    now = timezone.now()
    assert now < schedule.next_fire_at <= now + timedelta(seconds=60)
    assert schedule.next_fire_at.second == 0  # back on its regular times
    assert svc.schedules_fire_due() == []


def test_a_paused_schedule_fires_nothing_and_resumes_without_catching_up(tenant_a: Tenant) -> None:
    schedule = create(tenant_a, interval_seconds=60)
    make_due(schedule)
    paused = svc.schedule_pause(tenant=tenant_a, schedule_id=schedule.pk)
    assert (paused.paused, paused.next_fire_at, svc.next_runs(paused)) == (True, None, [])
    assert svc.schedules_fire_due() == []
    resumed = svc.schedule_resume(tenant=tenant_a, schedule_id=schedule.pk)
    assert resumed.next_fire_at > timezone.now()
    assert svc.schedules_fire_due() == []
    assert fired_by(schedule) == []


def test_a_firing_refused_by_the_tenants_quota_is_recorded_not_raised(tenant_a: Tenant) -> None:
    schedule = create(tenant_a, interval_seconds=60, overlap="queue")
    tenant_set_limits(tenant=tenant_a, changes={"max_queued": 1})
    make_due(schedule)
    assert [f.outcome for f in svc.schedules_fire_due()] == ["submitted"]
    make_due(schedule)
    [firing] = svc.schedules_fire_due()  # one queued already: the tenant's max_queued refuses it
    assert firing.outcome == "refused"
    schedule.refresh_from_db()
    assert schedule.last_error["code"] == "quota_exceeded"
    assert schedule.last_error["details"]["limit"] == "max_queued"
    assert schedule.next_fire_at > timezone.now()  # the clock went on
    assert len(fired_by(schedule)) == 1
    # Room again, the next firing goes through and clears the error.
    Execution.objects.filter(schedule=schedule).update(state=Execution.State.COMPLETED)
    make_due(schedule)
    assert [f.outcome for f in svc.schedules_fire_due()] == ["submitted"]
    schedule.refresh_from_db()
    assert schedule.last_error is None


def test_a_refused_cancel_previous_firing_leaves_the_previous_execution_running(tenant_a: Tenant) -> None:
    schedule = create(tenant_a, interval_seconds=60, overlap="cancel_previous")
    make_due(schedule)
    svc.schedules_fire_due()
    tenant_set_limits(tenant=tenant_a, changes={"executions_per_day": 1})
    make_due(schedule)
    [firing] = svc.schedules_fire_due()
    assert firing.outcome == "refused"
    [only] = fired_by(schedule)
    assert only.state == "queued"  # the cancel was undone with the refused submission


def test_one_tenants_schedule_fires_for_that_tenant_only(tenant_a: Tenant, tenant_b: Tenant) -> None:
    mine = create(tenant_a, interval_seconds=60)
    make_due(mine)
    svc.schedules_fire_due()
    assert Execution.objects.filter(tenant=tenant_a).count() == 1
    assert Execution.objects.filter(tenant=tenant_b).count() == 0


def test_deleting_a_schedule_keeps_its_executions(tenant_a: Tenant) -> None:
    schedule = create(tenant_a, interval_seconds=60)
    make_due(schedule)
    svc.schedules_fire_due()
    svc.schedule_delete(tenant=tenant_a, schedule_id=schedule.pk)
    [execution] = Execution.objects.filter(tenant=tenant_a)
    assert (execution.schedule_id, execution.origin) == (None, "schedule")


# The ticker -----------------------------------------------------------------------------------


def test_the_ticker_sleeps_until_the_next_due_time_at_most_its_poll(
    tenant_a: Tenant, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from executions.runtime import scheduler

    # The test's connection holds its transaction: the ticker must not close it between looks.
    monkeypatch.setattr(scheduler, "close_old_connections", lambda: None)
    monkeypatch.setattr(scheduler, "give_back", lambda: None)
    settings.ENACT_SCHEDULE_POLL_SECONDS = 5.0
    ticker = scheduler.Ticker()
    assert ticker.tick() == 5.0  # no schedules
    schedule = create(tenant_a, interval_seconds=3600)
    assert ticker.tick() == 5.0  # an hour away at most: the poll caps the sleep
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=timezone.now() + timedelta(seconds=2))
    assert 1.5 < ticker.tick() <= 2.01
    make_due(schedule)
    ticker.tick()
    assert len(fired_by(schedule)) == 1


def test_an_idle_tick_reads_and_writes_nothing_else(tenant_a: Tenant) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    create(tenant_a, interval_seconds=3600)
    with CaptureQueriesContext(connection) as queries:
        assert svc.schedules_fire_due() == []
        svc.schedules_next_due()
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 2, statements
    assert not [s for s in statements if "SAVEPOINT" in s or "UPDATE" in s], statements
