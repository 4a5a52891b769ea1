"""``manage.py enact <command>``: what operators script (API.md, "Command line").

A thin interface: each subcommand parses its arguments, calls one service or selector, and
prints. Domain errors become one-line ``CommandError``s, which Django prints to stderr (exit 1);
argparse refuses malformed arguments itself (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from enact_platform.errors import NotFound, PlatformError
from executions.kernel.events import TERMINAL_EVENT_TYPES
from executions.kernel.ids import IdKind, is_valid_id
from executions.live.groups import STATE_AFTER_EVENT
from executions.management.derive import add_derive_commands, derive_handlers
from executions.management.schedules import add_schedule_commands, schedule_handlers
from executions.models import Execution, ExecutionEvent
from executions.ops.retention import executions_sweep
from executions.selectors import execution_events, execution_list
from executions.services.controls import execution_cancel
from executions.services.submit import execution_submit
from tenants.models import ApiKey, TenantLimits
from tenants.selectors import tenant_get
from tenants.services import LIMIT_FIELDS, api_key_create, tenant_create, tenant_secret_set, tenant_set_limits

POLL_SECONDS = 0.2
EVENT_BATCH = 500
SUMMARY_WIDTH = 80
INTERRUPTED = 130  # what shells report for a program stopped by Ctrl-C

S = Execution.State
TERMINAL_EVENTS = frozenset(t.value for t in TERMINAL_EVENT_TYPES)


# --- argument types ------------------------------------------------------------------------
# argparse reports an ArgumentTypeError as "argument --x: <message>" and exits 2.


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"invalid JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}"
        ) from None


def _whole(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of US dollars") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"must be an amount of at least 0, not {text}")
    return value


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Also accept ``none``: the limit is lifted."""

    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    return parse_or_none


def _durability(text: str) -> str:
    if text not in TenantLimits.Durability.values:
        raise argparse.ArgumentTypeError(f"must be one of {', '.join(TenantLimits.Durability.values)}, not {text!r}")
    return text


# (option, TenantLimits field, type, metavar, help)
LIMIT_OPTIONS: tuple[tuple[str, str, Callable[[str], Any], str, str], ...] = (
    ("--max-concurrent", "max_concurrent_executions", _whole(1), "N", "executions running at once"),
    ("--max-queued", "max_queued", _whole(1), "N", "executions waiting for a slot at most; more are refused"),
    ("--weight", "weight", _whole(1), "W", "share of the workers' slots against other tenants (default 1)"),
    ("--max-steps", "max_steps", _or_none(_whole(1)), "N", "steps per execution, or none"),
    ("--max-tokens", "max_tokens", _or_none(_whole(1)), "N", "tokens per execution, or none"),
    ("--max-wall-time", "max_wall_time_s", _or_none(_seconds), "S", "seconds per execution, or none"),
    ("--max-cost", "max_cost_usd", _or_none(_usd), "USD", "US dollars per execution, or none"),
    ("--per-day", "executions_per_day", _or_none(_whole(0)), "N", "executions per UTC day, or none"),
    (
        "--requests-per-minute",
        "requests_per_minute",
        _or_none(_whole(1)),
        "N",
        "API requests per key a minute, or none",
    ),
    ("--durability", "durability", _durability, "MODE", "sync (each step stored before the next) or async"),
)


# --- subcommands -------------------------------------------------------------------------------


def _add_tenant_commands(commands: Any) -> None:
    p = commands.add_parser("tenant-create", help="create a tenant with default limits")
    p.add_argument("slug")
    p.add_argument("--name", default="", help="display name (default: the slug)")

    p = commands.add_parser("key-create", help="create an API key; the key alone on the last line")
    p.add_argument("slug")
    p.add_argument("--scope", choices=ApiKey.Scope.values, default=ApiKey.Scope.READ)
    p.add_argument("--name", default="", help="a label to tell keys apart")

    p = commands.add_parser("secret-set", help="store a tenant secret (a provider key), read from standard input")
    p.add_argument("slug")
    p.add_argument("name", help="the name blueprints use (api_key_secret, auth_secret)")

    p = commands.add_parser("limits", help="show, or set, a tenant's limits")
    p.add_argument("slug")
    for option, limit, parse, metavar, text in LIMIT_OPTIONS:
        p.add_argument(option, dest=limit, type=parse, default=argparse.SUPPRESS, metavar=metavar, help=text)


