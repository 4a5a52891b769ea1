"""Every built-in blueprint runs its normal path: those written in Python (the registry) and the
demo ones defined as JSON, each with every input its schema lists in ``examples`` (an approval it
waits for is given). A new built-in is in these tests as soon as it exists, and fails them until
its schema says what it runs with."""

from __future__ import annotations

from typing import Any

import pytest

from executions.blueprints.demo import DEMO_BLUEPRINTS
from executions.models import Execution, Step
from executions.registry import registry
from executions.runtime.run import execution_run
from executions.services.blueprints import blueprints_install_demo
from executions.services.controls import execution_provide_input
from executions.services.submit import execution_submit
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)

# Blueprints that tests register for themselves are not built in.
CODE = {entry.name: entry.input_schema for entry in registry.all() if not entry.factory.__module__.startswith("tests")}
JSON = {name: definition.get("input_schema") or {} for name, definition in DEMO_BLUEPRINTS.items()}
BUILT_INS = {**CODE, **JSON}
MAX_APPROVALS = 5


def test_the_built_ins_are_all_here() -> None:
    assert {"demo.pipeline", "demo.slow", "demo.approval", "demo-triage", "demo-summarize"} <= set(BUILT_INS)


@pytest.mark.parametrize("name", sorted(BUILT_INS))
def test_a_built_in_runs_its_normal_path(tenant_a: Tenant, enqueued: list[str], name: str) -> None:
    examples = BUILT_INS[name].get("examples")
    assert examples, f"{name}: its input schema lists no examples to run it with"
    blueprints_install_demo(tenant=tenant_a)
    for example in examples:
        execution = _run_to_the_end(tenant_a, name, example)
        assert execution.state == "completed", (example, execution.error)
        assert not Step.objects.filter(execution=execution, state="failed").exclude(name="call").exists()


def _run_to_the_end(tenant: Tenant, name: str, input: Any) -> Execution:
    execution, _ = execution_submit(tenant=tenant, blueprint=name, input=input)
    execution_run(execution.pk)
    execution.refresh_from_db()
    for _ in range(MAX_APPROVALS):
        if execution.state != "waiting":
            break
        assert execution.wait_reason == "approval", execution.wait_reason
        execution_provide_input(tenant=tenant, execution_id=execution.pk, approve=True, actor="ops")
        execution_run(execution.pk)
        execution.refresh_from_db()
    return execution


def test_demo_triage_publishes_at_once_on_its_normal_path(tenant_a: Tenant, enqueued: list[str]) -> None:
    blueprints_install_demo(tenant=tenant_a)
    execution, _ = execution_submit(
        tenant=tenant_a, blueprint="demo-triage", input={"request": "When is my refund paid?", "items": ["late"]}
    )
    assert execution_run(execution.pk) == "completed"
    execution.refresh_from_db()
    assert execution.output["publish"]["approved"] is True
    assert "review" not in execution.output
    assert [n for (n,) in Step.objects.filter(execution=execution).order_by("position").values_list("name")][-2:] == [
        "route",
        "publish",
    ]
