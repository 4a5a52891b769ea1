"""``enact rerun`` and ``enact fork``."""

from __future__ import annotations

import threading
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from executions.models import Execution, Step
from executions.services.submit import execution_submit
from tenants.models import Tenant

from .conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = StringIO()
    call_command("enact", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


def fails(*args: str) -> str:
    with pytest.raises(CommandError) as failed:
        call_command("enact", *args, stdout=StringIO(), stderr=StringIO())
    return str(failed.value)


def completed(execution_id: str) -> Execution:
    assert wait_until(lambda: Execution.objects.filter(pk=execution_id, state="completed", lease_owner="").exists())
    return Execution.objects.get(pk=execution_id)


def test_rerun_and_fork_print_the_new_execution(tenant_a: Tenant, inline_worker: list[threading.Thread]) -> None:
    source = completed(execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 4})[0].pk)
    rerun = completed(run("rerun", "acme", source.pk))
    assert (rerun.origin, rerun.source_id, rerun.output) == ("rerun", source.pk, 4)

    third = Step.objects.filter(execution=source).order_by("position")[2]
    fork = completed(run("fork", "acme", source.pk, "--from-step", third.pk, "--state", "100"))
    assert (fork.origin, fork.source_id, fork.output) == ("fork", source.pk, 102)
    assert list(Step.objects.filter(execution=fork).order_by("position").values_list("name", flat=True)) == [
        "n_3",
        "n_4",
    ]


def test_rerun_and_fork_say_what_is_wrong(
    tenant_a: Tenant, tenant_b: Tenant, inline_worker: list[threading.Thread]
) -> None:
    source = completed(execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 2})[0].pk)
    assert "not found" in fails("rerun", "globex", source.pk)
    assert "has no step step_nope" in fails("fork", "acme", source.pk, "--from-step", "step_nope")
    assert "invalid JSON" in fails("fork", "acme", source.pk, "--from-step", "x", "--state", "{")
    assert "--from-step" in fails("fork", "acme", source.pk)
    assert Execution.objects.count() == 1
