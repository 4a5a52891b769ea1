"""Numbers JSON cannot hold (NaN, Infinity) fail the step that makes them, at once and clearly:
the database refuses them, and a refused write would look like a crashed worker, retried."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from executions.blueprints import tools
from executions.blueprints.expressions import ExpressionError, compile_expression, render_template
from executions.blueprints.functions import blueprint_function
from executions.models import Execution, Step
from executions.runtime.run import execution_run
from executions.services.blueprints import blueprint_save
from executions.services.submit import execution_submit
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)


@blueprint_function("tests.not_a_number")
def _not_a_number(value: Any, ctx: Any) -> Any:
    return {"ratio": math.nan, "nested": [1, {"big": -math.inf}]}


def _run(tenant: Tenant, node: dict[str, Any]) -> Execution:
    definition = {"entry": "n", "nodes": {"n": node}, "edges": [{"from": "n", "to": "end"}]}
    blueprint_save(tenant=tenant, name="nonfinite", definition=definition)
    execution, _ = execution_submit(tenant=tenant, blueprint="nonfinite", input={})
    assert execution_run(execution.pk) == "failed"
    execution.refresh_from_db()
    return execution


@pytest.mark.parametrize(
    "template",
    ["{{ float('nan') }}", "{{ float('inf') }}", "{{ 1e308 * 10 }}", "{{ [1, -float('infinity')] }}"],
)
def test_a_non_finite_number_from_an_expression_fails_the_step_at_once(
    tenant_a: Tenant, enqueued: list[str], template: str
) -> None:
    execution = _run(tenant_a, {"kind": "template", "config": {"template": {"value": template}}})
    assert execution.state == "failed"
    assert execution.claims == 1  # not retried as a worker that crashed
    assert execution.error["category"] == "validation"
    assert "not finite" in execution.error["message"], execution.error
    assert "stopped its worker" not in execution.error["message"]
    assert list(Step.objects.filter(execution=execution).values_list("name", "state")) == [("n", "failed")]


def test_a_non_finite_number_from_a_function_fails_the_step_at_once(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = _run(tenant_a, {"kind": "function", "config": {"function": "tests.not_a_number"}})
    assert execution.claims == 1
    assert (execution.error["category"], execution.error["code"]) == ("validation", "not_json")
    assert execution.error["message"] == "node 'n': its output holds a number that is not finite (NaN or Infinity)"


@pytest.mark.parametrize("text", ["float('nan')", "float(' -Infinity ')", "1e308 * 10", "-1e308 - 1e308"])
def test_expressions_refuse_to_make_a_non_finite_number(text: str) -> None:
    with pytest.raises(ExpressionError, match="not finite"):
        compile_expression(text).evaluate({})


def test_finite_arithmetic_is_untouched() -> None:
    assert render_template("{{ float('1.5') * 2 }}", {}) == 3.0
    assert compile_expression("1e308 + 1").evaluate({}) == 1e308


def test_a_json_body_with_nan_is_kept_as_text() -> None:
    body = b'{"ratio": NaN, "top": Infinity}'
    response = httpx.Response(200, headers={"content-type": "application/json"}, content=body)
    assert tools._result(response, body)["body"] == body.decode()
