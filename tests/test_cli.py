"""``manage.py enact``: every subcommand's output, its errors, and the exit statuses of a few real runs."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.forms.models import model_to_dict
from django.utils import timezone

from executions.kernel import ids
from executions.management.commands import enact
from executions.models import Execution, ExecutionEvent
from executions.runtime.run import execution_run
from executions.services.controls import execution_cancel
from executions.services.submit import execution_submit
from tenants.models import ApiKey, Tenant, TenantLimits
from tenants.services import LIMIT_FIELDS, api_key_authenticate

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> list[str]:
    out, err = StringIO(), StringIO()
    call_command("enact", *args, stdout=out, stderr=err)
    assert err.getvalue() == ""
    return out.getvalue().splitlines()


def fails(*args: str) -> CommandError:
    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("enact", *args, stdout=out, stderr=StringIO())
    return caught.value


def submit(tenant: Tenant, blueprint: str = "demo.chain", input: Any = None) -> Execution:
    execution, _ = execution_submit(tenant=tenant, blueprint=blueprint, input={"n": 3} if input is None else input)
    return execution


def add_events(execution: Execution, *events: tuple[str, dict[str, Any], str]) -> None:
    """Store events as a worker would: the next seqs of the execution's log."""
    last = ExecutionEvent.objects.filter(execution=execution).count()
    for offset, (event_type, data, step_id) in enumerate(events, start=1):
        ExecutionEvent.objects.create(
            id=ids.new_event_id(),
            execution=execution,
            tenant=execution.tenant,
            seq=last + offset,
            type=event_type,
            step_id=step_id,
            timestamp=timezone.now(),
            data=data,
        )


def without_durations(lines: list[str]) -> list[str]:
    return [re.sub(r"\(\d+ ms\)", "(N ms)", line) for line in lines]


# --- tenant-create ---------------------------------------------------------------------------


def test_tenant_create(db: None) -> None:
    assert run("tenant-create", "initech", "--name", "Initech") == [
        "Created tenant initech (Initech) with default limits."
    ]
    tenant = Tenant.objects.get(slug="initech")
    assert tenant.name == "Initech"
    assert TenantLimits.objects.get(tenant=tenant).max_concurrent_executions == 5
    assert run("tenant-create", "hooli") == ["Created tenant hooli (hooli) with default limits."]


@pytest.mark.parametrize(
    ("slug", "message"),
    [
        ("acme", "conflict: tenant 'acme' already exists"),
        ("Not A Slug", "invalid_input: invalid tenant slug 'Not A Slug': use lowercase letters, digits and dashes"),
    ],
)
def test_tenant_create_refuses_taken_and_invalid_slugs(tenant_a: Tenant, slug: str, message: str) -> None:
    assert str(fails("tenant-create", slug, "--name", "Other")) == message
    assert list(Tenant.objects.values_list("slug", "name")) == [("acme", "Acme")]


# --- key-create ------------------------------------------------------------------------------


def test_key_create_prints_the_key_alone_on_the_last_line(tenant_a: Tenant, tenant_b: Tenant) -> None:
    lines = run("key-create", "acme", "--scope", "write", "--name", "ci")
    key = ApiKey.objects.get()
    assert lines[:-1] == [
        f"Created write API key 'ci' ({key.prefix}) for tenant acme.",
        "It is shown only this once:",
    ]
    authenticated = api_key_authenticate(raw=lines[-1])
    assert authenticated is not None
    assert (authenticated.pk, authenticated.tenant, authenticated.scope) == (key.pk, tenant_a, "write")


def test_key_create_defaults_to_a_read_key(tenant_a: Tenant) -> None:
    lines = run("key-create", "acme")
    key = ApiKey.objects.get()
    assert lines[0] == f"Created read API key ({key.prefix}) for tenant acme."
    assert (key.scope, key.name) == ("read", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("key-create", "nope"), "not_found: tenant 'nope' not found"),
        (
            ("key-create", "acme", "--scope", "admin"),
            "Error: argument --scope: invalid choice: 'admin' (choose from 'read', 'write')",
        ),
    ],
)
def test_key_create_errors(tenant_a: Tenant, args: tuple[str, ...], message: str) -> None:
    assert str(fails(*args)) == message
    assert not ApiKey.objects.exists()


