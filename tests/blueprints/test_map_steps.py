"""Work inside a map counts as steps of its execution: each item a mapped node runs, and each step
of a blueprint mapped per item. The tenant's max_steps bites there too, during the map."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from executions.blueprints.functions import blueprint_function
from executions.models import Execution
from executions.runtime.run import execution_run
from executions.services.blueprints import blueprint_save
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import tenant_set_limits

pytestmark = pytest.mark.django_db(transaction=True)

CALLS = {"n": 0}
CALLS_LOCK = threading.Lock()


@blueprint_function("tests.map_counted")
def _counted(value: Any, ctx: Any) -> Any:
    with CALLS_LOCK:
        CALLS["n"] += 1
    return value


def _save(tenant: Tenant, name: str, nodes: dict[str, Any], edges: list[tuple[str, str]], **extra: Any) -> None:
    definition = {"entry": next(iter(nodes)), "nodes": nodes, "edges": [{"from": a, "to": b} for a, b in edges]}
    blueprint_save(tenant=tenant, name=name, definition={**definition, **extra})


def _run(tenant: Tenant, name: str, input: Any) -> Execution:
    execution, _ = execution_submit(tenant=tenant, blueprint=name, input=input)
    execution_run(execution.pk)
    execution.refresh_from_db()
    return execution


def _mapper(tenant: Tenant, concurrency: int = 4) -> None:
    node = {"kind": "function", "config": {"function": "tests.map_counted", "input": "{{ state.item }}"}}
    each = {"kind": "map", "config": {"items": "input", "node": node, "concurrency": concurrency, "max_items": 1000}}
    after = {"kind": "template", "config": {"template": "done"}}
    _save(tenant, "mapper", {"each": each, "after": after}, [("each", "after"), ("after", "end")],
          input_schema={"type": "array"})  # fmt: skip


def test_each_mapped_item_is_a_step_of_the_execution(tenant_a: Tenant, enqueued: list[str]) -> None:
    _mapper(tenant_a)
    execution = _run(tenant_a, "mapper", list(range(30)))
    assert execution.state == "completed", execution.error
    assert execution.usage["steps"] == 1 + 30 + 1  # the map, its items, the node after it


def test_the_step_limit_bites_inside_a_map(tenant_a: Tenant, enqueued: list[str]) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_steps": 20})
    _mapper(tenant_a, concurrency=1)
    CALLS["n"] = 0
    execution = _run(tenant_a, "mapper", list(range(500)))
    assert execution.state == "failed"
    assert (execution.error["category"], execution.error["code"]) == ("quota_exceeded", "steps_limit_exceeded")
    assert execution.error["message"] == "steps limit exceeded: 21 used of 20 allowed"
    assert CALLS["n"] == 19  # the map took the first step; its items the other 19, and no more ran
    assert execution.usage["steps"] == 20


def test_steps_of_a_blueprint_mapped_per_item_count_and_are_limited(tenant_a: Tenant, enqueued: list[str]) -> None:
    two = {"kind": "template", "config": {"template": "{{ input }}"}}
    _save(tenant_a, "two", {"a": two, "b": two}, [("a", "b"), ("b", "end")], input_schema={"type": "integer"})
    each = {"kind": "map", "config": {"items": "input", "blueprint": "two", "concurrency": 2}}
    _save(tenant_a, "per-item", {"each": each}, [("each", "end")], input_schema={"type": "array"})
    execution = _run(tenant_a, "per-item", list(range(5)))
    assert execution.state == "completed", execution.error
    assert execution.usage["steps"] == 1 + 5 * 2
    tenant_set_limits(tenant=tenant_a, changes={"max_steps": 8})
    execution = _run(tenant_a, "per-item", list(range(50)))
    assert execution.state == "failed"
    assert (execution.error["category"], execution.error["code"]) == ("quota_exceeded", "steps_limit_exceeded")
    assert execution.usage["steps"] <= 8 + 2 * 2  # at most what the items running at once had begun
