"""The node kinds that run other blueprints: ``map`` (one per item of a list) and ``subgraph``.

A nested blueprint runs within the step (in memory, see :func:`run_nested`), or, for a subgraph
in mode ``child``, as a child execution of its own. To compile a nested blueprint these kinds use
the compiler that ``definition.py`` hands them in the :class:`BuildContext` (they never import it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from enact_platform.errors import InvalidInput
from executions.blueprints.expressions import ExpressionError, compile_expression
from executions.blueprints.kinds.base import (
    BuildContext,
    Checker,
    Kind,
    NodeSpec,
    Resources,
    ValidationContext,
    expression_names,
    render,
    unknown_keys,
)
from executions.blueprints.schemas import validate_input
from executions.kernel import (
    ExecutionError,
    ExecutionKernel,
    ExecutionState,
    RetryPolicy,
    StepType,
    TenantContext,
    WaitReason,
)
from executions.kernel.enforcement import LimitType, Violation
from executions.kernel.graph import CompiledGraph, NodeFn

MAX_SUBGRAPH_DEPTH = 1  # a blueprint run within a step runs no other within it
MAP_MAX_ITEMS = 1000
MAP_MAX_CONCURRENCY = 16


# --- shared by map and subgraph ------------------------------------------------------------------


def _check_blueprint_ref(config: dict[str, Any], checker: Checker, context: ValidationContext) -> None:
    name, version = config.get("blueprint"), config.get("version")
    if not isinstance(name, str):
        checker.add("name the blueprint to run", "blueprint")
        return
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        checker.add("must be a version number (1 or more)", "version")
        return
    problem = context.check_blueprint(name, version)
    if problem:
        checker.add(problem, "blueprint")


def run_nested(
    definition: dict[str, Any],
    input: Any,
    ctx: Any,
    resources: Resources,
    *,
    label: str,
    compile_definition: Callable[[str, dict[str, Any], Resources], CompiledGraph],
    budget: StepBudget,
) -> Any:
    """Run a blueprint to its end within this step, in memory, as part of the calling node.
    ``compile_definition`` is the one the build was handed (``BuildContext.compile_definition``).

    Its usage (tokens, cost, and its steps, taken from ``budget``) counts for the calling
    execution; a cancel of the step cancels it. It cannot wait for input or approval (nothing
    could answer it): such a blueprint fails here."""
    if resources.depth >= MAX_SUBGRAPH_DEPTH:
        raise ExecutionError.policy_violation(f"{label}: a blueprint run within a step cannot run another")
    nested = Resources(**{**resources.__dict__, "depth": resources.depth + 1})
    graph = compile_definition(label, definition, nested)
    token = ctx.cancellation.child_token()
    limits = replace(ctx.tenant.limits, max_steps=budget.remaining())
    kernel = ExecutionKernel.new(TenantContext(ctx.tenant.tenant_id, limits=limits))
    kernel.with_cancellation_token(token)
    try:
        result = kernel.execute_graph(graph, {"input": input})
    finally:
        ctx.cancellation.detach(token)
    usage = kernel.usage_snapshot() or {}
    ctx.record_usage(
        input_tokens=int(usage.get("input_tokens", 0)),
        output_tokens=int(usage.get("output_tokens", 0)),
        cost_usd=float(usage.get("cost_usd", 0.0)),
    )
    budget.took(int(usage.get("steps", 0)))
    if result.error is not None and result.error.code == f"{LimitType.STEPS.value}_limit_exceeded":
        raise budget.exceeded()
    if result.state is ExecutionState.COMPLETED:
        return result.output
    if result.state is ExecutionState.WAITING:
        raise ExecutionError.validation(f"{label} waits for {result.wait_reason}; a nested blueprint cannot wait")
    if result.error is not None:
        # A failure another run could get past stays one (the node's retry policy may run the
        # blueprint again); one no retry helps does not.
        inner = result.error
        policy = inner.retry_policy if inner.worth_retrying else RetryPolicy.no_retry()
        raise ExecutionError.tool(f"{label} failed: {inner.message}", retry_policy=policy)
    raise ExecutionError.tool(f"{label} ended {result.state.value}")


class StepBudget:
    """The steps that work within one step (a map's items, a nested blueprint's steps) may take:
    what the execution's max_steps leaves. Shared by a map's items on their threads; what they
    took is counted as steps of the execution when the step ends (:meth:`record`)."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.maximum: int | None = ctx.tenant.limits.max_steps
        self.before = int(ctx.steps_used)  # the step running this work included
        self.taken = 0
        self.lock = threading.Lock()

    def remaining(self) -> int | None:
        with self.lock:
            return None if self.maximum is None else max(0, self.maximum - self.before - self.taken)

    def take_one(self) -> None:
        """Count one more step, or fail as the kernel would before a step past the limit."""
        with self.lock:
            if self.maximum is not None and self.before + self.taken + 1 > self.maximum:
                raise self._violation()
            self.taken += 1

    def took(self, count: int) -> None:
        with self.lock:
            self.taken += count

    def exceeded(self) -> ExecutionError:
        with self.lock:
            return self._violation()

    def _violation(self) -> ExecutionError:
        used, maximum = self.before + self.taken + 1, self.maximum or 0
        message = f"{LimitType.STEPS.value} limit exceeded: {used} used of {maximum} allowed"
        return Violation(LimitType.STEPS, used, maximum, message).to_error()

    def record(self) -> None:
        self.ctx.record_steps(self.taken)


