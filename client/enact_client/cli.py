"""``enact-remote`` (or ``python -m enact_client``): the platform's command line for a tenant's
developers, on their own machines, through the API.

    export ENACT_URL=https://enact.example.com ENACT_API_KEY=…   # or --url and --key
    enact-remote submit demo.slow --input '{"steps": 3, "seconds": 1}' --watch
    enact-remote list --state running
    enact-remote events exec_… --follow | jq .type

Output is for scripts: ``submit`` prints the id on its last line, ``get`` and the controls print
the execution as JSON, ``list`` one execution a line (``--json``: JSON Lines), ``events`` JSON
Lines. An error answer prints ``error: <code> (<status>): <message>`` and its details to stderr
and exits 1; bad arguments exit 2; ``watch`` and ``submit --watch`` exit 0 when the execution
completed, 1 when it failed or was cancelled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from enact_client._core import NO_BODY as NO_STATE
from enact_client._sync import Client
from enact_client.errors import EnactError
from enact_client.types import Event, Execution

INTERRUPTED = 130
STATES = ("queued", "running", "paused", "waiting", "completed", "failed", "cancelled")
SUMMARY_WIDTH = 100


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


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


def _connection_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """``--url`` and ``--key``, before or after the command name."""
    kwargs: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    parser.add_argument(
        "--url",
        metavar="URL",
        help="the platform's address, such as http://127.0.0.1:8000 (default: $ENACT_URL)",
        **({"default": os.environ.get("ENACT_URL")} if defaults else kwargs),
    )
    parser.add_argument(
        "--key",
        metavar="KEY",
        help="an API key of your tenant (default: $ENACT_API_KEY)",
        **({"default": os.environ.get("ENACT_API_KEY")} if defaults else kwargs),
    )


def build_parser(prog: str = "enact-remote") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="The Enact platform's API from the command line.")
    _connection_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    def command(name: str, text: str, aliases: Sequence[str] = ()) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=text, description=text, parents=[common], aliases=list(aliases))

    p = command("submit", "submit an execution; its id on the last line")
    p.add_argument("blueprint")
    p.add_argument("--input", type=_json, default={}, metavar="JSON", help="the input (default: {})")
    p.add_argument("--version", type=_whole(1), metavar="N", help="a version of the blueprint (default: the latest)")
    p.add_argument("--idempotency-key", metavar="KEY", help="a repeated key returns the first execution")
    p.add_argument("--metadata", type=_json, metavar="JSON", help="a JSON object kept with the execution")
    p.add_argument("--webhook", metavar="URL", help="a URL called, signed, when it ends")
    p.add_argument("--json", action="store_true", help="print the execution as JSON")
    p.add_argument("--watch", action="store_true", help="then follow it live until it ends")

    p = command("rerun", "run an execution again: same blueprint version and input; the new id")
    p.add_argument("execution_id", metavar="execution-id")
    p.add_argument("--watch", action="store_true", help="then follow it live until it ends")

    p = command("fork", "a new execution from the checkpoint before one of an execution's steps; the new id")
    p.add_argument("execution_id", metavar="execution-id")
    p.add_argument("--from-step", required=True, metavar="STEP-ID", help="the step it starts from (it runs again)")
    p.add_argument(
        "--state", type=_json, default=argparse.SUPPRESS, metavar="JSON", help="the state that step is given instead"
    )
    p.add_argument("--watch", action="store_true", help="then follow it live until it ends")

    p = command("get", "an execution, as JSON")
    p.add_argument("execution_id", metavar="execution-id")

    p = command("list", "executions, newest first: id, state, blueprint, created")
    p.add_argument("--state", choices=STATES)
    p.add_argument("--blueprint")
    p.add_argument("--created-after", metavar="TIME", help="ISO 8601")
    p.add_argument("--created-before", metavar="TIME", help="ISO 8601")
    p.add_argument("--q", metavar="TEXT", help="search")
    p.add_argument("--origin", choices=("submit", "child", "schedule", "rerun", "fork"), help="what started them")
    p.add_argument("--source", metavar="EXECUTION-ID", help="the reruns and forks of this execution")
    p.add_argument("--limit", type=_whole(0), default=50, metavar="N", help="at most N rows (default 50; 0: all)")
    p.add_argument("--json", action="store_true", help="one JSON object a line")

    for name, text in (("cancel", "cancel an execution"), ("pause", "pause an execution at its next step boundary")):
        p = command(name, text)
        p.add_argument("execution_id", metavar="execution-id")
        p.add_argument("--reason", default="")

    p = command("resume", "resume a paused execution")
    p.add_argument("execution_id", metavar="execution-id")

    p = command("answer", "answer an execution waiting for input or approval", aliases=["input"])
    p.add_argument("execution_id", metavar="execution-id")
    p.add_argument("--input", type=_json, metavar="JSON", help="the answer")
    verdict = p.add_mutually_exclusive_group()
    verdict.add_argument("--approve", dest="approve", action="store_true", default=None)
    verdict.add_argument("--reject", dest="approve", action="store_false")

    p = command("inbox", "post a message for the execution's next step boundary; its id")
    p.add_argument("execution_id", metavar="execution-id")
    message = p.add_mutually_exclusive_group(required=True)
    message.add_argument("--guidance", metavar="TEXT", help="guidance for the next step")
    message.add_argument("--message", type=_json, metavar="JSON", help='any message: {"kind": "evidence", …}')

    p = command("events", "an execution's events, one JSON object a line")
    p.add_argument("execution_id", metavar="execution-id")
    p.add_argument("--after", type=_whole(0), default=0, metavar="SEQ", help="only events after this seq")
    p.add_argument("--follow", action="store_true", help="stay for live events until the execution ends")

    p = command("watch", "follow an execution live until it ends, one line an event")
    p.add_argument("execution_id", metavar="execution-id")
    p.add_argument("--after", type=_whole(0), default=0, metavar="SEQ", help="only events after this seq")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "enact-remote", out: TextIO | None = None) -> int:
    parser = build_parser(prog)
    options = parser.parse_args(argv)
    if not options.url:
        parser.error("give the platform's address: --url URL (or set ENACT_URL)")
    out = out or sys.stdout
    try:
        with Client(options.url, options.key) as client:
            return COMMANDS[options.command](client, options, out)
    except EnactError as exc:
        print(_error_line(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return INTERRUPTED


def _error_line(exc: EnactError) -> str:
    where = f"{exc.code} ({exc.status})" if exc.status else exc.code
    line = f"error: {where}: {exc.message}"
    if exc.details:
        line += "\n" + json.dumps(exc.details, indent=2, sort_keys=True, default=str)
    return line


def _print_json(value: Any, out: TextIO) -> None:
    print(json.dumps(value, indent=2), file=out)


def cmd_submit(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    execution = client.submit(
        options.blueprint,
        options.input,
        version=options.version,
        idempotency_key=options.idempotency_key,
        metadata=options.metadata,
        webhook=options.webhook,
    )
    if options.json:
        _print_json(execution, out)
    else:
        print(execution["id"], file=out, flush=True)
    if options.watch:
        return _watch(client, execution["id"], 0, out)
    return 0


def cmd_rerun(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    return _started(client, client.rerun(options.execution_id), options.watch, out)


def cmd_fork(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    state = getattr(options, "state", NO_STATE)  # null is a state too
    execution = client.fork(options.execution_id, options.from_step, state=state)
    return _started(client, execution, options.watch, out)


def _started(client: Client, execution: Execution, watch: bool, out: TextIO) -> int:
    print(execution["id"], file=out, flush=True)
    return _watch(client, execution["id"], 0, out) if watch else 0


def cmd_get(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    _print_json(client.get(options.execution_id), out)
    return 0


def cmd_list(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    rows = client.list(
        state=options.state,
        blueprint=options.blueprint,
        created_after=options.created_after,
        created_before=options.created_before,
        q=options.q,
        origin=options.origin,
        source=options.source,
        page_size=min(options.limit, 200) if options.limit else 200,
    )
    for count, execution in enumerate(rows, start=1):
        if options.json:
            print(json.dumps(execution), file=out)
        else:
            print(_list_line(execution), file=out)
        if count == options.limit:
            break
    return 0


def _list_line(execution: Execution) -> str:
    return "\t".join((execution["id"], execution["state"], execution["blueprint"], execution["created_at"]))


def cmd_cancel(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    _print_json(client.cancel(options.execution_id, options.reason), out)
    return 0


def cmd_pause(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    _print_json(client.pause(options.execution_id, options.reason), out)
    return 0


def cmd_resume(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    _print_json(client.resume(options.execution_id), out)
    return 0


def cmd_answer(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    _print_json(client.answer(options.execution_id, options.input, approve=options.approve), out)
    return 0


def cmd_inbox(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    if options.guidance is not None:
        message_id = client.inbox(options.execution_id, "guidance", content=options.guidance)
    else:
        message = options.message
        if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
            print('error: --message must be a JSON object with its "kind"', file=sys.stderr)
            return 2
        fields = {k: v for k, v in message.items() if k != "kind"}
        message_id = client.inbox(options.execution_id, message["kind"], **fields)
    print(message_id, file=out)
    return 0


def cmd_events(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    events = (
        client.stream(options.execution_id, options.after)
        if options.follow
        else client.events(options.execution_id, after=options.after)
    )
    for event in events:
        print(json.dumps(event), file=out, flush=options.follow)
    return 0


def cmd_watch(client: Client, options: argparse.Namespace, out: TextIO) -> int:
    return _watch(client, options.execution_id, options.after, out)


def _watch(client: Client, execution_id: str, after: int, out: TextIO) -> int:
    for event in client.stream(execution_id, after):
        print(_event_line(event), file=out, flush=True)
    final = client.get(execution_id)
    print(f"{final['id']} {final['state']}", file=out, flush=True)
    return 0 if final["state"] == "completed" else 1


def _event_line(event: Event) -> str:
    data = event["data"]
    summary = json.dumps(data, separators=(",", ":"), default=str) if data else ""
    if len(summary) > SUMMARY_WIDTH:
        summary = summary[: SUMMARY_WIDTH - 1] + "…"
    return f"{event['seq']:>5}  {event['timestamp']}  {event['type']}  {summary}".rstrip()


COMMANDS: dict[str, Callable[[Client, argparse.Namespace, TextIO], int]] = {
    "submit": cmd_submit,
    "rerun": cmd_rerun,
    "fork": cmd_fork,
    "get": cmd_get,
    "list": cmd_list,
    "cancel": cmd_cancel,
    "pause": cmd_pause,
    "resume": cmd_resume,
    "answer": cmd_answer,
    "input": cmd_answer,
    "inbox": cmd_inbox,
    "events": cmd_events,
    "watch": cmd_watch,
}
