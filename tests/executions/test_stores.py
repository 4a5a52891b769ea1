"""The event sink's transactions: what a unit of work writes lands together or not at all, and
it never commits a transaction that belongs to its caller."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import transaction

from executions.kernel.events import EventType, StreamEvent
from executions.live import publisher
from executions.models import Checkpoint, Execution, ExecutionEvent, Step
from executions.persistence.events import DjangoEventSink, LeaseLost
from executions.persistence.stores import DjangoUnitOfWork
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)


class Boom(Exception):
    pass


def _execution(tenant: Tenant) -> Execution:
    return Execution.objects.create(tenant=tenant, blueprint="demo.chain", input={"n": 1})


def _event(execution: Execution, seq: int, type_: EventType, step_id: str | None = None, **data: Any) -> StreamEvent:
    return StreamEvent(
        type_, execution.pk, datetime.now(UTC), data, step_id=step_id, id=f"evt_{execution.pk[-8:]}_{seq}", seq=seq
    )


def _step_start(execution: Execution, seq: int, step_id: str) -> StreamEvent:
    data = {"name": "n_1", "step_type": "function_node", "attempt": 1, "parent_step_id": None}
    return _event(execution, seq, EventType.STEP_START, step_id, **data)


def test_a_unit_writes_events_steps_and_checkpoint_together(tenant_a: Tenant, tenant_b: Tenant) -> None:
    execution = _execution(tenant_a)
    sink = DjangoEventSink(execution)
    with DjangoUnitOfWork(sink).atomic():
        sink.append(_step_start(execution, 1, "step_one"))
        sink.append(_event(execution, 2, EventType.STEP_END, "step_one", name="n_1", output=7, duration_ms=3))
        assert sink.stage_checkpoint("ckpt_one", 2, {"id": "ckpt_one", "note": "after n_1"})
        # Nothing is visible before the unit ends.
        assert not ExecutionEvent.objects.filter(execution=execution).exists()

    events = list(ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("seq", "type"))
    assert events == [(1, "data-step-start"), (2, "data-step-end")]
    step = Step.objects.get(pk="step_one")
    assert (step.state, step.output, step.duration_ms, step.position) == ("completed", 7, 3, 0)
    checkpoint = Checkpoint.objects.get(execution=execution)
    assert (checkpoint.checkpoint_id, checkpoint.seq, checkpoint.data["note"]) == ("ckpt_one", 2, "after n_1")
    assert ExecutionEvent.objects.get(seq=1, execution=execution).tenant_id == tenant_a.pk


def test_a_failed_unit_writes_nothing(tenant_a: Tenant) -> None:
    execution = _execution(tenant_a)
    sink = DjangoEventSink(execution)

    def unit() -> None:
        with DjangoUnitOfWork(sink).atomic():
            sink.append(_step_start(execution, 1, "step_one"))
            sink.stage_checkpoint("ckpt_one", 1, {"id": "ckpt_one"})
            raise Boom

    with pytest.raises(Boom):
        unit()
    assert not ExecutionEvent.objects.filter(execution=execution).exists()
    assert not Step.objects.filter(execution=execution).exists()
    assert not Checkpoint.objects.filter(execution=execution).exists()


def test_a_failed_nested_unit_rolls_back_the_outer_one(tenant_a: Tenant) -> None:
    execution = _execution(tenant_a)
    sink = DjangoEventSink(execution)
    unit = DjangoUnitOfWork(sink)

    def nested() -> None:
        with unit.atomic():
            sink.append(_step_start(execution, 1, "step_one"))
            with unit.atomic():
                sink.append(_event(execution, 2, EventType.STEP_END, "step_one", name="n_1", output=1, duration_ms=1))
                raise Boom

    with pytest.raises(Boom):
        nested()
    assert not ExecutionEvent.objects.filter(execution=execution).exists()
    # The sink is usable again, and the next unit writes only its own events.
    with unit.atomic():
        sink.append(_step_start(execution, 1, "step_two"))
    assert list(ExecutionEvent.objects.filter(execution=execution).values_list("seq", flat=True)) == [1]


def test_the_sink_never_commits_its_callers_transaction(tenant_a: Tenant) -> None:
    """An event appended inside a service's transaction is rolled back with it."""
    execution = _execution(tenant_a)
    sink = DjangoEventSink(execution)

    def service() -> None:
        with transaction.atomic():
            Execution.objects.filter(pk=execution.pk).update(blueprint="demo.pipeline")
            sink.append(_event(execution, 1, EventType.EXECUTION_START))
            with DjangoUnitOfWork(sink).atomic():
                sink.append(_step_start(execution, 2, "step_one"))
            raise Boom

    with pytest.raises(Boom):
        service()
    execution.refresh_from_db()
    assert execution.blueprint == "demo.chain"
    assert execution.state == Execution.State.QUEUED
    assert not ExecutionEvent.objects.filter(execution=execution).exists()
    assert not Step.objects.filter(execution=execution).exists()


