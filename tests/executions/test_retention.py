"""Retention: what is past a tenant's retention goes, with its events, steps and artifacts; nothing
else does, and the sweep says what it removed."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from executions.kernel.ids import IdKind, new_id
from executions.models import Artifact, Execution, ExecutionEvent, Step
from executions.ops import retention
from executions.ops.retention import executions_sweep
from executions.persistence.events import stored_bytes
from tenants.models import Tenant
from tenants.services import tenant_set_limits

pytestmark = pytest.mark.django_db(transaction=True)


def ended(
    tenant: Tenant, days_ago: float, *, events: int = 3, parent: Execution | None = None, **fields: object
) -> Execution:
    at = timezone.now() - timedelta(days=days_ago)
    fields.setdefault("state", "completed")
    execution = Execution.objects.create(
        tenant=tenant, blueprint="demo.chain", input={"n": 1}, ended_at=at, parent=parent, **fields
    )
    for seq in range(1, events + 1):
        ExecutionEvent.objects.create(
            id=new_id(IdKind.EVENT), execution=execution, tenant=tenant, seq=seq, type="data-step-end", timestamp=at
        )
    Step.objects.create(
        id=new_id(IdKind.STEP),
        execution=execution,
        position=0,
        name="n_1",
        step_type="function_node",
        state="completed",
    )
    return execution


def test_executions_past_retention_go_with_everything_they_produced(tenant_a: Tenant, tenant_b: Tenant) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"retention_days": 30})
    old = ended(tenant_a, 40, events=5)
    recent = ended(tenant_a, 10)
    running = ended(tenant_a, 40, state="running")
    theirs = ended(tenant_b, 400)  # tenant_b keeps everything
    path = default_storage.save("artifacts/test-retention.bin", ContentFile(b"x" * 1000))
    Artifact.objects.create(
        id=new_id(IdKind.ARTIFACT), execution=old, tenant=tenant_a, name="big", artifact_type="binary",
        content_type="application/octet-stream", size=1000, sha256="0" * 64, file=path,
    )  # fmt: skip
    Artifact.objects.create(
        id=new_id(IdKind.ARTIFACT), execution=old, tenant=tenant_a, name="small", artifact_type="text",
        content_type="text/plain", size=5, sha256="0" * 64, content=b"hello",
    )  # fmt: skip
    # Its artifacts, and its events and steps as the sink that stored them would have counted them.
    Tenant.objects.filter(pk=tenant_a.pk).update(storage_bytes=1005 + 77 + stored_bytes([old.pk]))

    removed = executions_sweep()

    assert removed == {
        "acme": {"executions": 1, "events": 5, "steps": 1, "artifacts": 2, "artifact_bytes": 1005},
    }
    assert set(Execution.objects.values_list("pk", flat=True)) == {recent.pk, running.pk, theirs.pk}
    assert not ExecutionEvent.objects.filter(execution_id=old.pk).exists()
    assert not default_storage.exists(path)
    assert Tenant.objects.get(pk=tenant_a.pk).storage_bytes == 77
    assert executions_sweep() == {}  # nothing more is due


def test_a_parent_waits_for_its_children_to_expire(tenant_a: Tenant) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"retention_days": 1})
    parent = ended(tenant_a, 5)
    child = ended(tenant_a, 0.1, parent=parent)
    assert executions_sweep() == {}
    Execution.objects.filter(pk=child.pk).update(ended_at=timezone.now() - timedelta(days=2))
    assert executions_sweep()["acme"]["executions"] == 2
    assert not Execution.objects.exists()


def test_the_command_says_what_it_removed(tenant_a: Tenant) -> None:
    out = StringIO()
    call_command("enact", "sweep", stdout=out)
    assert out.getvalue().strip() == "Nothing is past its retention."
    tenant_set_limits(tenant=tenant_a, changes={"retention_days": 7})
    ended(tenant_a, 8, events=2)
    out = StringIO()
    call_command("enact", "sweep", stdout=out)
    assert out.getvalue().strip() == "acme: 1 executions, 2 events, 1 steps, 0 artifacts (0 bytes)"


def test_a_large_execution_is_deleted_in_chunks(tenant_a: Tenant, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "ROWS_PER_DELETE", 7)
    tenant_set_limits(tenant=tenant_a, changes={"retention_days": 1})
    ended(tenant_a, 3, events=50)
    assert executions_sweep()["acme"]["events"] == 50
    assert not ExecutionEvent.objects.exists()