def _add_execution_commands(commands: Any) -> None:
    p = commands.add_parser("submit", help="submit an execution and print its id")
    p.add_argument("slug")
    p.add_argument("blueprint")
    p.add_argument("--input", type=_json, default={}, metavar="JSON", help="the input (default: {})")
    p.add_argument("--watch", action="store_true", help="follow it live until it ends")

    p = commands.add_parser("watch", help="follow an execution live until it ends")
    p.add_argument("execution_id", metavar="execution-id")

    p = commands.add_parser("cancel", help="cancel an execution")
    p.add_argument("execution_id", metavar="execution-id")
    p.add_argument("--reason", default="")

    commands.add_parser("sweep", help="delete ended executions past their tenant's retention, and say what went")

    p = commands.add_parser("list", help="list a tenant's executions, newest first")
    p.add_argument("slug")
    p.add_argument("--state", choices=S.values)
    p.add_argument("--limit", type=_whole(1), default=50, metavar="N", help="at most N rows (default 50)")


# --- the command -----------------------------------------------------------------------------


class Command(BaseCommand):
    help = (
        "Operate the platform: tenants, API keys, secrets, limits, executions (submit, watch, cancel, list), "
        "schedules. Given --url URL [--key KEY] first: a platform's API instead, from any machine "
        "(the client's command line, enact-remote; --url URL --help lists its commands)."
    )
    stealth_options = ("stdin",)  # tests hand secret-set its standard input

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")
        _add_tenant_commands(commands)
        _add_execution_commands(commands)
        add_derive_commands(commands)
        add_schedule_commands(commands)

    def run_from_argv(self, argv: list[str]) -> None:
        # Remote mode: ``enact --url URL [--key KEY] <command> …`` is the client's command line
        # (enact_client.cli), through the API of the platform at URL instead of this database.
        if len(argv) > 2 and argv[2].split("=", 1)[0] in ("--url", "--key"):
            sys.exit(_remote(argv[2:], prog=f"{argv[0]} {argv[1]}"))
        super().run_from_argv(argv)

    def handle(self, *args: Any, **options: Any) -> None:
        handlers: dict[str, Callable[[dict[str, Any]], None]] = {
            "tenant-create": self.cmd_tenant_create,
            "key-create": self.cmd_key_create,
            "limits": self.cmd_limits,
            "secret-set": self.cmd_secret_set,
            "submit": self.cmd_submit,
            "watch": self.cmd_watch,
            "cancel": self.cmd_cancel,
            "list": self.cmd_list,
            "sweep": self.cmd_sweep,
            **derive_handlers(self),
            **schedule_handlers(self),
        }
        try:
            handlers[options["command"]](options)
        except PlatformError as exc:
            raise CommandError(_error_line(exc)) from None

    # --- tenants ------------------------------------------------------------------------------

    def cmd_tenant_create(self, options: dict[str, Any]) -> None:
        tenant = tenant_create(slug=options["slug"], name=options["name"])
        self.stdout.write(f"Created tenant {tenant.slug} ({tenant.name}) with default limits.")

    def cmd_key_create(self, options: dict[str, Any]) -> None:
        tenant = tenant_get(slug=options["slug"])
        key, raw = api_key_create(tenant=tenant, scope=options["scope"], name=options["name"])
        label = f" {key.name!r}" if key.name else ""
        self.stdout.write(f"Created {key.scope} API key{label} ({key.prefix}) for tenant {tenant.slug}.")
        self.stdout.write("It is shown only this once:")
        self.stdout.write(raw)

    def cmd_secret_set(self, options: dict[str, Any]) -> None:
        # From standard input, never the command line, which other users of the machine can read.
        tenant = tenant_get(slug=options["slug"])
        value = (options.get("stdin") or sys.stdin).read().strip()
        tenant_secret_set(tenant=tenant, name=options["name"], value=value)
        self.stdout.write(
            f"Stored secret {options['name']} of tenant {tenant.slug} (encrypted; it is not shown again)."
        )

    def cmd_limits(self, options: dict[str, Any]) -> None:
        tenant = tenant_get(slug=options["slug"])
        changes = {limit: options[limit] for _, limit, *_ in LIMIT_OPTIONS if limit in options}
        limits = tenant_set_limits(tenant=tenant, changes=changes) if changes else tenant.limits
        self._show_limits(limits)

    def _show_limits(self, limits: TenantLimits) -> None:
        for name in LIMIT_FIELDS:
            self.stdout.write(f"{name}: {_display(getattr(limits, name))}")

    # --- executions ---------------------------------------------------------------------------

    def cmd_submit(self, options: dict[str, Any]) -> None:
        tenant = tenant_get(slug=options["slug"])
        execution, _ = execution_submit(tenant=tenant, blueprint=options["blueprint"], input=options["input"])
        self.stdout.write(execution.pk)
        if options["watch"]:
            self.stdout.flush()
            self._follow(execution)

    def cmd_watch(self, options: dict[str, Any]) -> None:
        self._follow(_execution_by_id(options["execution_id"]))

    def cmd_sweep(self, options: dict[str, Any]) -> None:
        removed = executions_sweep(seconds=3600.0)
        if not removed:
            self.stdout.write("Nothing is past its retention.")
        for slug, counts in sorted(removed.items()):
            self.stdout.write(
                f"{slug}: {counts['executions']} executions, {counts['events']} events, {counts['steps']} steps, "
                f"{counts['artifacts']} artifacts ({counts['artifact_bytes']} bytes)"
            )

    def cmd_cancel(self, options: dict[str, Any]) -> None:
        execution = _execution_by_id(options["execution_id"])
        execution = execution_cancel(
            tenant=execution.tenant, execution_id=execution.pk, reason=options["reason"], actor="cli"
        )
        if execution.is_terminal:
            self.stdout.write(f"{execution.pk} {execution.state}")
        else:  # a worker holds it: the request is recorded and its worker stops it
            self.stdout.write(f"{execution.pk} cancel requested ({execution.state})")

    def cmd_list(self, options: dict[str, Any]) -> None:
        tenant = tenant_get(slug=options["slug"])
        rows = list(execution_list(tenant=tenant, state=options["state"])[: options["limit"]])
        if not rows:
            self.stdout.write(f"no executions for {tenant.slug}")
            return
        table = [("ID", "BLUEPRINT", "STATE", "CREATED", "ENDED")]
        table += [(e.pk, e.blueprint, e.state, _time(e.created_at), _time(e.ended_at)) for e in rows]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        for row in table:
            self.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())

    # --- following an execution ---------------------------------------------------------------

    def _follow(self, execution: Execution) -> None:
        """Print the execution's events as they are stored until the terminal one."""
        try:
            progress = self._follow_until_ended(execution)
        except KeyboardInterrupt:
            # Watching only reads: stopping it leaves the execution as it is.
            raise CommandError(f"stopped watching {execution.pk}; it goes on", returncode=INTERRUPTED) from None
        if progress.state != S.COMPLETED:
            because = f": {progress.outcome}" if progress.outcome else ""
            raise CommandError(f"execution {execution.pk} {progress.state}{because}")

    def _follow_until_ended(self, execution: Execution) -> Progress:
        execution.refresh_from_db(fields=["state"])
        self.stdout.write(
            f"watching {execution.pk} (tenant {execution.tenant.slug}, blueprint {execution.blueprint}), now {execution.state}"
        )
        # Every execution starts queued; replaying its events from the first brings it up to date.
        progress = Progress(state=S.QUEUED)
        while not self._poll(execution, progress):
            _wait()
        return progress

    def _poll(self, execution: Execution, progress: Progress) -> bool:
        """Print what is new; True once the execution has ended."""
        # The row is read before the events: the state and its event commit together, so a
        # terminal row with no terminal event after it means there never will be one.
        state = Execution.objects.filter(pk=execution.pk).values_list("state", flat=True).first()
        events = execution_events(
            tenant=execution.tenant, execution_id=execution.pk, after=progress.last_seq, limit=EVENT_BATCH
        )
        for event in events:
            self.stdout.write(_event_line(event, progress.step_names))
            if progress.apply(event):
                self.stdout.write(progress.line())
        self.stdout.flush()
        if progress.ended:
            return True
        if state is None or (not events and state in Execution.TERMINAL):
            progress.state, progress.ended = state or "deleted", True
            self.stdout.write(progress.line())
            return True
        return False


