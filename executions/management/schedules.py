"""``enact schedule-*``: a tenant's schedules from the command line (``schedule-create``,
``schedule-list``, ``schedule-pause``, ``schedule-resume``, ``schedule-delete``). Kept beside
``commands/enact.py``, which adds these subcommands and hands them their arguments."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand

from executions.kernel.events import iso_timestamp
from executions.models import Schedule
from executions.services import schedules as svc
from tenants.selectors import tenant_get


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def _seconds(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of seconds, 1 or more, not {text!r}")
    return int(text)


def add_schedule_commands(commands: Any) -> None:
    p = commands.add_parser("schedule-create", help="schedule a blueprint: a cron expression or an interval")
    p.add_argument("slug")
    p.add_argument("name", help="the schedule's name, unique in the tenant")
    p.add_argument("blueprint")
    timing = p.add_mutually_exclusive_group(required=True)
    timing.add_argument("--cron", metavar="EXPR", help="a cron expression, e.g. '0 9 * * 1-5'")
    timing.add_argument("--every", type=_seconds, metavar="SECONDS", help="an interval instead of cron")
    p.add_argument("--tz", default="UTC", metavar="ZONE", help="the cron's IANA time zone (default UTC)")
    p.add_argument("--input", type=_json, default={}, metavar="JSON", help="each firing's input (default: {})")
    p.add_argument("--overlap", choices=Schedule.Overlap.values, default=Schedule.Overlap.SKIP)
    p.add_argument("--version", type=_seconds, metavar="N", help="pin a version of the blueprint")
    p.add_argument("--paused", action="store_true", help="create it paused")

    p = commands.add_parser("schedule-list", help="list a tenant's schedules and their next times")
    p.add_argument("slug")

    for action in ("pause", "resume", "delete"):
        p = commands.add_parser(f"schedule-{action}", help=f"{action} a schedule")
        p.add_argument("slug")
        p.add_argument("name")


def schedule_handlers(command: BaseCommand) -> dict[str, Callable[[dict[str, Any]], None]]:
    out = command.stdout

    def create(options: dict[str, Any]) -> None:
        tenant = tenant_get(slug=options["slug"])
        schedule = svc.schedule_create(
            tenant=tenant,
            name=options["name"],
            blueprint=options["blueprint"],
            version=options["version"],
            input=options["input"],
            timezone=options["tz"],
            overlap=options["overlap"],
            paused=options["paused"],
            **({"cron": options["cron"]} if options["cron"] is not None else {"interval_seconds": options["every"]}),
        )
        out.write(f"Created schedule {schedule.name} ({schedule.pk}) of tenant {tenant.slug}: {_line(schedule)}")
        for when in svc.next_runs(schedule):
            out.write(f"  next: {iso_timestamp(when)}")

    def listing(options: dict[str, Any]) -> None:
        rows = svc.schedule_list(tenant=tenant_get(slug=options["slug"])).order_by("name")
        for schedule in rows:
            out.write(f"{schedule.name}  {schedule.pk}  {_line(schedule)}")
        if not rows:
            out.write("No schedules.")

    def change(action: str) -> Callable[[dict[str, Any]], None]:
        def run(options: dict[str, Any]) -> None:
            tenant = tenant_get(slug=options["slug"])
            schedule = svc.schedule_get_by_name(tenant=tenant, name=options["name"])
            if action == "delete":
                svc.schedule_delete(tenant=tenant, schedule_id=schedule.pk)
                out.write(f"Deleted schedule {schedule.name} of tenant {tenant.slug} (its executions stay).")
                return
            call = svc.schedule_pause if action == "pause" else svc.schedule_resume
            schedule = call(tenant=tenant, schedule_id=schedule.pk)
            out.write(f"Schedule {schedule.name}: {_line(schedule)}")

        return run

    return {
        "schedule-create": create,
        "schedule-list": listing,
        "schedule-pause": change("pause"),
        "schedule-resume": change("resume"),
        "schedule-delete": change("delete"),
    }


def _line(schedule: Schedule) -> str:
    when = f"cron {schedule.cron!r} {schedule.timezone}" if schedule.cron else f"every {schedule.interval_seconds} s"
    version = f" v{schedule.blueprint_version}" if schedule.blueprint_version else ""
    state = (
        "paused" if schedule.paused else f"next {iso_timestamp(schedule.next_fire_at)}" if schedule.next_fire_at else ""
    )
    error = f", last refused: {schedule.last_error.get('message')}" if schedule.last_error else ""
    return f"{schedule.blueprint}{version}, {when}, overlap {schedule.overlap}, {state}{error}"