def _fits(definition: dict[str, Any], value: Any, where: str) -> None:
    """A nested blueprint's input is checked against its schema, as a submission's is."""
    try:
        validate_input(definition.get("input_schema") or {"type": "object"}, value)
    except InvalidInput as exc:
        raise ExecutionError.validation(f"{where}: {exc.message}") from None


# --- map ---------------------------------------------------------------------------------------


def _check_map(config: dict[str, Any], checker: Checker, context: ValidationContext) -> None:
    unknown_keys(config, {"items", "blueprint", "version", "node", "concurrency", "max_items"}, checker)
    checker.expression(config.get("items"), "items")
    if ("blueprint" in config) == ("node" in config):
        checker.add('give either "blueprint" (a blueprint to run per item) or "node" (a node to run per item)')
    elif "blueprint" in config:
        _check_blueprint_ref(config, checker, context)
    else:
        _check_inline_node(config["node"], checker.at("node"), context)
    for key, top in (("concurrency", MAP_MAX_CONCURRENCY), ("max_items", MAP_MAX_ITEMS)):
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top):
            checker.add(f"must be a whole number from 1 to {top}", key)


def _check_inline_node(node: Any, checker: Checker, context: ValidationContext) -> None:
    if not isinstance(node, dict) or set(node) - {"kind", "config"}:
        checker.add('must be {"kind": ..., "config": {...}}')
        return
    # One thread per item shares the step's context: kinds that stream, loop or wait for an
    # approval need a step of their own, so they are mapped as a blueprint instead.
    if node.get("kind") not in ("function", "template"):
        checker.add('a mapped node is a function or a template; map a "blueprint" for anything else', "kind")
        return
    context.kinds[node["kind"]].check(node.get("config", {}), checker.at("config"), context)


def _build_map(spec: NodeSpec, resources: Resources, build: BuildContext) -> NodeFn:
    items_expression = compile_expression(spec.config["items"])
    concurrency = spec.config.get("concurrency", 4)
    max_items = spec.config.get("max_items", 100)
    inline = spec.config.get("node")
    inner: NodeFn | None = None
    if inline is not None:
        inner_spec = NodeSpec(f"{spec.name}.item", inline["kind"], dict(inline.get("config", {})), None, None, "")
        inner_build = BuildContext(build.compile_definition, build.kinds)
        inner = build.kinds[inline["kind"]].build(inner_spec, resources, inner_build)

    def one(state: Any, ctx: Any, budget: StepBudget, index: int, item: Any) -> Any:
        if inner is not None:
            budget.take_one()
            return inner({**state, "item": item, "index": index}, ctx)
        definition = resources.load_blueprint(spec.config["blueprint"], spec.config.get("version"))
        if definition is None:
            raise ExecutionError.validation(f"map '{spec.name}': blueprint {spec.config['blueprint']!r} is gone")
        _fits(definition, item, f"map '{spec.name}', item {index}")
        label = f"{spec.config['blueprint']}[{index}]"
        return run_nested(
            definition, item, ctx, resources, label=label, compile_definition=build.compile_definition, budget=budget
        )

    def run(state: Any, ctx: Any) -> Any:
        try:
            items = items_expression.evaluate(expression_names(state))
        except ExpressionError as exc:
            raise ExecutionError.validation(f"map '{spec.name}' items: {exc.message}") from None
        if not isinstance(items, list):
            raise ExecutionError.validation(f"map '{spec.name}': items must be a list, not {type(items).__name__}")
        if len(items) > max_items:
            raise ExecutionError.validation(f"map '{spec.name}': {len(items)} items, more than max_items {max_items}")
        budget = StepBudget(ctx)
        try:
            return _map_bounded(lambda i, item: one(state, ctx, budget, i, item), items, concurrency, ctx)
        finally:
            budget.record()

    return run