# --- limits ----------------------------------------------------------------------------------


def test_limits_shows_every_limit(tenant_a: Tenant) -> None:
    lines = run("limits", "acme")
    assert [line.split(": ")[0] for line in lines] == list(LIMIT_FIELDS)
    shown = dict(line.split(": ", 1) for line in lines)
    assert shown["max_concurrent_executions"] == "5"
    assert shown["max_steps"] == "1000"
    assert shown["max_wall_time_s"] == "3600.0"
    assert shown["max_cost_usd"] == "10"
    assert shown["cost_alert_threshold_usd"] == "none"
    assert shown["executions_per_day"] == "10000"
    assert shown["pii_masking"] == "False"


def test_limits_sets_then_shows(tenant_a: Tenant, tenant_b: Tenant) -> None:
    theirs = model_to_dict(TenantLimits.objects.get(tenant=tenant_b))
    lines = run(
        "limits", "acme", "--max-concurrent", "2", "--max-steps", "none", "--max-tokens", "500",
        "--max-wall-time", "30", "--max-cost", "2.5", "--per-day", "7",
    )  # fmt: skip
    shown = dict(line.split(": ", 1) for line in lines)
    assert list(shown) == list(LIMIT_FIELDS)
    assert {name: shown[name] for name in ("max_concurrent_executions", "max_steps", "max_tokens")} == {
        "max_concurrent_executions": "2",
        "max_steps": "none",
        "max_tokens": "500",
    }
    assert (shown["max_wall_time_s"], shown["max_cost_usd"], shown["executions_per_day"]) == ("30.0", "2.5", "7")
    limits = TenantLimits.objects.get(tenant=tenant_a)
    assert (limits.max_concurrent_executions, limits.max_steps, limits.max_tokens) == (2, None, 500)
    assert (limits.max_wall_time_s, limits.max_cost_usd, limits.executions_per_day) == (30.0, Decimal("2.5"), 7)
    assert model_to_dict(TenantLimits.objects.get(tenant=tenant_b)) == theirs
    assert run("limits", "acme") == lines


def test_limits_sets_the_durability(tenant_a: Tenant, tenant_b: Tenant) -> None:
    assert dict(line.split(": ", 1) for line in run("limits", "acme"))["durability"] == "sync"
    shown = dict(line.split(": ", 1) for line in run("limits", "acme", "--durability", "async"))
    assert shown["durability"] == "async"
    assert TenantLimits.objects.get(tenant=tenant_a).durability == "async"
    assert TenantLimits.objects.get(tenant=tenant_b).durability == "sync"


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--max-steps", "0", "Error: argument --max-steps: must be at least 1, not 0"),
        ("--max-tokens", "lots", "Error: argument --max-tokens: 'lots' is not a whole number"),
        ("--max-concurrent", "none", "Error: argument --max-concurrent: 'none' is not a whole number"),
        ("--per-day", "-1", "Error: argument --per-day: must be at least 0, not -1"),
        ("--max-wall-time", "0", "Error: argument --max-wall-time: must be a positive number of seconds, not 0"),
        ("--max-wall-time", "soon", "Error: argument --max-wall-time: 'soon' is not a number of seconds"),
        ("--max-cost", "-1", "Error: argument --max-cost: must be an amount of at least 0, not -1"),
        ("--max-cost", "NaN", "Error: argument --max-cost: must be an amount of at least 0, not NaN"),
        ("--durability", "fast", "Error: argument --durability: must be one of sync, async, not 'fast'"),
        (
            "--max-cost",
            "1.23456",
            "invalid_input: invalid limits (max_cost_usd: Ensure that there are no more than 4 decimal places.)",
        ),
        (
            "--max-wall-time",
            "0.0001",
            "invalid_input: invalid limits (max_wall_time_s: Ensure this value is greater than or equal to 0.001.)",
        ),
    ],
)
def test_limits_refuses_invalid_values_and_changes_nothing(
    tenant_a: Tenant, option: str, value: str, message: str
) -> None:
    before = model_to_dict(TenantLimits.objects.get(tenant=tenant_a))
    assert str(fails("limits", "acme", "--max-steps", "5", option, value)) == message
    assert model_to_dict(TenantLimits.objects.get(tenant=tenant_a)) == before


