"""What a run stores counts in bytes, and against the tenant's storage quota: the state cap counts
the UTF-8 bytes of the state's JSON, not its characters; events and step outputs add to the
tenant's ``storage_bytes`` (given back by retention) and a run that would store past
``max_storage_bytes`` fails with a clear quota error, the refused step written not at all."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from executions.blueprints.definition import MAX_STATE_BYTES, TOO_LARGE, json_problem
from executions.models import Execution, ExecutionEvent, Step
from executions.ops.retention import executions_sweep
from executions.runtime.run import execution_run
from executions.services.blueprints import blueprint_save
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import tenant_set_limits

pytestmark = pytest.mark.django_db(transaction=True)


def _stored_bytes(execution: Execution) -> int:
    """What the rows of an execution hold: its events' data and its steps' outputs and errors."""
    size = 0
    for data in ExecutionEvent.objects.filter(execution=execution).values_list("data", flat=True):
        size += len(json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode())
    for output, error in Step.objects.filter(execution=execution).values_list("output", "error"):
        for value in (output, error):
            if value is not None:
                size += len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    return size


def _repeat(tenant: Tenant, name: str, count: int) -> None:
    """Node a repeats the input ``count`` times (one string, many references), node b counts them."""
    node = {"kind": "template", "config": {"template": "{{ [" + ", ".join(["input"] * count) + "] }}"}}
    blueprint_save(
        tenant=tenant,
        name=name,
        definition={
            "input_schema": {"type": "string"},
            "entry": "a",
            "nodes": {"a": node, "b": {"kind": "template", "config": {"template": "{{ len(state.a) }}"}}},
            "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "end"}],
        },
    )


def _run(tenant: Tenant, name: str, input: Any) -> Execution:
    execution, _ = execution_submit(tenant=tenant, blueprint=name, input=input)
    execution_run(execution.pk)
    execution.refresh_from_db()
    return execution


def test_the_state_cap_counts_bytes_not_characters() -> None:
    wide = "é" * (MAX_STATE_BYTES // 2 + 10)  # fewer characters than the cap, more bytes
    assert len(wide) < MAX_STATE_BYTES
    assert json_problem({"input": wide}, MAX_STATE_BYTES) == TOO_LARGE
    assert json_problem({"input": "🙂" * (MAX_STATE_BYTES // 4 + 10)}, MAX_STATE_BYTES) == TOO_LARGE
    assert json_problem({"input": "e" * (MAX_STATE_BYTES - 100)}, MAX_STATE_BYTES) is None


def test_a_wide_state_fails_its_step_by_its_bytes(tenant_a: Tenant, enqueued: list[str]) -> None:
    _repeat(tenant_a, "wide", 100)  # 100 times 25,000 characters of 2 bytes: 2.5 M characters, 5 MB
    execution = _run(tenant_a, "wide", "é" * 25_000)
    assert execution.state == "failed"
    assert execution.error["code"] == "state_too_large"


@pytest.mark.parametrize("durability", ["sync", "async"])
def test_events_and_step_outputs_count_toward_the_tenants_storage(
    tenant_a: Tenant, enqueued: list[str], durability: str
) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"durability": durability})  # async: PostgreSQL only
    _repeat(tenant_a, "big", 20)
    before = Tenant.objects.get(pk=tenant_a.pk).storage_bytes
    execution = _run(tenant_a, "big", "0123456789" * 1000)  # 200 kB in step a's output, its event and the end
    assert execution.state == "completed", execution.error
    stored = _stored_bytes(execution)
    assert stored > 3 * 200_000
    used = Tenant.objects.get(pk=tenant_a.pk).storage_bytes - before
    assert stored <= used <= stored + 200 * ExecutionEvent.objects.filter(execution=execution).count()
    # Retention gives it back with the rows.
    tenant_set_limits(tenant=tenant_a, changes={"retention_days": 1})
    Execution.objects.filter(pk=execution.pk).update(ended_at=timezone.now() - timedelta(days=2))
    executions_sweep()
    assert Tenant.objects.get(pk=tenant_a.pk).storage_bytes == before


def test_a_run_past_the_storage_quota_fails_clearly_and_writes_nothing_of_the_refused_step(
    tenant_a: Tenant, enqueued: list[str]
) -> None:
    _repeat(tenant_a, "big", 20)
    tenant_set_limits(tenant=tenant_a, changes={"max_storage_bytes": 150_000})
    execution = _run(tenant_a, "big", "0123456789" * 1000)
    assert execution.state == "failed"
    assert execution.claims == 1  # failed at once, not retried as a crashed worker
    assert (execution.error["category"], execution.error["code"]) == ("quota_exceeded", "storage_quota_exceeded")
    assert "storage quota" in execution.error["message"]
    # Step a's 200 kB output was refused: it is stored nowhere, and its step failed.
    assert list(Step.objects.filter(execution=execution).values_list("name", "state", "output")) == [
        ("a", "failed", None)
    ]
    assert not ExecutionEvent.objects.filter(execution=execution, type="data-step-end").exists()
    tenant = Tenant.objects.get(pk=tenant_a.pk)
    assert _stored_bytes(execution) <= tenant.storage_bytes < 150_000 + 10_000


def test_a_run_of_many_small_steps_updates_its_tenants_row_a_few_times_not_once_a_step(
    tenant_a: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every step of every execution of a tenant updating the tenant's row would make their
    commits take turns on its lock: storage is reserved a megabyte ahead, and given back at the end."""
    from executions.persistence import events
    from tenants.services import tenant_reserve_storage

    updates: list[int] = []

    def counted(*, tenant_id: int, size: int, maximum: int | None) -> bool:
        updates.append(size)  # each call is one UPDATE of the tenant's row, from whichever thread
        return tenant_reserve_storage(tenant_id=tenant_id, size=size, maximum=maximum)

    monkeypatch.setattr(events, "tenant_reserve_storage", counted)
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 20})
    execution_run(execution.pk)
    execution.refresh_from_db()
    assert execution.state == Execution.State.COMPLETED
    assert 1 <= len(updates) <= 3, updates  # the reservation and the give-back, not one a step
    tenant_a.refresh_from_db()
    assert tenant_a.storage_bytes >= _stored_bytes(execution)  # each event and step counted