@dataclass
class Progress:
    """What the events seen so far say about the execution."""

    state: str
    last_seq: int = 0
    steps_done: int = 0
    ended: bool = False
    outcome: str = ""
    step_names: dict[str, str] = field(default_factory=dict)

    def apply(self, event: ExecutionEvent) -> bool:
        """Take in one event; True if the steps done or the state changed."""
        self.last_seq = event.seq
        data = event.data if isinstance(event.data, dict) else {}
        if event.step_id and "name" in data:
            self.step_names[event.step_id] = str(data["name"])
        before = (self.steps_done, self.state)
        if event.type == "data-step-end":
            self.steps_done += 1
        self.state = STATE_AFTER_EVENT.get(event.type, self.state)  # its row may already be further along
        if event.type in TERMINAL_EVENTS:
            self.ended = True
        if event.type == "data-execution-failed":
            self.outcome = _error_text(data.get("error"))
        elif event.type == "data-execution-cancelled":
            self.outcome = str(data.get("reason") or "")
        return (self.steps_done, self.state) != before

    def line(self) -> str:
        steps = f"{self.steps_done} step{'' if self.steps_done == 1 else 's'} done"
        waiting = "; still watching (Ctrl-C stops watching, not the execution)"
        return f"-- {steps}, {self.state}" + (waiting if self.state in (S.PAUSED, S.WAITING) else "")


