"""A node's retry policy covers the blueprints it runs within its step (a map's per item, an inline
subgraph): a nested run that failed with an error worth retrying is tried again; one that failed
with an error that must not be retried is not."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from executions.blueprints.functions import blueprint_function
from executions.kernel import ExecutionError, RetryPolicy
from executions.models import Execution
from executions.runtime.run import execution_run
from executions.services.blueprints import blueprint_save
from executions.services.submit import execution_submit
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)

CALLS = {"flaky": 0, "refused": 0}
LOCK = threading.Lock()


@blueprint_function("tests.nested_flaky")
def _flaky(value: Any, ctx: Any) -> Any:
    """Fails its first two calls with a retryable error (retried once inside the nested run)."""
    with LOCK:
        CALLS["flaky"] += 1
        call = CALLS["flaky"]
    if call <= 2:
        raise ExecutionError.tool("upstream: HTTP 503", retryable=True, retry_policy=RetryPolicy(max_retries=1))
    return value


@blueprint_function("tests.nested_refused")
def _refused(value: Any, ctx: Any) -> Any:
    with LOCK:
        CALLS["refused"] += 1
    raise ExecutionError.tool("upstream: HTTP 400: bad request", retryable=False)


def _save(tenant: Tenant, name: str, node: dict[str, Any], **extra: Any) -> None:
    definition = {"entry": "n", "nodes": {"n": node}, "edges": [{"from": "n", "to": "end"}], **extra}
    blueprint_save(tenant=tenant, name=name, definition=definition)


def _outer(kind: str) -> dict[str, Any]:
    if kind == "map":
        config: dict[str, Any] = {"items": "input", "blueprint": "inner", "concurrency": 1}
    else:
        config = {"blueprint": "inner", "input": "{{ input }}"}
    return {"kind": kind, "config": config, "retry": {"max_retries": 2, "backoff": "none"}}


def _run(tenant: Tenant, input: Any) -> Execution:
    execution, _ = execution_submit(tenant=tenant, blueprint="outer", input=input)
    execution_run(execution.pk)
    execution.refresh_from_db()
    return execution


def _attempts(execution: Execution) -> list[int]:
    return [step.attempt for step in execution.steps.order_by("position")]


@pytest.mark.parametrize("kind", ["map", "subgraph"])
def test_a_nested_run_that_failed_retryably_is_retried_by_the_node_policy(
    tenant_a: Tenant, enqueued: list[str], kind: str
) -> None:
    CALLS["flaky"] = 0
    inner = {"kind": "function", "config": {"function": "tests.nested_flaky"}}
    _save(tenant_a, "inner", inner, input_schema={"type": "integer"})
    _save(tenant_a, "outer", _outer(kind), input_schema={"type": "array" if kind == "map" else "integer"})
    execution = _run(tenant_a, [7] if kind == "map" else 7)
    assert execution.state == "completed", execution.error
    # Attempt 1 of the node: the nested run tries the function twice, both fail; attempt 2: it works.
    assert _attempts(execution) == [1, 2]
    assert CALLS["flaky"] == 3


@pytest.mark.parametrize("kind", ["map", "subgraph"])
def test_a_nested_run_that_failed_for_good_is_not_retried(tenant_a: Tenant, enqueued: list[str], kind: str) -> None:
    CALLS["refused"] = 0
    inner = {"kind": "function", "config": {"function": "tests.nested_refused"}}
    _save(tenant_a, "inner", inner, input_schema={"type": "integer"})
    _save(tenant_a, "outer", _outer(kind), input_schema={"type": "array" if kind == "map" else "integer"})
    execution = _run(tenant_a, [7] if kind == "map" else 7)
    assert execution.state == "failed"
    assert execution.error is not None
    assert execution.error["category"] == "tool"
    assert execution.error["retryable"] is False
    assert _attempts(execution) == [1]
    assert CALLS["refused"] == 1
