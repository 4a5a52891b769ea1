"""Asynchronous durability: units stored in the background, in order, in groups; published only
once stored; a failed commit stops the run. The committer itself is tested with a writer of the
test's own; the whole path through a worker needs PostgreSQL (elsewhere runs stay synchronous)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import pytest
from django.db import connection

from executions.kernel.events import EventType, StreamEvent
from executions.live import publisher
from executions.models import Checkpoint, ExecutionEvent, Step
from executions.persistence import kernels
from executions.persistence.events import DjangoEventSink, LeaseLost
from executions.persistence.group_commit import CommitFailed, Fenced, GroupCommitter, StagedUnit
from executions.persistence.kernels import kernel_close, kernel_for
from executions.persistence.sql import write_staged_unit
from executions.runtime.run import execution_run
from executions.services.submit import execution_submit
from tenants.models import Tenant, TenantLimits
from tenants.services import tenant_set_limits


class Boom(Exception):
    pass


def unit(n: int, *, step: str = "", checkpoint: str | None = None) -> StagedUnit:
    return StagedUnit(
        events=[f'{{"seq": {n}}}'],
        steps={step: f'{{"id": "{step}", "unit": {n}}}'} if step else {},
        checkpoint=checkpoint,
        wires=[{"seq": n}],
    )


class Recorder:
    """A writer that can be held inside its first write, and a publisher; both keep a log."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.log: list[tuple[str, Any]] = []
        self.writing = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on

    def write(self, group: StagedUnit) -> None:
        self.writing.set()
        assert self.release.wait(5)
        if self.fail_on is not None and f'{{"seq": {self.fail_on}}}' in group.events:
            raise Boom("the database said no")
        self.log.append(("write", (list(group.events), dict(group.steps), group.checkpoint)))

    def publish(self, wires: list[dict[str, Any]]) -> None:
        self.log.append(("publish", [w["seq"] for w in wires]))


def test_units_that_end_during_a_commit_go_together_in_the_next() -> None:
    recorder = Recorder()
    committer = GroupCommitter(recorder.write, recorder.publish)
    committer.submit(unit(1, step="step_a", checkpoint='{"c": 1}'))
    assert recorder.writing.wait(5)  # the first commit is in flight; the next units queue up
    committer.submit(unit(2, step="step_a", checkpoint='{"c": 2}'))
    committer.submit(unit(3, step="step_b", checkpoint='{"c": 3}'))
    recorder.release.set()
    committer.close()

    assert recorder.log == [
        ("write", (['{"seq": 1}'], {"step_a": '{"id": "step_a", "unit": 1}'}, '{"c": 1}')),
        ("publish", [1]),
        (
            "write",
            (
                ['{"seq": 2}', '{"seq": 3}'],
                # one row a step: its later state wins; only the latest checkpoint is written
                {"step_a": '{"id": "step_a", "unit": 2}', "step_b": '{"id": "step_b", "unit": 3}'},
                '{"c": 3}',
            ),
        ),
        ("publish", [2, 3]),
    ]


def test_drain_returns_only_once_everything_is_stored_and_published() -> None:
    recorder = Recorder()
    recorder.release.set()
    committer = GroupCommitter(recorder.write, recorder.publish)
    for n in range(1, 21):
        committer.submit(unit(n))
    committer.drain()
    written = [seq for kind, what in recorder.log if kind == "write" for seq in what[0]]
    published = [seq for kind, what in recorder.log if kind == "publish" for seq in what]
    assert written == [f'{{"seq": {n}}}' for n in range(1, 21)]
    assert published == list(range(1, 21))
    committer.close()


def test_a_failed_commit_stops_the_committer_and_is_raised_to_the_run() -> None:
    recorder = Recorder(fail_on=1)
    failures: list[BaseException] = []
    committer = GroupCommitter(recorder.write, recorder.publish, on_failure=failures.append)
    committer.submit(unit(1))
    assert recorder.writing.wait(5)
    committer.submit(unit(2))  # queued behind the commit that is about to fail
    recorder.release.set()

    with pytest.raises(CommitFailed, match="the database said no") as raised:
        committer.drain()
    assert isinstance(raised.value.__cause__, Boom)
    assert [type(f) for f in failures] == [Boom]  # told at once, from the committer's thread
    with pytest.raises(CommitFailed):
        committer.submit(unit(3))
    with pytest.raises(CommitFailed):
        committer.close()
    assert recorder.log == []  # nothing after the failed unit was stored or published


def test_once_fenced_nothing_queued_is_stored() -> None:
    recorder = Recorder()
    fence = threading.Event()
    committer = GroupCommitter(recorder.write, recorder.publish, fence=fence)
    committer.submit(unit(1))
    assert recorder.writing.wait(5)
    committer.submit(unit(2))
    fence.set()  # the worker lost its lease while unit 1 was being written
    recorder.release.set()

    with pytest.raises(CommitFailed) as raised:
        committer.close()
    assert isinstance(raised.value.__cause__, Fenced)
    assert [kind for kind, _ in recorder.log] == ["write", "publish"]  # unit 1 only