def test_secret_set_reads_the_value_from_standard_input(tenant_a: Tenant, tenant_b: Tenant) -> None:
    from tenants import secrets
    from tenants.models import TenantSecret

    out = StringIO()
    call_command("enact", "secret-set", "acme", "OPENAI_KEY", stdin=StringIO("sk-from-stdin\n"), stdout=out)
    assert out.getvalue().strip() == "Stored secret OPENAI_KEY of tenant acme (encrypted; it is not shown again)."
    assert "sk-from-stdin" not in out.getvalue().replace("OPENAI_KEY", "")
    row = TenantSecret.objects.get(tenant=tenant_a)
    assert secrets.decrypt(row.ciphertext) == "sk-from-stdin"
    assert not TenantSecret.objects.filter(tenant=tenant_b).exists()
    with pytest.raises(CommandError, match="a secret's value must be text"):
        call_command("enact", "secret-set", "acme", "EMPTY", stdin=StringIO(""), stdout=StringIO())
    with pytest.raises(CommandError, match="invalid secret"):
        call_command("enact", "secret-set", "acme", "not a name", stdin=StringIO("x"), stdout=StringIO())
    assert TenantSecret.objects.count() == 1


def test_limits_of_an_unknown_tenant(db: None) -> None:
    assert str(fails("limits", "nope")) == "not_found: tenant 'nope' not found"


# --- submit ----------------------------------------------------------------------------------


def test_submit_prints_the_id_and_enqueues(
    tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        lines = run("submit", "acme", "demo.chain", "--input", '{"n": 2}')
    execution = Execution.objects.get()
    assert lines == [execution.pk]
    assert (execution.tenant, execution.blueprint, execution.input, execution.state) == (
        tenant_a,
        "demo.chain",
        {"n": 2},
        "queued",
    )
    assert enqueued == [execution.pk]


def test_submit_without_input_sends_an_empty_object(tenant_a: Tenant, enqueued: list[str]) -> None:
    lines = run("submit", "acme", "demo.approval")
    assert Execution.objects.get(pk=lines[0]).input == {}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope", "demo.chain"), "not_found: tenant 'nope' not found"),
        (
            ("acme", "no.such.graph"),
            # Other test modules register graphs of their own; the built-in ones always lead.
            "invalid_input: unknown blueprint 'no.such.graph' (blueprints: demo.approval, demo.chain, demo.fanout, "
            "demo.flaky, demo.pipeline, demo.slow",
        ),
        (
            ("acme", "demo.chain", "--input", '{"n": 3'),
            "Error: argument --input: invalid JSON at line 1 column 8 (char 7): Expecting ',' delimiter",
        ),
        (
            ("acme", "demo.chain", "--input", '{\n  "n": 3,\n}'),
            "Error: argument --input: invalid JSON at line 3 column 1 (char 12): "
            "Expecting property name enclosed in double quotes",
        ),
        (("acme", "demo.chain", "--input", '{"n": 0}'), "invalid_input: input.n must be at least 1"),
        (("acme", "demo.chain", "--input", "[1]"), "invalid_input: input must be an object"),
    ],
)
def test_submit_errors_create_nothing(
    tenant_a: Tenant, enqueued: list[str], args: tuple[str, ...], message: str
) -> None:
    error = str(fails("submit", *args))
    assert error.startswith(message) if "unknown blueprint" in message else error == message
    assert not Execution.objects.exists()
    assert enqueued == []