def _remote(argv: list[str], prog: str) -> int:
    try:
        # Imported on use: only remote mode needs the client, a package of its own (client/).
        from enact_client.cli import main
    except ImportError:
        sys.path.insert(0, str(settings.BASE_DIR / "client"))  # not installed: the repository's copy
        # Imported on use, as above.
        from enact_client.cli import main
    return main(argv, prog=prog)


def _wait() -> None:
    time.sleep(POLL_SECONDS)


def _execution_by_id(execution_id: str) -> Execution:
    # An operator tool reads across tenants: the id alone finds the execution, and its tenant
    # is then the explicit tenant of every service called on it.
    execution = None
    if is_valid_id(execution_id, IdKind.EXECUTION):
        execution = Execution.objects.select_related("tenant").filter(pk=execution_id).first()
    if execution is None:
        raise NotFound(f"execution not found: {execution_id!r}")
    return execution


# --- formatting ------------------------------------------------------------------------------


def _error_line(exc: PlatformError) -> str:
    # List-valued details say what is allowed or what is wrong (known graphs, invalid fields). An
    # input's schema errors are {path, message}: the message names the first; the others follow.
    listed = []
    for key, value in exc.details.items():
        if key == "errors" and isinstance(value, list):
            said = [str(e["message"]) for e in value if isinstance(e, dict) and "message" in e]
            others = [message for message in said if message not in exc.message]
            if others:
                listed.append(f"also: {', '.join(others)}")
        elif isinstance(value, list):
            listed.append(f"{key}: {', '.join(map(str, value))}")
    line = f"{exc.code}: {exc.message}"
    return f"{line} ({'; '.join(listed)})" if listed else line


def _display(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, Decimal):
        return f"{value.normalize():f}"
    return str(value)


def _time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _event_line(event: ExecutionEvent, step_names: dict[str, str]) -> str:
    data = event.data if isinstance(event.data, dict) else {}
    name = str(data.get("name") or step_names.get(event.step_id, ""))
    summary = _summary(event.type, data)
    return f"#{event.seq} {event.type}" + (f" {name}" if name else "") + (f": {summary}" if summary else "")


def _summary(event_type: str, data: dict[str, Any]) -> str:
    summarize = SUMMARIES.get(event_type)
    if summarize is not None:
        return summarize(data)
    return "" if not data else _short(data)


def _short(value: Any, width: int = SUMMARY_WIDTH) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def _error_text(error: Any) -> str:
    if not isinstance(error, dict):
        return _short(error)
    category = f"{error['category']}: " if error.get("category") else ""
    return f"{category}{error.get('message', '')}"


def _ms(data: dict[str, Any]) -> str:
    return f" ({data['duration_ms']} ms)" if data.get("duration_ms") is not None else ""


def _waiting(data: dict[str, Any]) -> str:
    detail = data.get("detail")
    if isinstance(detail, dict) and detail.get("prompt") is not None:
        detail = detail["prompt"]
    return f"waiting for {data.get('reason', '?')}" + (f": {_short(detail)}" if detail else "")


def _step_start(data: dict[str, Any]) -> str:
    attempt = data.get("attempt") or 1
    return f"attempt {attempt}" if attempt > 1 else ""


SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "data-execution-start": lambda d: "",
    "data-step-start": _step_start,
    "data-step-end": lambda d: f"output {_short(d.get('output'))}{_ms(d)}",
    "data-step-failed": lambda d: f"error {_error_text(d.get('error'))}",
    "data-execution-paused": lambda d: f"reason: {d.get('reason') or '-'}",
    "data-execution-resumed": lambda d: "",
    "data-execution-waiting": _waiting,
    "data-execution-input-received": lambda d: f"input {_short(d.get('input'))}",
    "data-execution-end": lambda d: f"output {_short(d.get('output'))}{_ms(d)}",
    "data-execution-failed": lambda d: f"error {_error_text(d.get('error'))}",
    "data-execution-cancelled": lambda d: f"reason: {d.get('reason') or '-'}",
    "data-artifact-created": lambda d: f"{d.get('name')} ({d.get('artifact_type')}, {d.get('size')} bytes)",
    "data-checkpoint": lambda d: f"covers #{d.get('covers_seq')}, next {', '.join(d.get('nodes') or []) or '-'}",
    "data-text-delta": lambda d: _short(d.get("delta", "")),
    "data-usage": lambda d: f"{d.get('total_tokens', 0)} tokens, ${d.get('cost_usd', 0)}",
}
