"""Reruns and forks (services.derive), run by an in-process worker on the test database."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from enact_platform.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge, QuotaExceeded
from executions.models import Checkpoint, Execution, ExecutionEvent, PastCheckpoint, Step
from executions.persistence.group_commit import StagedUnit
from executions.services.controls import execution_provide_input
from executions.services.derive import execution_fork, execution_rerun
from executions.services.submit import execution_submit
from tenants.models import Tenant, TenantDailyUsage
from tenants.services import tenant_set_limits

from ..conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def run(tenant: Tenant, blueprint: str, input: Any, state: str = "completed") -> Execution:
    execution, _ = execution_submit(tenant=tenant, blueprint=blueprint, input=input)
    return finished(execution, state)


def finished(execution: Execution, state: str = "completed") -> Execution:
    assert wait_until(
        lambda: Execution.objects.filter(pk=execution.pk, state=state, lease_owner="").exists(), timeout=20
    ), Execution.objects.get(pk=execution.pk).state
    return Execution.objects.get(pk=execution.pk)


def steps(execution: Execution) -> list[Step]:
    return list(Step.objects.filter(execution=execution).order_by("position"))


def seqs(execution: Execution) -> list[int]:
    return list(ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("seq", flat=True))


def picture(execution: Execution) -> tuple[Any, ...]:
    """All a fork must leave alone of its source."""
    row = Execution.objects.get(pk=execution.pk)
    events = list(ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("seq", "type", "data"))
    step_rows = list(Step.objects.filter(execution=execution).values_list("id", "name", "state", "output"))
    checkpoint = Checkpoint.objects.filter(execution=execution).values_list("checkpoint_id", "data").first()
    return (row.state, row.output, row.usage, events, step_rows, checkpoint)


def test_a_fork_from_the_third_step_runs_that_step_on_with_the_edited_state(
    tenant_a: Tenant, inline_worker: list[threading.Thread]
) -> None:
    source = run(tenant_a, "demo.chain", {"n": 5})
    assert source.output == 5
    before = picture(source)
    third = steps(source)[2]
    assert third.name == "n_3"

    fork, created = execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=third.pk, state=10)
    assert created
    assert (fork.origin, fork.source_id) == ("fork", source.pk)
    fork = finished(fork)

    # n_3 ran again, given 10; n_1 and n_2 did not run in the fork.
    assert [(s.name, s.attempt, s.output) for s in steps(fork)] == [("n_3", 1, 11), ("n_4", 1, 12), ("n_5", 1, 13)]
    assert fork.output == 13
    assert fork.usage["steps"] == 3
    assert seqs(fork) == list(range(1, len(seqs(fork)) + 1))
    assert ExecutionEvent.objects.get(execution=fork, seq=1).type == "data-execution-start"
    assert (fork.blueprint, fork.blueprint_version, fork.input) == (
        source.blueprint,
        source.blueprint_version,
        source.input,
    )
    assert picture(source) == before


def test_a_fork_without_a_state_gives_the_step_the_state_it_was_given(
    tenant_a: Tenant, inline_worker: list[threading.Thread]
) -> None:
    source = run(tenant_a, "demo.chain", {"n": 5})
    fork, _ = execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=steps(source)[2].pk)
    fork = finished(fork)
    assert [(s.name, s.output) for s in steps(fork)] == [("n_3", 3), ("n_4", 4), ("n_5", 5)]
    assert fork.output == 5


def test_a_fork_from_the_first_step_starts_from_the_input(
    tenant_a: Tenant, inline_worker: list[threading.Thread]
) -> None:
    source = run(tenant_a, "demo.chain", {"n": 3})
    fork = finished(execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=steps(source)[0].pk)[0])
    assert [(s.name, s.output) for s in steps(fork)] == [("n_1", 1), ("n_2", 2), ("n_3", 3)]


def test_a_fork_of_a_fork_starts_from_the_state_its_source_was_forked_with(
    tenant_a: Tenant, inline_worker: list[threading.Thread]
) -> None:
    source = run(tenant_a, "demo.chain", {"n": 4})
    first = finished(
        execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=steps(source)[1].pk, state=20)[0]
    )
    assert first.output == 23
    second = finished(execution_fork(tenant=tenant_a, execution_id=first.pk, from_step=steps(first)[0].pk)[0])
    assert [(s.name, s.output) for s in steps(second)] == [("n_2", 21), ("n_3", 22), ("n_4", 23)]
    assert second.source_id == first.pk


def test_a_fork_from_the_join_of_a_fan_out_gets_what_the_branches_left(
    tenant_a: Tenant, inline_worker: list[threading.Thread]
) -> None:
    source = run(tenant_a, "demo.fanout", {"branches": 3})
    assert source.output == {"branches": 3, "sum_of_squares": 14}
    join = Step.objects.get(execution=source, name="join")
    fork = finished(execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=join.pk)[0])
    assert [s.name for s in steps(fork)] == ["join"]
    assert fork.output == {"branches": 3, "sum_of_squares": 14}

    edited = {"branch_1": {"branch": 1, "square": 100}}
    fork = finished(execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=join.pk, state=edited)[0])
    assert fork.output == {"branches": 1, "sum_of_squares": 100}


def test_a_step_inside_a_parallel_branch_is_refused(tenant_a: Tenant, inline_worker: list[threading.Thread]) -> None:
    source = run(tenant_a, "demo.fanout", {"branches": 2})
    branch = Step.objects.get(execution=source, name="branch_1")
    count = Execution.objects.count()
    with pytest.raises(InvalidInput, match="parallel branch") as refused:
        execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=branch.pk)
    assert refused.value.details["parent_step_id"] == Step.objects.get(execution=source, name="start").pk
    assert Execution.objects.count() == count


def test_a_waiting_source_can_be_forked_and_the_asking_step_asks_again(
    tenant_a: Tenant, inline_worker: list[threading.Thread]
) -> None:
    source = run(tenant_a, "demo.approval", {}, state="waiting")
    approve = Step.objects.get(execution=source, name="approve")
    fork = finished(execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=approve.pk)[0], "waiting")
    assert [s.name for s in steps(fork)] == ["approve"]
    execution_provide_input(tenant=tenant_a, execution_id=fork.pk, input=None, approve=True, actor="test")
    fork = finished(fork)
    assert fork.output == {"published": True, "note": None}
    assert Execution.objects.get(pk=source.pk).state == "waiting"


def test_a_running_source_cannot_be_forked(tenant_a: Tenant, inline_worker: list[threading.Thread]) -> None:
    source, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 3, "seconds": 5})
    assert wait_until(lambda: Step.objects.filter(execution=source).exists())
    with pytest.raises(Conflict, match="running") as refused:
        execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=Step.objects.filter(execution=source)[0].pk)
    assert refused.value.details == {"state": "running"}
    assert Execution.objects.count() == 1
    from executions.services.controls import execution_cancel  # only this test cancels

    execution_cancel(tenant=tenant_a, execution_id=source.pk, reason="done", actor="test")
    finished(source, "cancelled")


@pytest.mark.parametrize("from_step", ["step_unknown", "", None, 3, ["x"]])
def test_a_step_that_is_not_of_the_execution_is_refused(
    tenant_a: Tenant, inline_worker: list[threading.Thread], from_step: Any
) -> None:
    source = run(tenant_a, "demo.chain", {"n": 2})
    with pytest.raises(InvalidInput) as refused:
        execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=from_step)
    assert refused.value.details["field"] == "from_step"
    assert Execution.objects.count() == 1


def test_steps_and_executions_of_others_are_refused_alike(
    tenant_a: Tenant, tenant_b: Tenant, inline_worker: list[threading.Thread]
) -> None:
    mine = run(tenant_a, "demo.chain", {"n": 2})
    other = run(tenant_a, "demo.chain", {"n": 2})
    theirs = run(tenant_b, "demo.chain", {"n": 2})
    count = Execution.objects.count()
    for step in (steps(other)[0], steps(theirs)[0]):  # another execution's step, the tenant's or not
        with pytest.raises(InvalidInput, match="has no step"):
            execution_fork(tenant=tenant_a, execution_id=mine.pk, from_step=step.pk)
    with pytest.raises(NotFound):
        execution_fork(tenant=tenant_a, execution_id=theirs.pk, from_step=steps(theirs)[0].pk)
    with pytest.raises(NotFound):
        execution_rerun(tenant=tenant_a, execution_id=theirs.pk)
    assert Execution.objects.count() == count


def test_a_state_past_the_input_limit_or_not_json_is_refused(
    tenant_a: Tenant, inline_worker: list[threading.Thread]
) -> None:
    source = run(tenant_a, "demo.chain", {"n": 2})
    tenant_set_limits(tenant=tenant_a, changes={"max_input_bytes": 100})
    with pytest.raises(PayloadTooLarge):
        execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=steps(source)[0].pk, state="x" * 200)
    with pytest.raises(InvalidInput, match="JSON"):
        execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=steps(source)[0].pk, state=float("nan"))
    assert Execution.objects.count() == 1


def test_a_blueprint_version_that_is_gone_is_refused(tenant_a: Tenant, inline_worker: list[threading.Thread]) -> None:
    source = run(tenant_a, "demo.chain", {"n": 2})
    Execution.objects.filter(pk=source.pk).update(blueprint_version=99)
    with pytest.raises(InvalidInput, match="no longer exists"):
        execution_rerun(tenant=tenant_a, execution_id=source.pk)
    with pytest.raises(InvalidInput, match="no longer exists"):
        execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=steps(source)[0].pk)
    assert Execution.objects.count() == 1


def test_a_rerun_runs_the_same_version_and_input_under_the_quota(
    tenant_a: Tenant, inline_worker: list[threading.Thread]
) -> None:
    source = run(tenant_a, "demo.chain", {"n": 3})
    rerun, created = execution_rerun(tenant=tenant_a, execution_id=source.pk, metadata={"why": "again"})
    assert created
    assert (rerun.origin, rerun.source_id, rerun.metadata) == ("rerun", source.pk, {"why": "again"})
    rerun = finished(rerun)
    assert (rerun.blueprint, rerun.blueprint_version, rerun.input, rerun.output) == ("demo.chain", 1, {"n": 3}, 3)
    assert [s.name for s in steps(rerun)] == ["n_1", "n_2", "n_3"]
    again, created = execution_rerun(tenant=tenant_a, execution_id=source.pk, idempotency_key="k")
    assert created
    assert execution_rerun(tenant=tenant_a, execution_id=source.pk, idempotency_key="k") == (again, False)
    finished(again)

    used = sum(TenantDailyUsage.objects.values_list("executions", flat=True))
    tenant_set_limits(tenant=tenant_a, changes={"executions_per_day": used})
    with pytest.raises(QuotaExceeded):
        execution_rerun(tenant=tenant_a, execution_id=source.pk)
    with pytest.raises(QuotaExceeded):
        execution_fork(tenant=tenant_a, execution_id=source.pk, from_step=steps(source)[0].pk)
    assert Execution.objects.count() == 3


def test_every_checkpoint_is_kept_in_order(tenant_a: Tenant, inline_worker: list[threading.Thread]) -> None:
    source = run(tenant_a, "demo.chain", {"n": 4})
    past = list(PastCheckpoint.objects.filter(execution=source).order_by("seq"))
    assert [p.data["position"]["lanes"][0]["node"] for p in past] == ["n_2", "n_3", "n_4", None]
    assert past[-1].checkpoint_id == Checkpoint.objects.get(execution=source).checkpoint_id


def test_merged_units_keep_every_checkpoint() -> None:
    first = StagedUnit(events=[], steps={}, checkpoint='{"seq": 1}')
    first.merge(StagedUnit(events=[], steps={}, checkpoint=None))
    first.merge(StagedUnit(events=[], steps={}, checkpoint='{"seq": 3}'))
    assert (first.checkpoint, first.history) == ('{"seq": 3}', ['{"seq": 1}', '{"seq": 3}'])
