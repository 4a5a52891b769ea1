"""``manage.py enact schedule-*``: create, list, pause, resume, delete; errors name the field."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from executions.models import Schedule
from tenants.models import Tenant


def run(*args: str) -> list[str]:
    out, err = StringIO(), StringIO()
    call_command("enact", *args, stdout=out, stderr=err)
    assert err.getvalue() == ""
    return out.getvalue().splitlines()


def fails(*args: str) -> str:
    with pytest.raises(CommandError) as failed:
        call_command("enact", *args, stdout=StringIO(), stderr=StringIO())
    return str(failed.value)


def test_create_a_cron_schedule_and_see_its_next_times(tenant_a: Tenant) -> None:
    lines = run(
        "schedule-create", "acme", "nightly", "demo.slow",
        "--cron", "30 2 * * *", "--tz", "Europe/Paris",
        "--input", '{"steps": 1, "seconds": 0}', "--overlap", "cancel_previous",
    )  # fmt: skip
    schedule = Schedule.objects.get(tenant=tenant_a, name="nightly")
    assert (schedule.cron, schedule.timezone, schedule.overlap, schedule.input) == (
        "30 2 * * *", "Europe/Paris", "cancel_previous", {"steps": 1, "seconds": 0},
    )  # fmt: skip
    assert lines[0].startswith(f"Created schedule nightly ({schedule.pk}) of tenant acme: demo.slow, cron '30 2 * * *'")
    assert len([line for line in lines if line.startswith("  next: ")]) == 5


def test_create_an_interval_schedule_list_pause_resume_delete(tenant_a: Tenant, tenant_b: Tenant) -> None:
    run("schedule-create", "acme", "often", "demo.slow", "--every", "60", "--input", '{"steps": 1, "seconds": 0}')
    run("schedule-create", "globex", "theirs", "demo.slow", "--every", "60", "--input", '{"steps": 1, "seconds": 0}')
    [line] = run("schedule-list", "acme")
    assert line.startswith("often  sched_")
    assert "every 60 s, overlap skip, next " in line
    assert run("schedule-pause", "acme", "often")[0].endswith("paused")
    assert Schedule.objects.get(name="often").paused
    assert "next " in run("schedule-resume", "acme", "often")[0]
    # Another tenant's schedule is not reachable by name from this one.
    assert "no schedule named 'theirs'" in fails("schedule-pause", "acme", "theirs")
    assert run("schedule-delete", "acme", "often") == ["Deleted schedule often of tenant acme (its executions stay)."]
    assert run("schedule-list", "acme") == ["No schedules."]
    assert Schedule.objects.filter(name="theirs", paused=False).exists()


def test_bad_input_fails_naming_the_field_and_creates_nothing(tenant_a: Tenant) -> None:
    assert "cron: [61 * * * *] is not acceptable, out of range" in fails(
        "schedule-create", "acme", "bad", "demo.slow", "--cron", "61 * * * *", "--input", '{"steps": 1, "seconds": 0}'
    )
    assert "timezone: 'Paris' is not an IANA time zone" in fails(
        "schedule-create", "acme", "bad", "demo.slow", "--cron", "0 9 * * *", "--tz", "Paris",
        "--input", '{"steps": 1, "seconds": 0}',
    )  # fmt: skip
    assert not Schedule.objects.exists()
