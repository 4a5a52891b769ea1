"""Execution services: what they accept, what they refuse, and that a refusal changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from enact_platform.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, QuotaExceeded
from executions.models import Execution, ExecutionEvent, InboxMessage
from executions.persistence.kernels import kernel_for
from executions.runtime.leases import execution_claim, execution_release
from executions.runtime.reaper import executions_reap
from executions.services.controls import (
    execution_cancel,
    execution_pause,
    execution_post_inbox,
    execution_provide_input,
    execution_resume,
    executions_bulk_cancel,
)
from executions.services.submit import execution_submit
from tenants.models import Tenant, TenantDailyUsage
from tenants.services import tenant_set_limits, tenant_set_status

pytestmark = pytest.mark.django_db


def submit(tenant: Tenant, blueprint: str = "demo.chain", input: Any = None, **kwargs: Any) -> Execution:
    execution, _ = execution_submit(
        tenant=tenant, blueprint=blueprint, input={"n": 2} if input is None else input, **kwargs
    )
    return execution


def snapshot() -> tuple[int, int, int, list[tuple[str, str]]]:
    usage = sum(TenantDailyUsage.objects.values_list("executions", flat=True))
    return (
        Execution.objects.count(),
        ExecutionEvent.objects.count(),
        usage,
        sorted(Execution.objects.values_list("pk", "state")),
    )


def test_submit_creates_a_queued_execution_and_enqueues_it_after_commit(
    tenant_a: Tenant, enqueued: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        execution, created = execution_submit(
            tenant=tenant_a, blueprint="demo.chain", input={"n": 3}, metadata={"ticket": 7}
        )
        assert enqueued == []  # nothing goes out before the commit
    assert created is True
    assert enqueued == [execution.pk]
    assert (execution.state, execution.blueprint, execution.input, execution.metadata) == (
        "queued",
        "demo.chain",
        {"n": 3},
        {"ticket": 7},
    )
    assert execution.pk.startswith("exec_")
    assert TenantDailyUsage.objects.get(tenant=tenant_a).executions == 1


@pytest.mark.parametrize(
    ("blueprint", "input", "error", "message"),
    [
        ("no.such.graph", {}, InvalidInput, "unknown blueprint 'no.such.graph'"),
        ("demo.chain", {"n": "three"}, InvalidInput, "input.n must be an integer"),
        ("demo.chain", {"n": 0}, InvalidInput, "input.n must be at least 1"),
        ("demo.chain", {}, InvalidInput, "input.n is required"),
        ("demo.chain", {"n": 1, "extra": True}, InvalidInput, "input has unknown fields: extra"),
        ("demo.chain", [1, 2], InvalidInput, "input must be an object"),
        ("demo.pipeline", {"text": "x" * 300_000}, PayloadTooLarge, "input is 300"),
    ],
)
def test_bad_submissions_are_refused_and_change_nothing(
    tenant_a: Tenant, enqueued: list[str], blueprint: str, input: Any, error: type[Exception], message: str
) -> None:
    before = snapshot()
    with pytest.raises(error, match=message):
        execution_submit(tenant=tenant_a, blueprint=blueprint, input=input)
    assert snapshot() == before
    assert enqueued == []


def test_a_suspended_tenant_submits_nothing(tenant_a: Tenant, enqueued: list[str]) -> None:
    tenant_set_status(tenant=tenant_a, status="suspended")
    with pytest.raises(QuotaExceeded, match="suspended"):
        submit(tenant_a)
    assert Execution.objects.count() == 0


def test_the_day_quota_refuses_at_submission(tenant_a: Tenant, enqueued: list[str]) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"executions_per_day": 1})
    submit(tenant_a)
    with pytest.raises(QuotaExceeded, match="execution quota"):
        submit(tenant_a)
    assert Execution.objects.count() == 1


def test_a_repeated_idempotency_key_returns_the_first_execution(
    tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]
) -> None:
    first, created = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1}, idempotency_key="k1")
    again, created_again = execution_submit(
        tenant=tenant_a, blueprint="demo.chain", input={"n": 99}, idempotency_key="k1"
    )
    other, created_other = execution_submit(
        tenant=tenant_b, blueprint="demo.chain", input={"n": 1}, idempotency_key="k1"
    )
    assert (created, created_again, created_other) == (True, False, True)
    assert again.pk == first.pk
    assert again.input == {"n": 1}
    assert other.pk != first.pk
    assert TenantDailyUsage.objects.get(tenant=tenant_a).executions == 1


def test_cancel_of_a_queued_execution_is_immediate(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a)
    cancelled = execution_cancel(tenant=tenant_a, execution_id=execution.pk, reason="not needed", actor="ann")
    assert cancelled.state == "cancelled"
    events = list(ExecutionEvent.objects.filter(execution=execution).values_list("seq", "type", "data"))
    assert events == [(1, "data-execution-cancelled", {"reason": "not needed", "skipped_step_ids": []})]
    # Idempotent: a second cancel reports the state and adds nothing.
    assert execution_cancel(tenant=tenant_a, execution_id=execution.pk).state == "cancelled"
    assert ExecutionEvent.objects.filter(execution=execution).count() == 1


def test_cancel_of_a_leased_execution_is_recorded_for_its_worker(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a)
    assert execution_claim(execution_id=execution.pk, worker="w1") is not None
    after = execution_cancel(tenant=tenant_a, execution_id=execution.pk, reason="stop")
    assert after.state == "queued"
    assert after.cancel_requested_at is not None
    assert after.cancel_reason == "stop"
    assert ExecutionEvent.objects.count() == 0


def test_controls_that_do_not_apply_conflict(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a)
    before = snapshot()
    with pytest.raises(Conflict, match="cannot pause an execution that is queued"):
        execution_pause(tenant=tenant_a, execution_id=execution.pk)
    with pytest.raises(Conflict, match="cannot resume an execution that is queued"):
        execution_resume(tenant=tenant_a, execution_id=execution.pk)
    with pytest.raises(Conflict, match="not waiting for input"):
        execution_provide_input(tenant=tenant_a, execution_id=execution.pk, input={"x": 1})
    assert snapshot() == before
    assert InboxMessage.objects.count() == 0


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"kind": "shout", "content": "hi"}, "kind must be one of guidance, evidence, a2a"),
        ({"kind": "control", "action": "cancel"}, "kind must be one of guidance, evidence, a2a"),
        ({"kind": "guidance"}, "invalid guidance message: missing field 'content'"),
        ({"kind": "evidence", "source": "s", "title": "t", "confidence": 7}, "confidence must be between 0 and 1"),
        ({"kind": "guidance", "content": "x", "priority": "urgent"}, "invalid guidance message"),
    ],
)
def test_bad_inbox_messages_are_refused(
    tenant_a: Tenant, enqueued: list[str], message: dict[str, Any], error: str
) -> None:
    execution = submit(tenant_a)
    with pytest.raises(InvalidInput, match=error):
        execution_post_inbox(tenant=tenant_a, execution_id=execution.pk, message=message)
    assert InboxMessage.objects.count() == 0


def test_guidance_is_stored_for_the_next_step(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a)
    message_id = execution_post_inbox(
        tenant=tenant_a,
        execution_id=execution.pk,
        message={"kind": "guidance", "content": "be brief", "priority": "high"},
        actor="ann",
    )
    row = InboxMessage.objects.get()
    assert (row.pk, row.kind, row.execution_id, row.consumed_at) == (message_id, "guidance", execution.pk, None)
    assert row.payload["content"] == "be brief"
    assert row.payload["sender"] == "ann"


def test_another_tenants_execution_is_not_found_by_any_service(
    tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]
) -> None:
    theirs = submit(tenant_b)
    before = snapshot()
    calls = [
        lambda: execution_cancel(tenant=tenant_a, execution_id=theirs.pk),
        lambda: execution_pause(tenant=tenant_a, execution_id=theirs.pk),
        lambda: execution_resume(tenant=tenant_a, execution_id=theirs.pk),
        lambda: execution_provide_input(tenant=tenant_a, execution_id=theirs.pk, input=1),
        lambda: execution_post_inbox(
            tenant=tenant_a, execution_id=theirs.pk, message={"kind": "guidance", "content": "x"}
        ),
    ]
    for call in calls:
        with pytest.raises(NotFound, match="execution not found"):
            call()
    counts = executions_bulk_cancel(tenant=tenant_a, ids=[theirs.pk, "exec_malformed", "garbage"])
    assert counts == {"cancelled": 0, "cancel_requested": 0, "already_terminal": 0, "not_found": 3}
    assert snapshot() == before
    assert InboxMessage.objects.count() == 0


@pytest.mark.parametrize("bad_id", ["", "exec_", "step_0VbeRApG1BpA4EhicX0045D97kE", "exec_../../etc", None, 42])
def test_malformed_ids_are_not_found(tenant_a: Tenant, bad_id: Any) -> None:
    with pytest.raises(NotFound):
        execution_cancel(tenant=tenant_a, execution_id=bad_id)


def test_bulk_cancel_by_ids_and_by_filter(tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]) -> None:
    a1, a2, a3 = submit(tenant_a), submit(tenant_a), submit(tenant_a, blueprint="demo.pipeline", input={"text": "x"})
    b1 = submit(tenant_b)
    execution_cancel(tenant=tenant_a, execution_id=a1.pk)
    counts = executions_bulk_cancel(tenant=tenant_a, ids=[a1.pk, a2.pk, a2.pk, b1.pk])
    assert counts == {"cancelled": 1, "cancel_requested": 0, "already_terminal": 1, "not_found": 1}
    counts = executions_bulk_cancel(tenant=tenant_a, filter={"state": "queued", "blueprint": "demo.pipeline"})
    assert counts == {"cancelled": 1, "cancel_requested": 0, "already_terminal": 0, "not_found": 0}
    assert Execution.objects.get(pk=a3.pk).state == "cancelled"
    assert Execution.objects.get(pk=b1.pk).state == "queued"
    with pytest.raises(InvalidInput, match="either ids or filter"):
        executions_bulk_cancel(tenant=tenant_a)
    with pytest.raises(InvalidInput, match="unknown state"):
        executions_bulk_cancel(tenant=tenant_a, filter={"state": "exploded"})


def test_a_claim_is_taken_once(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a)
    assert execution_claim(execution_id=execution.pk, worker="w1") is not None
    assert execution_claim(execution_id=execution.pk, worker="w2") is None
    row = Execution.objects.get(pk=execution.pk)
    assert (row.lease_owner, row.claims) == ("w1", 1)


def test_claims_never_overfill_a_tenant(tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 2})
    mine = [submit(tenant_a) for _ in range(4)]
    theirs = submit(tenant_b)
    claimed = [execution_claim(execution_id=e.pk, worker="w") for e in mine]
    assert [c is not None for c in claimed] == [True, True, False, False]
    assert execution_claim(execution_id=theirs.pk, worker="w") is not None  # their slots are their own
    Execution.objects.filter(pk=mine[0].pk).update(state="completed")  # as its worker would leave it
    execution_release(execution_id=mine[0].pk, worker="w")
    assert enqueued[-1:] == [mine[2].pk]  # the freed slot goes to the oldest queued execution


def test_the_reaper_frees_a_waiting_execution_whose_worker_died_before_letting_go(
    tenant_a: Tenant, enqueued: list[str]
) -> None:
    execution = submit(tenant_a, blueprint="demo.approval", input={})
    # The worker put it in waiting and died before releasing its lease; then it was answered.
    Execution.objects.filter(pk=execution.pk).update(
        state="waiting",
        wait_reason="approval",
        lease_owner="dead:1",
        lease_expires_at="2000-01-01T00:00:00Z",
        resume_requested=True,
    )
    enqueued.clear()
    found = executions_reap()
    assert found == {"orphaned": 1, "expired_leases": 1, "requeued": 0, "resumed": 0}
    assert enqueued == [execution.pk]
    row = Execution.objects.get(pk=execution.pk)
    assert (row.lease_owner, row.lease_expires_at) == ("", None)
    assert execution_claim(execution_id=execution.pk, worker="w2") is not None


def test_the_reaper_leaves_live_leases_alone_and_frees_finished_executions(
    tenant_a: Tenant, enqueued: list[str]
) -> None:
    live = submit(tenant_a)
    execution_claim(execution_id=live.pk, worker="w1")
    done = submit(tenant_a)
    Execution.objects.filter(pk=done.pk).update(
        state="completed", lease_owner="dead:1", lease_expires_at="2000-01-01T00:00:00Z"
    )
    enqueued.clear()
    found = executions_reap()
    assert (found["orphaned"], found["expired_leases"]) == (0, 1)
    assert enqueued == []
    assert Execution.objects.get(pk=live.pk).lease_owner == "w1"
    assert Execution.objects.get(pk=done.pk).lease_owner == ""  # its dead lease no longer holds a slot
    assert list(Execution.objects.filter(tenant=tenant_a).active().values_list("pk", flat=True)) == [live.pk]


def _lease_in(execution: Execution, state: str, **fields: Any) -> None:
    Execution.objects.filter(pk=execution.pk).update(state=state, **fields)


def test_pausing_again_and_again_never_looks_like_a_crash_loop(tenant_a: Tenant, enqueued: list[str]) -> None:
    from executions.runtime.run import MAX_CLAIMS

    execution = submit(tenant_a)
    for _ in range(MAX_CLAIMS + 3):
        claimed = execution_claim(execution_id=execution.pk, worker="w1")
        assert claimed is not None
        _lease_in(execution, "paused", resume_requested=True)  # paused by the run, then resumed
        execution_release(execution_id=execution.pk, worker="w1")
        _lease_in(execution, "paused")
    assert Execution.objects.get(pk=execution.pk).claims == 0


def test_an_answer_that_arrives_during_a_run_is_kept_for_the_next(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a, blueprint="demo.approval", input={})
    _lease_in(execution, "waiting", wait_reason="approval", resume_requested=True, resume_input={"value": "first"})
    claimed = execution_claim(execution_id=execution.pk, worker="w1")
    assert claimed is not None
    assert claimed.resume_input == {"value": "first"}  # taken with the claim...
    assert Execution.objects.get(pk=execution.pk).resume_input is None  # ...and cleared in the same update

    # The resumed run asks again; the answer comes while the worker still holds the lease.
    _lease_in(execution, "waiting", wait_reason="approval")
    execution_provide_input(tenant=tenant_a, execution_id=execution.pk, approve=True, input="second")
    enqueued.clear()
    execution_release(execution_id=execution.pk, worker="w1")
    row = Execution.objects.get(pk=execution.pk)
    assert row.resume_input == {"value": {"approved": True, "input": "second", "actor": ""}}
    assert row.resume_requested is True
    assert enqueued[0] == execution.pk


def test_a_cancel_that_arrives_as_the_worker_lets_go_is_carried_out(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = submit(tenant_a, blueprint="demo.approval", input={})
    assert execution_claim(execution_id=execution.pk, worker="w1") is not None
    _lease_in(execution, "waiting", wait_reason="approval")
    after = execution_cancel(tenant=tenant_a, execution_id=execution.pk, reason="too late?")
    assert (after.state, after.cancel_reason) == ("waiting", "too late?")
    execution_release(execution_id=execution.pk, worker="w1")
    row = Execution.objects.get(pk=execution.pk)
    assert row.state == "cancelled"
    assert ExecutionEvent.objects.filter(execution=execution).last().data["reason"] == "too late?"  # type: ignore[union-attr]


def test_a_fenced_worker_stores_no_artifact(tenant_a: Tenant) -> None:
    import threading

    from executions.kernel.artifacts import ArtifactType, PutArtifactRequest
    from executions.persistence.stores import ArtifactRefused, DjangoArtifactStore
    from tenants.models import TenantLimits

    execution = Execution.objects.create(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    fence = threading.Event()
    store = DjangoArtifactStore(tenant_a.pk, TenantLimits.objects.get(tenant=tenant_a), fence)
    request = PutArtifactRequest("artifact_x", execution.pk, "step_x", "a.txt", ArtifactType.TEXT, b"hi", "text/plain")
    fence.set()
    with pytest.raises(ArtifactRefused, match="no longer owns"):
        store.put(request)
    assert Tenant.objects.get(pk=tenant_a.pk).storage_bytes == 0
    assert not execution.artifacts.exists()


def test_a_question_is_answered_once_even_while_its_run_resumes(tenant_a: Tenant, enqueued: list[str]) -> None:
    """Between the claim and the resumed run's first event the row still says waiting; a second
    answer to the same question must not slip in (it would answer the next question unasked)."""
    from executions.kernel.state import WaitReason

    execution = submit(tenant_a, blueprint="demo.approval", input={})
    kernel = kernel_for(execution)
    kernel.start()
    kernel.wait_for(WaitReason.APPROVAL, {"prompt": "publish?"})
    execution_provide_input(tenant=tenant_a, execution_id=execution.pk, approve=True, input="first")
    assert execution_claim(execution_id=execution.pk, worker="w1") is not None
    assert Execution.objects.get(pk=execution.pk).state == "waiting"
    with pytest.raises(Conflict, match="already answered"):
        execution_provide_input(tenant=tenant_a, execution_id=execution.pk, approve=False, input="second")
    assert Execution.objects.get(pk=execution.pk).resume_input is None

    # The resumed run asks a new question: that one takes an answer, kept for the next run.
    resumed = kernel_for(Execution.objects.get(pk=execution.pk))
    resumed.input_received({"approved": True})
    resumed.wait_for(WaitReason.APPROVAL, {"prompt": "really?"})
    execution_provide_input(tenant=tenant_a, execution_id=execution.pk, approve=True, input="third")
    row = Execution.objects.get(pk=execution.pk)
    assert row.resume_input == {"value": {"approved": True, "input": "third", "actor": ""}}


def test_an_execution_says_what_started_it(tenant_a: Tenant, enqueued: list[str]) -> None:
    submitted, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    child, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1}, parent=submitted)
    assert (submitted.origin, child.origin) == (Execution.Origin.SUBMIT, Execution.Origin.CHILD)
    assert submitted.source is None