# --- watch -----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)  # the worker's kernel works on a thread of its own
def test_watch_a_completed_run(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a, input={"n": 3})
    execution_run(execution.pk)
    lines = run("watch", execution.pk)
    assert without_durations(lines) == [
        f"watching {execution.pk} (tenant acme, blueprint demo.chain), now completed",
        "#1 data-execution-start",
        "-- 0 steps done, running",
        "#2 data-step-start n_1",
        "#3 data-step-end n_1: output 1 (N ms)",
        "-- 1 step done, running",
        "#4 data-checkpoint: covers #3, next n_2",
        "#5 data-step-start n_2",
        "#6 data-step-end n_2: output 2 (N ms)",
        "-- 2 steps done, running",
        "#7 data-checkpoint: covers #6, next n_3",
        "#8 data-step-start n_3",
        "#9 data-step-end n_3: output 3 (N ms)",
        "-- 3 steps done, running",
        "#10 data-checkpoint: covers #9, next -",
        "#11 data-execution-end: output 3 (N ms)",
        "-- 3 steps done, completed",
    ]


def test_watch_follows_live_through_a_pause_and_a_wait(
    tenant_a: Tenant, enqueued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    execution = submit(tenant_a)
    add_events(
        execution,
        ("data-execution-start", {"tenant_id": str(tenant_a.pk), "parent_id": None}, ""),
        ("data-step-start", {"name": "draft", "attempt": 1}, "step_1"),
        ("data-step-end", {"name": "draft", "output": {"text": "x" * 200}, "duration_ms": 4}, "step_1"),
        ("data-execution-paused", {"reason": "paused by ann"}, ""),
    )
    later: list[tuple[tuple[str, dict[str, Any], str], ...]] = [
        (
            ("data-execution-resumed", {}, ""),
            ("data-step-start", {"name": "approve", "attempt": 1}, "step_2"),
            ("data-execution-waiting", {"reason": "approval", "detail": {"prompt": "Publish?"}}, ""),
        ),
        (),  # a poll that finds nothing new
        (
            ("data-execution-input-received", {"input": {"approved": True}}, ""),
            ("data-usage", {"total_tokens": 12, "cost_usd": 0.5}, "step_2"),
            ("data-step-end", {"name": "approve", "output": True, "duration_ms": 1}, "step_2"),
            ("data-execution-end", {"output": {"published": True}, "duration_ms": 9}, ""),
        ),
    ]
    monkeypatch.setattr(enact, "_wait", lambda: add_events(execution, *later.pop(0)))
    lines = run("watch", execution.pk)
    assert later == []
    assert lines == [
        f"watching {execution.pk} (tenant acme, blueprint demo.chain), now queued",
        "#1 data-execution-start",
        "-- 0 steps done, running",
        "#2 data-step-start draft",
        '#3 data-step-end draft: output {"text": "' + "x" * 67 + "... (4 ms)",
        "-- 1 step done, running",
        "#4 data-execution-paused: reason: paused by ann",
        "-- 1 step done, paused; still watching (Ctrl-C stops watching, not the execution)",
        "#5 data-execution-resumed",
        "-- 1 step done, running",
        "#6 data-step-start approve",
        '#7 data-execution-waiting: waiting for approval: "Publish?"',
        "-- 1 step done, waiting; still watching (Ctrl-C stops watching, not the execution)",
        '#8 data-execution-input-received: input {"approved": true}',
        "-- 1 step done, running",
        "#9 data-usage approve: 12 tokens, $0.5",
        "#10 data-step-end approve: output true (1 ms)",
        "-- 2 steps done, running",
        '#11 data-execution-end: output {"published": true} (9 ms)',
        "-- 2 steps done, completed",
    ]


def test_watch_a_failed_run_exits_1(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a)
    error = {"category": "network", "message": "connection reset", "code": "E1"}
    add_events(
        execution,
        ("data-execution-start", {}, ""),
        ("data-step-start", {"name": "n_1", "attempt": 2}, "step_1"),
        ("data-step-failed", {"name": "n_1", "error": error, "duration_ms": 3}, "step_1"),
        ("data-execution-failed", {"error": error}, ""),
    )
    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("enact", "watch", execution.pk, stdout=out)
    assert caught.value.returncode == 1
    assert str(caught.value) == f"execution {execution.pk} failed: network: connection reset"
    assert out.getvalue().splitlines()[1:] == [
        "#1 data-execution-start",
        "-- 0 steps done, running",
        "#2 data-step-start n_1: attempt 2",
        "#3 data-step-failed n_1: error network: connection reset",
        "#4 data-execution-failed: error network: connection reset",
        "-- 0 steps done, failed",
    ]


def test_watch_a_cancelled_run_exits_1(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a)
    execution_cancel(tenant=tenant_a, execution_id=execution.pk, reason="not needed")
    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("enact", "watch", execution.pk, stdout=out)
    assert (caught.value.returncode, str(caught.value)) == (1, f"execution {execution.pk} cancelled: not needed")
    assert out.getvalue().splitlines() == [
        f"watching {execution.pk} (tenant acme, blueprint demo.chain), now cancelled",
        "#1 data-execution-cancelled: reason: not needed",
        "-- 0 steps done, cancelled",
    ]


def test_watch_stops_at_a_terminal_row_without_a_terminal_event(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a)
    Execution.objects.filter(pk=execution.pk).update(state="failed")
    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("enact", "watch", execution.pk, stdout=out)
    assert (caught.value.returncode, str(caught.value)) == (1, f"execution {execution.pk} failed")
    assert out.getvalue().splitlines()[1:] == ["-- 0 steps done, failed"]


def test_ctrl_c_stops_watching_and_leaves_the_execution_alone(
    tenant_a: Tenant, enqueued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    execution = submit(tenant_a)
    add_events(execution, ("data-execution-start", {}, ""))
    Execution.objects.filter(pk=execution.pk).update(state="running")
    before = model_to_dict(Execution.objects.get(pk=execution.pk))

    def interrupt() -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(enact, "_wait", interrupt)
    out = StringIO()
    with pytest.raises(CommandError) as caught:
        call_command("enact", "watch", execution.pk, stdout=out)
    assert (caught.value.returncode, str(caught.value)) == (130, f"stopped watching {execution.pk}; it goes on")
    assert out.getvalue().splitlines()[1:] == ["#1 data-execution-start", "-- 0 steps done, running"]
    assert model_to_dict(Execution.objects.get(pk=execution.pk)) == before
    assert ExecutionEvent.objects.filter(execution=execution).count() == 1


@pytest.mark.parametrize("command", ["watch", "cancel"])
@pytest.mark.parametrize(
    "execution_id", ["exec_0VbeUolx5NsfPSuqlD00FUV0uFq", "garbage", "", "step_0VbeU3kS24ZcSk2DPI00F6ngdg2"]
)
def test_unknown_and_malformed_execution_ids(db: None, command: str, execution_id: str) -> None:
    assert str(fails(command, execution_id)) == f"not_found: execution not found: {execution_id!r}"


# --- cancel ----------------------------------------------------------------------------------


def test_cancel_a_queued_execution_and_nothing_of_the_other_tenant(
    tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]
) -> None:
    ours, theirs = submit(tenant_a), submit(tenant_b)
    assert run("cancel", ours.pk, "--reason", "not needed") == [f"{ours.pk} cancelled"]
    ours.refresh_from_db()
    assert (ours.state, ours.cancel_reason) == ("cancelled", "not needed")
    assert list(ExecutionEvent.objects.values_list("execution_id", "type", "data")) == [
        (ours.pk, "data-execution-cancelled", {"reason": "not needed", "skipped_step_ids": []})
    ]
    theirs.refresh_from_db()
    assert (theirs.state, theirs.cancel_requested_at) == ("queued", None)


def test_cancel_without_a_reason_names_the_cli(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a)
    assert run("cancel", execution.pk) == [f"{execution.pk} cancelled"]
    assert Execution.objects.get(pk=execution.pk).cancel_reason == "cancelled by cli"


def test_cancel_a_leased_execution_is_requested(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a)
    Execution.objects.filter(pk=execution.pk).update(
        state="running", lease_owner="w1", lease_expires_at=timezone.now() + timedelta(minutes=1)
    )
    assert run("cancel", execution.pk, "--reason", "stop") == [f"{execution.pk} cancel requested (running)"]
    execution.refresh_from_db()
    assert (execution.state, execution.cancel_reason) == ("running", "stop")
    assert execution.cancel_requested_at is not None


@pytest.mark.django_db(transaction=True)  # the worker's kernel works on a thread of its own
def test_cancel_an_ended_execution_changes_nothing(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a)
    execution_run(execution.pk)
    events = ExecutionEvent.objects.count()
    assert run("cancel", execution.pk) == [f"{execution.pk} completed"]
    assert ExecutionEvent.objects.count() == events


# --- list ------------------------------------------------------------------------------------


def at(day: int, hour: int) -> datetime:
    return datetime(2025, 3, day, hour, 30, 0, tzinfo=UTC)


def test_list_newest_first_and_only_the_tenants_own(tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]) -> None:
    old, new = submit(tenant_a), submit(tenant_a, "demo.approval", {})
    theirs = submit(tenant_b)
    Execution.objects.filter(pk=old.pk).update(created_at=at(1, 9), ended_at=at(1, 10), state="completed")
    Execution.objects.filter(pk=new.pk).update(created_at=at(2, 9))
    Execution.objects.filter(pk=theirs.pk).update(created_at=at(3, 9))
    assert run("list", "acme") == [
        "ID                                BLUEPRINT      STATE      CREATED              ENDED",
        f"{new.pk}  demo.approval  queued     2025-03-02 09:30:00  -",
        f"{old.pk}  demo.chain     completed  2025-03-01 09:30:00  2025-03-01 10:30:00",
    ]
    assert run("list", "acme", "--state", "completed") == [
        "ID                                BLUEPRINT   STATE      CREATED              ENDED",
        f"{old.pk}  demo.chain  completed  2025-03-01 09:30:00  2025-03-01 10:30:00",
    ]
    assert run("list", "acme", "--limit", "1")[1:] == [f"{new.pk}  demo.approval  queued  2025-03-02 09:30:00  -"]
    assert run("list", "globex")[1:] == [f"{theirs.pk}  demo.chain  queued  2025-03-03 09:30:00  -"]
    assert run("list", "globex", "--state", "completed") == ["no executions for globex"]