def test_a_run_that_gets_too_far_ahead_waits_for_the_database() -> None:
    recorder = Recorder()
    committer = GroupCommitter(recorder.write, recorder.publish, max_queued=2)
    committer.submit(unit(1))
    assert recorder.writing.wait(5)
    committer.submit(unit(2))
    committer.submit(unit(3))
    fourth = threading.Thread(target=committer.submit, args=(unit(4),))
    fourth.start()
    fourth.join(0.2)
    assert fourth.is_alive()  # two are queued: the fourth waits
    recorder.release.set()
    fourth.join(5)
    assert not fourth.is_alive()
    committer.close()
    assert [seq for kind, what in recorder.log if kind == "publish" for seq in what] == [1, 2, 3, 4]


# --- through the database ------------------------------------------------------------------------

needs_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="asynchronous durability is for PostgreSQL; elsewhere runs are sync"
)


def _async(tenant: Tenant) -> None:
    tenant_set_limits(tenant=tenant, changes={"durability": TenantLimits.Durability.ASYNC, "max_steps": None})


@pytest.mark.django_db(transaction=True)
def test_only_a_worker_run_on_postgresql_commits_in_the_background(tenant_a: Tenant) -> None:
    _async(tenant_a)
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 2})
    by_worker = kernel_for(execution, background_commits=True)
    other = kernel_for(execution)  # a service's or an operator's kernel: always sync
    try:
        assert isinstance(by_worker.sink, DjangoEventSink)
        assert isinstance(other.sink, DjangoEventSink)
        assert (by_worker.sink.committer is not None) is (connection.vendor == "postgresql")
        assert other.sink.committer is None
    finally:
        kernel_close(by_worker)
    assert by_worker.sink.committer is None  # closed


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_an_async_run_stores_every_event_in_order_and_publishes_each_once_after_its_commit(
    tenant_a: Tenant, tenant_b: Tenant, settings: Any, monkeypatch: pytest.MonkeyPatch, enqueued: list[str]
) -> None:
    _async(tenant_a)
    settings.ENACT_PUBLISH_DIRECT = True
    published: list[int] = []
    stored_when_published: list[bool] = []
    commits: list[int] = []
    first_commit_slow = threading.Event()

    def publish(tenant_id: int, wires: list[dict[str, Any]]) -> None:
        assert tenant_id == tenant_a.pk
        seqs = [w["seq"] for w in wires]
        published.extend(seqs)
        stored = ExecutionEvent.objects.filter(execution_id=wires[0]["execution_id"], seq__in=seqs).count()
        stored_when_published.append(stored == len(seqs))

    def write(group: StagedUnit) -> None:
        if not first_commit_slow.is_set():  # hold the first commit so the next steps must queue
            first_commit_slow.set()
            threading.Event().wait(0.05)
        commits.append(len(group.events))
        write_staged_unit(group)

    monkeypatch.setattr(publisher, "publish_events", publish)
    monkeypatch.setattr(kernels, "write_staged_unit", write)
    n = 40
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": n})
    assert execution_run(execution.pk) == "completed"

    execution.refresh_from_db()
    assert (execution.state, execution.output) == ("completed", n)
    seqs = list(ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, len(seqs) + 1))
    assert published == seqs  # every event once, in order, only after it was stored
    assert all(stored_when_published)
    assert list(Step.objects.filter(execution=execution).order_by("position").values_list("position", "state")) == [
        (i, "completed") for i in range(n)
    ]
    assert Checkpoint.objects.get(execution=execution).data["step_outputs"] != {}
    assert len(commits) < n  # steps that ended during a commit went together
    assert sum(commits) < len(seqs)  # the last events (the end) were written with the row, synchronously
    assert not ExecutionEvent.objects.filter(tenant=tenant_b).exists()


@needs_postgresql
@pytest.mark.django_db(transaction=True)
def test_a_background_commit_that_clashes_with_another_workers_seq_stops_the_run(tenant_a: Tenant) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    other_worker = DjangoEventSink(execution)

    def event(seq: int, id_: str) -> StreamEvent:
        return StreamEvent(EventType.EXECUTION_START, execution.pk, datetime.now(UTC), {}, id=id_, seq=seq)

    other_worker.append(event(1, "evt_other_1"))
    committer = GroupCommitter(write_staged_unit, lambda wires: None)
    sink = DjangoEventSink(execution, committer=committer)
    sink.begin()
    sink.append(event(2, "evt_mine_2"))
    sink.append(event(1, "evt_mine_1"))  # seq 1 is the other worker's: the whole group is refused
    sink.end(ok=True)  # handed off; the clash comes back at the next write

    with pytest.raises(LeaseLost):
        sink.sync()
    with pytest.raises(LeaseLost):
        sink.close()
    assert list(ExecutionEvent.objects.filter(execution=execution).values_list("id", flat=True)) == ["evt_other_1"]
