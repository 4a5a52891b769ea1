"""The node kinds that compute, choose and wait within the run: function, router, template, wait.

(``map`` and ``subgraph`` are in ``nested.py``, ``llm`` in ``llm.py``, ``http`` in ``http.py``.)
"""

from __future__ import annotations

from typing import Any

from executions.blueprints.expressions import ExpressionError, compile_expression
from executions.blueprints.kinds.base import (
    BuildContext,
    Checker,
    Kind,
    NodeSpec,
    Resources,
    ValidationContext,
    case_targets,
    check_cases,
    expression_names,
    render,
    unknown_keys,
)
from executions.blueprints.schemas import schema_problems
from executions.kernel import ExecutionError, StepType, WaitReason
from executions.kernel.graph import NodeFn

# --- function ------------------------------------------------------------------------------------


def _check_function(config: dict[str, Any], checker: Checker, context: ValidationContext) -> None:
    unknown_keys(config, {"function", "input"}, checker)
    name = config.get("function")
    if not isinstance(name, str) or name not in context.functions:
        known = ", ".join(sorted(context.functions)) or "none are registered"
        checker.add(f"unknown function {name!r}; functions: {known}", "function")
    if "input" in config:
        checker.template(config["input"], "input")


def _build_function(spec: NodeSpec, resources: Resources, build: BuildContext) -> NodeFn:
    name = spec.config["function"]
    template = spec.config.get("input")

    def run(state: Any, ctx: Any) -> Any:
        registered = resources.functions.get(name)
        if registered is None:  # registered when saved, not in this worker: a deployment problem
            raise ExecutionError.validation(f"function {name!r} is not registered in this worker")
        value = state if template is None else render(template, state, f"node '{spec.name}' input")
        return registered.fn(value, ctx)

    return run


FUNCTION = Kind("function", _check_function, _build_function)


# --- router --------------------------------------------------------------------------------------


def _check_router(config: dict[str, Any], checker: Checker, context: ValidationContext) -> None:
    check_cases(config, checker, context.node_names)
    if "from" in config:
        checker.add("a router routes from itself; leave out 'from'", "from")


def _build_router(spec: NodeSpec, resources: Resources, build: BuildContext) -> NodeFn:
    cases = [(compile_expression(case["when"]), case["to"]) for case in spec.config["cases"]]
    default = spec.config.get("default")

    def run(state: Any, ctx: Any) -> Any:
        names = expression_names(state)
        for index, (expression, target) in enumerate(cases):
            try:
                if expression.evaluate(names):
                    return {"route": target, "case": index}
            except ExpressionError as exc:
                raise ExecutionError.validation(
                    f"router '{spec.name}', case {index}: {exc.message}", code="router_failed"
                ) from None
        return {"route": default, "case": None}

    # The step's output names the route; the edge reads it back, so the choice is made once.
    build.routers[spec.name] = (lambda state: (state.get(spec.name) or {}).get("route"), case_targets(spec.config))
    return run


ROUTER = Kind("router", _check_router, _build_router, StepType.ROUTER_NODE)


# --- template ------------------------------------------------------------------------------------


def _check_template(config: dict[str, Any], checker: Checker, context: ValidationContext) -> None:
    unknown_keys(config, {"template"}, checker)
    if "template" not in config:
        checker.add("a template node needs a template (a string or JSON value with {{ ... }} placeholders)")
        return
    checker.template(config["template"], "template")


def _build_template(spec: NodeSpec, resources: Resources, build: BuildContext) -> NodeFn:
    template = spec.config["template"]
    return lambda state, ctx: render(template, state, f"template '{spec.name}'")


TEMPLATE = Kind("template", _check_template, _build_template)


# --- wait ----------------------------------------------------------------------------------------


def _check_wait(config: dict[str, Any], checker: Checker, context: ValidationContext) -> None:
    unknown_keys(config, {"mode", "prompt", "schema"}, checker)
    if config.get("mode") not in ("input", "approval"):
        checker.add('must be "input" or "approval"', "mode")
    if "prompt" in config:
        checker.template(config["prompt"], "prompt")
    schema = config.get("schema")
    if schema is not None and config.get("mode") != "input":
        checker.add("a schema is for mode input only", "schema")
    elif schema is not None:
        for message in schema_problems(schema):
            checker.add(message, "schema")


def _build_wait(spec: NodeSpec, resources: Resources, build: BuildContext) -> NodeFn:
    approval = spec.config["mode"] == "approval"
    schema = spec.config.get("schema")

    def run(state: Any, ctx: Any) -> Any:
        prompt = render(spec.config.get("prompt", ""), state, f"node '{spec.name}' prompt")
        if approval:
            answer = ctx.interrupt(WaitReason.APPROVAL, prompt=prompt)
            answer = answer if isinstance(answer, dict) else {"approved": bool(answer)}
            return {"approved": bool(answer.get("approved")), "note": answer.get("input"), "by": answer.get("actor")}
        return ctx.interrupt(WaitReason.USER_INPUT, prompt=prompt, schema=schema)

    return run


WAIT = Kind("wait", _check_wait, _build_wait, StepType.WAIT_NODE)