def test_list_limits_to_50_by_default(tenant_a: Tenant, enqueued: list[str]) -> None:
    Execution.objects.bulk_create([Execution(tenant=tenant_a, blueprint="demo.chain") for _ in range(55)])
    assert len(run("list", "acme")) == 1 + 50


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("nope",), "not_found: tenant 'nope' not found"),
        (
            ("acme", "--state", "done"),
            "Error: argument --state: invalid choice: 'done' (choose from 'queued', 'created', 'planning', "
            "'running', 'paused', 'waiting', 'completed', 'failed', 'cancelled')",
        ),
        (("acme", "--limit", "0"), "Error: argument --limit: must be at least 1, not 0"),
    ],
)
def test_list_errors(tenant_a: Tenant, args: tuple[str, ...], message: str) -> None:
    assert str(fails("list", *args)) == message


# --- as a program: exit statuses and what reaches the terminal -------------------------------


@pytest.fixture(scope="module")
def cli(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``manage.py enact`` against a migrated database of its own, with one tenant."""
    database = tmp_path_factory.mktemp("cli") / "db.sqlite3"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "ENACT_QUEUE_SYNC")}
    env.update(ENACT_SQLITE_PATH=str(database), PYTHONUNBUFFERED="1")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v", "0"], cwd=ROOT, env=env, check=True, timeout=120)

    def cli(*args: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*manage, "enact", *args], cwd=ROOT, env={**env, **(extra_env or {})}, capture_output=True, text=True,
            timeout=60,
        )  # fmt: skip

    cli.env = env  # type: ignore[attr-defined]
    cli.database = database  # type: ignore[attr-defined]
    assert cli("tenant-create", "acme").returncode == 0
    return cli


@pytest.mark.slow
def test_program_submit_and_watch_a_run_exits_0(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    done = cli("submit", "acme", "demo.chain", "--input", '{"n": 2}', "--watch", extra_env={"ENACT_QUEUE_SYNC": "1"})
    assert done.returncode == 0, done.stderr
    lines = without_durations(done.stdout.splitlines())
    assert lines[0].startswith("exec_")
    assert lines[1:4] == [
        f"watching {lines[0]} (tenant acme, blueprint demo.chain), now completed",
        "#1 data-execution-start",
        "-- 0 steps done, running",
    ]
    assert lines[-2:] == ["#8 data-execution-end: output 2 (N ms)", "-- 2 steps done, completed"]


@pytest.mark.slow
def test_program_queue_sync_runs_inline_and_starts_no_worker_runtime(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # django-q2 runs an inline task through its worker function, which sends the signal a worker
    # process starts its slots on: slots started here would race the inline run for the
    # execution (it then stays queued for the caller) and run it behind the script's back.
    script = (
        "import threading\n"
        "from executions.services.submit import execution_submit\n"
        "from tenants.models import Tenant\n"
        "execution, _ = execution_submit(tenant=Tenant.objects.get(slug='acme'), blueprint='demo.chain', "
        "input={'n': 3})\n"
        "execution.refresh_from_db()\n"
        "print(execution.state, execution.output)\n"
        # (its monitor runs: an inline run renews its lease and hears a cancel as any other)
        "runtime = ('enact-dispatch', 'enact-schedules', 'enact-webhooks')\n"
        "print(sorted({t.name for t in threading.enumerate() if t.name in runtime}))\n"
    )
    ran = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", script],
        cwd=ROOT,
        env={**cli.env, "ENACT_QUEUE_SYNC": "1"},  # type: ignore[attr-defined]
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["completed 3", "[]"]


@pytest.mark.slow
def test_program_errors_are_one_line_on_stderr(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    unknown = cli("watch", "exec_0VbeUolx5NsfPSuqlD00FUV0uFq")
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == "CommandError: not_found: execution not found: 'exec_0VbeUolx5NsfPSuqlD00FUV0uFq'\n"
    bad_json = cli("submit", "acme", "demo.chain", "--input", "{n: 3}")
    assert (bad_json.returncode, bad_json.stdout) == (2, "")
    assert bad_json.stderr.splitlines()[-1] == (
        "manage.py enact submit: error: argument --input: invalid JSON at line 1 column 2 (char 1): "
        "Expecting property name enclosed in double quotes"
    )


@pytest.mark.slow
def test_program_ctrl_c_stops_watching_with_130(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    submitted = cli("submit", "acme", "demo.chain", "--input", '{"n": 1}')
    assert submitted.returncode == 0, submitted.stderr
    execution_id = submitted.stdout.strip()
    watching = subprocess.Popen(
        [sys.executable, "manage.py", "enact", "watch", execution_id],
        cwd=ROOT,
        env=cli.env,  # type: ignore[attr-defined]
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watching.stdout is not None
        first = watching.stdout.readline()
        assert first == f"watching {execution_id} (tenant acme, blueprint demo.chain), now queued\n"
        watching.send_signal(signal.SIGINT)
        out, err = watching.communicate(timeout=30)
    finally:
        if watching.poll() is None:
            watching.kill()
    assert watching.returncode == 130
    assert out == ""
    assert err == f"CommandError: stopped watching {execution_id}; it goes on\n"
    db = sqlite3.connect(cli.database)  # type: ignore[attr-defined]
    try:
        row = db.execute(
            "SELECT state, cancel_requested_at FROM executions_execution WHERE id = ?", (execution_id,)
        ).fetchone()
    finally:
        db.close()
    assert row == ("queued", None)