def test_a_unit_after_earlier_writes_commits_them_with_its_events(tenant_a: Tenant) -> None:
    """The start event updates the execution row before the flush; both land in one commit."""
    execution = _execution(tenant_a)
    sink = DjangoEventSink(execution)
    with DjangoUnitOfWork(sink).atomic():
        sink.append(_event(execution, 1, EventType.EXECUTION_START))
        sink.append(_step_start(execution, 2, "step_one"))
    execution.refresh_from_db()
    assert execution.state == Execution.State.RUNNING
    assert ExecutionEvent.objects.filter(execution=execution).count() == 2
    # And the connection is usable for the next unit, in its own transaction.
    with DjangoUnitOfWork(sink).atomic():
        sink.append(_event(execution, 3, EventType.STEP_END, "step_one", name="n_1", output=1, duration_ms=1))
    assert Step.objects.get(pk="step_one").state == "completed"


def test_a_seq_written_by_another_worker_fences_this_one_off(tenant_a: Tenant) -> None:
    execution = _execution(tenant_a)
    other, mine = DjangoEventSink(execution), DjangoEventSink(execution)
    with DjangoUnitOfWork(other).atomic():
        other.append(_step_start(execution, 1, "step_theirs"))

    def clash() -> None:
        with DjangoUnitOfWork(mine).atomic():
            mine.append(_step_start(execution, 2, "step_mine"))
            mine.append(_event(execution, 1, EventType.STEP_END, "step_mine", name="n_1", output=1, duration_ms=1))

    with pytest.raises(LeaseLost):
        clash()
    assert list(ExecutionEvent.objects.filter(execution=execution).values_list("seq", flat=True)) == [1]
    assert not Step.objects.filter(pk="step_mine").exists()


def test_events_are_published_after_commit_and_never_for_a_rolled_back_unit(
    tenant_a: Tenant, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.ENACT_PUBLISH_DIRECT = True
    published: list[tuple[int, int, bool]] = []

    def record(tenant_id: int, wires: list[dict[str, Any]]) -> None:
        for wire in wires:
            committed = ExecutionEvent.objects.filter(execution_id=wire["execution_id"], seq=wire["seq"]).exists()
            published.append((tenant_id, wire["seq"], committed))

    monkeypatch.setattr(publisher, "publish_events", record)
    execution = _execution(tenant_a)
    sink = DjangoEventSink(execution)

    def failing() -> None:
        with DjangoUnitOfWork(sink).atomic():
            sink.append(_step_start(execution, 1, "step_one"))
            raise Boom

    with pytest.raises(Boom):
        failing()
    assert published == []
    with DjangoUnitOfWork(sink).atomic():
        sink.append(_step_start(execution, 1, "step_one"))
        sink.append(_event(execution, 2, EventType.STEP_END, "step_one", name="n_1", output=1, duration_ms=1))
    assert published == [(tenant_a.pk, 1, True), (tenant_a.pk, 2, True)]
