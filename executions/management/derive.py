"""``enact rerun`` and ``enact fork``: a new execution from another one (services.derive). Kept
beside ``commands/enact.py``, which adds these subcommands and hands them their arguments."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from django.core.management.base import BaseCommand

from executions.services.derive import KEEP, execution_fork, execution_rerun
from tenants.selectors import tenant_get


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None


def add_derive_commands(commands: Any) -> None:
    p = commands.add_parser("rerun", help="run an execution again: its blueprint version and input; prints the new id")
    p.add_argument("slug")
    p.add_argument("execution_id", metavar="execution-id")

    p = commands.add_parser(
        "fork", help="start a new execution from one of an execution's steps (it runs again); prints the new id"
    )
    p.add_argument("slug")
    p.add_argument("execution_id", metavar="execution-id")
    p.add_argument("--from-step", required=True, metavar="STEP", help="the id of the step to start from")
    p.add_argument("--state", type=_json, default=KEEP, metavar="JSON", help="the state to give that step instead")


def derive_handlers(command: BaseCommand) -> dict[str, Callable[[dict[str, Any]], None]]:
    out = command.stdout

    def rerun(options: dict[str, Any]) -> None:
        tenant = tenant_get(slug=options["slug"])
        execution, _ = execution_rerun(tenant=tenant, execution_id=options["execution_id"])
        out.write(execution.pk)

    def fork(options: dict[str, Any]) -> None:
        tenant = tenant_get(slug=options["slug"])
        execution, _ = execution_fork(
            tenant=tenant,
            execution_id=options["execution_id"],
            from_step=options["from_step"],
            state=options["state"],
        )
        out.write(execution.pk)

    return {"rerun": rerun, "fork": fork}