def _map_bounded(fn: Any, items: list[Any], concurrency: int, ctx: Any) -> list[Any]:
    """Results in the order of the items; the first failure (in item order) fails the whole map."""
    if not items:
        return []
    failed = threading.Event()

    def guarded(index: int, item: Any) -> Any:
        if failed.is_set() or ctx.is_cancelled:
            return None  # a sibling failed or the step was cancelled: do not start more work
        try:
            return fn(index, item)
        except BaseException:
            failed.set()
            raise

    with ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix="enact-map") as pool:
        futures = [pool.submit(guarded, i, item) for i, item in enumerate(items)]
        return [future.result() for future in futures]


MAP = Kind("map", _check_map, _build_map)


# --- subgraph --------------------------------------------------------------------------------------


def _check_subgraph(config: dict[str, Any], checker: Checker, context: ValidationContext) -> None:
    unknown_keys(config, {"blueprint", "version", "input", "mode", "background", "inherit_inbox"}, checker)
    mode = config.get("mode", "inline")
    if mode not in ("inline", "child"):
        checker.add('must be "inline" (runs within this step) or "child" (a child execution)', "mode")
    if mode == "child":
        name, version = config.get("blueprint"), config.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
            checker.add("must be a version number (1 or more)", "version")
            return
        problem = (
            context.check_blueprint(name, version, False) if isinstance(name, str) else "name the blueprint to run"
        )
        if problem:
            checker.add(problem, "blueprint")
    else:
        _check_blueprint_ref(config, checker, context)
        for key in ("background", "inherit_inbox"):
            if key in config:
                checker.add('only for mode "child"', key)
    for key in ("background", "inherit_inbox"):
        if key in config and not isinstance(config[key], bool):
            checker.add("must be true or false", key)
    if "input" in config:
        checker.template(config["input"], "input")


def _build_subgraph(spec: NodeSpec, resources: Resources, build: BuildContext) -> NodeFn:
    name, version = spec.config["blueprint"], spec.config.get("version")
    child = spec.config.get("mode") == "child"

    def run(state: Any, ctx: Any) -> Any:
        if child and ctx.has_answer:
            return _child_ended(spec, ctx.interrupt(WaitReason.SUB_AGENT))
        definition = resources.load_blueprint(name, version)
        if definition is None:
            raise ExecutionError.validation(f"subgraph '{spec.name}': blueprint {name!r} is gone")
        value = render(spec.config["input"], state, f"subgraph '{spec.name}' input") if "input" in spec.config else {}
        _fits(definition, value, f"subgraph '{spec.name}'")
        if not child:
            budget = StepBudget(ctx)
            try:
                return run_nested(
                    definition,
                    value,
                    ctx,
                    resources,
                    label=f"{name}",
                    compile_definition=build.compile_definition,
                    budget=budget,
                )
            finally:
                budget.record()
        return _spawn(spec, resources, ctx, value)

    return run


def _spawn(spec: NodeSpec, resources: Resources, ctx: Any, value: Any) -> Any:
    """Submit the child; a background child is left to run, an awaited one is waited for."""
    if resources.spawn_child is None:
        raise ExecutionError.validation(f"subgraph '{spec.name}': child executions need a platform run")
    try:
        child_id = resources.spawn_child(
            spec.config["blueprint"],
            spec.config.get("version"),
            value,
            bool(spec.config.get("inherit_inbox")),
            spec.name,  # with the node's visit, the child's idempotency key: a rerun finds it
        )
    except ExecutionError:
        raise
    except Exception as exc:  # refused by the tenant's quotas, say
        raise ExecutionError.quota_exceeded(f"subgraph '{spec.name}': the child was refused: {exc}") from None
    if spec.config.get("background"):
        return {"child_id": child_id, "background": True}
    return ctx.interrupt(WaitReason.SUB_AGENT, prompt={"child_id": child_id, "blueprint": spec.config["blueprint"]})


def _child_ended(spec: NodeSpec, answer: Any) -> Any:
    if not isinstance(answer, dict) or answer.get("state") != "completed":
        state = answer.get("state") if isinstance(answer, dict) else None
        error = (answer.get("error") or {}) if isinstance(answer, dict) else {}
        message = error.get("message") if isinstance(error, dict) else None
        raise ExecutionError.tool(
            f"subgraph '{spec.name}': the child ended {state}" + (f": {message}" if message else "")
        )
    return {"child_id": answer["child_id"], "output": answer.get("output")}


SUBGRAPH = Kind("subgraph", _check_subgraph, _build_subgraph, StepType.GRAPH_NODE)
