"""A blueprint's JSON definition: its shape, its validation, and its compilation into a kernel graph.

A definition, as tenants write it::

    {
      "description": "Answer a ticket",
      "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
      "entry": "draft",
      "nodes": {
        "draft":  {"kind": "llm", "config": {"provider": "demo", "model": "demo", "prompt": "{{ input.text }}"}},
        "check":  {"kind": "router", "config": {"routes": [{"when": "len(state.draft.text) > 20", "to": "review"}],
                                                 "default": "end"}},
        "review": {"kind": "wait", "config": {"mode": "approval", "prompt": "Send {{ state.draft.text }}?"}}
      },
      "edges": [{"from": "draft", "to": "check"}],
      "routes": []
    }

The run's state is one object: ``{"input": <the execution's input>, "<node>": <its output>, ...}``.
Each node reads it (its templates and expressions see ``state`` and ``input``) and adds its own
output under its name; a step records only that output. The execution's output is the final state.

Validation reports every problem at once, each with the place it concerns (``nodes.check.config.routes[0].to``)
and a message a person can act on. Nothing here touches the database: what a run needs from the
platform (secrets, prices, the tool policy, other blueprints) comes in a :class:`Resources`.

Each node's config is checked, and its node built, by its kind (``kinds/``); this module drives
them and handles what is the definition's own: its fields, node names, edges and routes.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from executions.blueprints.expressions import compile_expression
from executions.blueprints.kinds import KINDS
from executions.blueprints.kinds.base import (
    BuildContext,
    Checker,
    NodeSpec,
    Problem,
    Resources,
    ValidationContext,
    case_targets,
    check_cases,
    expression_names,
    known_node,
)
from executions.blueprints.redaction import RedactingContext, Redactor
from executions.blueprints.schemas import schema_problems
from executions.kernel import END, ExecutionError, GraphBuilder, GraphValidationError, RetryPolicy, StepResult
from executions.kernel.cancellation import Cancelled
from executions.kernel.errors import Backoff
from executions.kernel.graph import CompiledGraph, NodeFn

# Resources and Problem are defined with the kinds (which use them) and are part of this API too.
__all__ = [
    "NAME",
    "BlueprintInvalid",
    "Problem",
    "Resources",
    "case_router",
    "compile_definition",
    "json_problem",
    "merge_branches",
    "node_specs",
    "referenced_secrets",
    "validate",
]

logger = logging.getLogger(__name__)

NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
RESERVED_NODE_NAMES = {"input", "state", "end", "secrets"}
TOP_LEVEL_KEYS = {"description", "input_schema", "entry", "nodes", "edges", "routes"}
NODE_KEYS = {"kind", "config", "description", "retry", "max_iterations"}
MAX_NODES = 200
DEFAULT_AGENT_ROUNDS = 8


class BlueprintInvalid(ValueError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in problems))


# --- validation ----------------------------------------------------------------------------------


def validate(
    definition: Any,
    *,
    check_blueprint: Callable[[str, int | None], str | None] | None = None,
    functions: Mapping[str, Any] | None = None,
) -> list[Problem]:
    checker = Checker()
    if not isinstance(definition, dict):
        return [Problem("", "a blueprint definition must be a JSON object")]
    for key in sorted(set(definition) - TOP_LEVEL_KEYS):
        checker.add(f"unknown field; allowed: {', '.join(sorted(TOP_LEVEL_KEYS))}", key)
    nodes = definition.get("nodes")
    if not isinstance(nodes, dict) or not nodes:
        checker.add("must be an object of one or more nodes, by name", "nodes")
        return checker.problems
    if len(nodes) > MAX_NODES:
        checker.add(f"at most {MAX_NODES} nodes", "nodes")
    context = ValidationContext(
        set(nodes),
        check_blueprint or (lambda name, version, nested=True: None),
        functions if functions is not None else {},
        KINDS,
    )
    _check_top(definition, checker)
    for name, node in nodes.items():
        _check_node(name, node, checker.at(f"nodes.{name}"), context)
    _check_edges(definition, set(nodes), checker)
    if not checker.problems:
        try:
            compile_definition("validation", definition, Resources())
        except GraphValidationError as exc:
            for problem in exc.problems:
                checker.add(_graph_problem_message(problem), _graph_problem_path(problem, definition))
        except BlueprintInvalid as exc:
            checker.problems.extend(exc.problems)
    return checker.problems


def _check_top(definition: dict[str, Any], checker: Checker) -> None:
    entry = definition.get("entry")
    if entry is None:
        checker.add("the blueprint has no entry point: name the node it starts at", "entry")
    elif not isinstance(entry, str) or entry not in definition["nodes"]:
        checker.add(f"entry point {entry!r} is not a node; nodes: {', '.join(sorted(definition['nodes']))}", "entry")
    for message in schema_problems(definition.get("input_schema", {"type": "object"})):
        checker.add(message, "input_schema")
    if not isinstance(definition.get("description", ""), str):
        checker.add("must be text", "description")


def _check_node(name: str, node: Any, checker: Checker, context: ValidationContext) -> None:
    if not NODE_NAME.match(name) or name in RESERVED_NODE_NAMES:
        checker.add(
            "a node name is letters, digits, _ and -, starting with a letter or _, and not one of "
            + ", ".join(sorted(RESERVED_NODE_NAMES))
        )
    if not isinstance(node, dict):
        checker.add('must be an object: {"kind": ..., "config": {...}}')
        return
    for key in sorted(set(node) - NODE_KEYS):
        checker.add(f"unknown field; allowed: {', '.join(sorted(NODE_KEYS))}", key)
    kind = KINDS.get(node["kind"]) if isinstance(node.get("kind"), str) else None
    if kind is None:
        checker.add(f"unknown kind {node.get('kind')!r}; kinds: {', '.join(sorted(KINDS))}", "kind")
        return
    config = node.get("config", {})
    if not isinstance(config, dict):
        checker.add("must be an object", "config")
        return
    kind.check(config, checker.at("config"), context)
    _check_retry(node.get("retry"), checker.at("retry"))
    bound = node.get("max_iterations")
    if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool) or not 1 <= bound <= 1000):
        checker.add("must be a whole number from 1 to 1000", "max_iterations")


def _check_retry(retry: Any, checker: Checker) -> None:
    if retry is None:
        return
    if not isinstance(retry, dict):
        checker.add('must be an object such as {"max_retries": 3, "backoff": "exponential"}')
        return
    allowed = {"max_retries", "backoff", "base_delay_ms", "max_delay_ms"}
    for key in sorted(set(retry) - allowed):
        checker.add(f"unknown field; allowed: {', '.join(sorted(allowed))}", key)
    for key, top in (("max_retries", 20), ("base_delay_ms", 600_000), ("max_delay_ms", 3_600_000)):
        value = retry.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top):
            checker.add(f"must be a whole number from 0 to {top}", key)
    if retry.get("backoff") is not None and retry["backoff"] not in Backoff.__members__.values():
        checker.add(f"must be one of {', '.join(b.value for b in Backoff)}", "backoff")


def _check_edges(definition: dict[str, Any], nodes: set[str], checker: Checker) -> None:
    edges = definition.get("edges", [])
    if not isinstance(edges, list):
        checker.add('must be a list of {"from": node, "to": node}', "edges")
        return
    for index, edge in enumerate(edges):
        here = checker.at(f"edges[{index}]")
        if not isinstance(edge, dict) or set(edge) != {"from", "to"}:
            here.add('must be {"from": node, "to": node or "end"}')
            continue
        if not known_node(edge["from"], nodes):
            here.add(f"{edge['from']!r} is not a node; nodes: {', '.join(sorted(nodes))}", "from")
        if edge["to"] != "end" and not known_node(edge["to"], nodes):
            here.add(f'{edge["to"]!r} is not a node (or "end"); nodes: {", ".join(sorted(nodes))}', "to")
    routes = definition.get("routes", [])
    if not isinstance(routes, list):
        checker.add('must be a list of {"from": node, "cases": [...], "default": node}', "routes")
        return
    seen: set[str] = set()
    for index, route in enumerate(routes):
        here = checker.at(f"routes[{index}]")
        if not isinstance(route, dict) or "from" not in route:
            here.add('must be {"from": node, "cases": [{"when": expression, "to": node}], "default": node}')
            continue
        if not known_node(route["from"], nodes):
            here.add(f"{route['from']!r} is not a node", "from")
        elif _kind_of(definition, route["from"]) == "router":
            here.add(f"node {route['from']!r} is a router: its cases are its routes", "from")
        elif route["from"] in seen:
            here.add(f"node {route['from']!r} has two routes", "from")
        else:
            seen.add(route["from"])
        check_cases(route, here, nodes)


def _kind_of(definition: dict[str, Any], node: str) -> Any:
    found = definition["nodes"].get(node)
    return found.get("kind") if isinstance(found, dict) else None


def _graph_problem_message(problem: Any) -> str:
    message = str(problem.message)
    if "cycle" in message:
        return message + ' (give a node on the cycle "max_iterations" to bound it)'
    return message


def _graph_problem_path(problem: Any, definition: dict[str, Any]) -> str:
    if problem.node and problem.node in definition.get("nodes", {}):
        return f"nodes.{problem.node}"
    if problem.edge:
        for index, edge in enumerate(definition.get("edges", [])):
            if isinstance(edge, dict) and (edge.get("from"), edge.get("to")) == problem.edge:
                return f"edges[{index}]"
    return ""


# --- compilation ---------------------------------------------------------------------------------


def node_specs(definition: dict[str, Any]) -> list[NodeSpec]:
    specs = []
    for name, node in definition["nodes"].items():
        retry = node.get("retry")
        specs.append(
            NodeSpec(
                name=name,
                kind=node["kind"],
                config=dict(node.get("config", {})),
                retry=_retry_policy(retry) if retry else None,
                max_iterations=node.get("max_iterations"),
                description=node.get("description", ""),
            )
        )
    return specs


def _retry_policy(retry: dict[str, Any]) -> RetryPolicy:
    return RetryPolicy(
        max_retries=retry.get("max_retries", 3),
        backoff=Backoff(retry.get("backoff", "exponential")),
        base_delay_ms=retry.get("base_delay_ms", 500),
        max_delay_ms=retry.get("max_delay_ms", 30_000),
    )


def compile_definition(name: str, definition: dict[str, Any], resources: Resources) -> CompiledGraph:
    """The kernel graph of a (valid) definition; raises GraphValidationError if its shape is not runnable."""
    build = BuildContext(compile_definition, KINDS)
    builder = GraphBuilder(name)
    for spec in node_specs(definition):
        kind = KINDS[spec.kind]
        fn = kind.build(spec, resources, build)
        builder.add_node(
            spec.name,
            _adding_output(spec.name, fn, Redactor(resources.secrets.values())),
            step_type=kind.step_type,
            retry=spec.retry,
            max_iterations=spec.max_iterations or kind.bound(spec),
            description=spec.description,
        )
    for edge in definition.get("edges", []):
        builder.add_edge(edge["from"], END if edge["to"] == "end" else edge["to"])
    for route in definition.get("routes", []):
        user, targets = case_router(route), case_targets(route)
        own = build.routers.get(route["from"])
        if own is not None:  # an agent's own loop goes first; when it is done, the route decides
            build.routers[route["from"]] = (_either(own[0], user), [*own[1], *targets])
        else:
            build.routers[route["from"]] = (user, targets)
    for source, (router, targets) in build.routers.items():
        builder.add_conditional_edges(source, router, {t: (END if t == "end" else t) for t in targets})
    builder.set_entry_point(definition.get("entry", ""))
    return builder.compile()


def _either(first: Callable[[Any], str | None], then: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda state: first(state) or then(state)


def case_router(config: dict[str, Any]) -> Callable[[Any], str | None]:
    """A router over the state: the ``to`` of the first case whose ``when`` holds, else ``default``
    (else the node's static edges)."""
    cases = [(compile_expression(case["when"]), case["to"]) for case in config["cases"]]
    default = config.get("default")

    def route(state: Any) -> str | None:
        names = expression_names(state)
        for expression, target in cases:
            if expression.evaluate(names):
                return str(target)
        return default

    return route


MAX_STATE_BYTES = 4 * 1024 * 1024


def _adding_output(name: str, fn: NodeFn, redactor: Redactor) -> NodeFn:
    """Wrap a kind's function: it returns its output, the wrapper adds it to the state under the
    node's name. A join after a fan-out gets each branch's state: they are merged first. A state
    that would grow past MAX_STATE_BYTES (as JSON) fails the step: it is stored at every step. So
    does an output that is not JSON (NaN, a Python object): no row could store it, and a refused
    write would look like a crashed worker. The run's secrets are redacted from what the node
    emits, returns and fails with (see ``redaction.py``)."""

    def node(state: Any, ctx: Any) -> Any:
        state = merge_branches(state)
        if not redactor:
            output = fn(state, ctx)
        else:
            output = _redacted_call(fn, state, RedactingContext(ctx, redactor), redactor)
        result = output if isinstance(output, StepResult) else StepResult(state={**state, name: output}, output=output)
        _check_json(name, result)
        return result

    return node


def _redacted_call(fn: NodeFn, state: Any, ctx: Any, redactor: Redactor) -> Any:
    try:
        output = fn(state, ctx)
    except Cancelled:
        raise
    except Exception as exc:  # its message and traceback may quote what a server sent back
        raise redactor.error(ExecutionError.from_exception(exc)) from None
    if isinstance(output, StepResult):
        return StepResult(state=redactor.value(output.state), output=redactor.value(output.output))
    return redactor.value(output)


def _check_json(name: str, result: StepResult) -> None:
    problem = json_problem(result.state, MAX_STATE_BYTES)
    own = result.state.get(name) if isinstance(result.state, dict) else result.state
    if problem is None and result.output is not own:  # a kind that records less than it keeps
        problem = json_problem(result.output, MAX_STATE_BYTES)
    if problem == TOO_LARGE:
        raise ExecutionError.validation(
            f"node '{name}': the run's state would be larger than {MAX_STATE_BYTES} bytes", code="state_too_large"
        )
    if problem is not None:
        raise ExecutionError.validation(f"node '{name}': its output holds {problem}", code="not_json")


TOO_LARGE = "too large"


def json_problem(value: Any, limit: int) -> str | None:
    """Why ``value`` cannot be stored as JSON of at most about ``limit`` bytes, UTF-8
    (:data:`TOO_LARGE`, or what in it is not JSON), or None. Found without building the whole
    text (a value that repeats one big part many times would be huge to build): the walk stops
    as soon as the count passes the limit."""
    size, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            size += _text_bytes(item, limit - size)
        elif isinstance(item, dict):
            size += 2 + 2 * len(item)
            for key, sub in item.items():
                size += _text_bytes(str(key), limit - size)
                stack.append(sub)
        elif isinstance(item, (list, tuple)):
            size += 2 + len(item)
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            return "a number that is not finite (NaN or Infinity)"
        elif item is None or isinstance(item, (bool, int, float)):
            size += 8
        else:
            return f"a {type(item).__name__}, which is not a JSON value"
        if size > limit:
            return TOO_LARGE
    return None


def _text_bytes(text: str, room: int) -> int:
    """The UTF-8 bytes of ``text`` as a JSON string; just past ``room`` when that is sure already."""
    if len(text) > room:  # every character is a byte at least
        return len(text) + 2
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def merge_branches(state: Any) -> Any:
    """After a fan-out the kernel hands the join ``{branch head: branch state}``; blueprint states
    are dicts with an ``input`` key, so a dict of such dicts is a join to merge."""
    if (
        isinstance(state, dict)
        and "input" not in state
        and state
        and all(isinstance(v, dict) and "input" in v for v in state.values())
    ):
        merged: dict[str, Any] = {}
        for branch in state.values():
            merged.update(branch)
        return merged
    return state


def referenced_secrets(
    definition: dict[str, Any], load: Callable[[str, int | None], dict[str, Any] | None], depth: int = 0
) -> set[str]:
    """The names of the tenant secrets a definition (and the blueprints it runs) may use."""
    names: set[str] = set()
    for node in definition.get("nodes", {}).values():
        config = node.get("config", {}) if isinstance(node, dict) else {}
        names |= _secrets_of(config)
        inline = config.get("node")
        if isinstance(inline, dict):
            names |= _secrets_of(inline.get("config", {}))
        if node.get("kind") in ("map", "subgraph") and isinstance(config.get("blueprint"), str) and depth < 5:
            nested = load(config["blueprint"], config.get("version"))
            if nested is not None:
                names |= referenced_secrets(nested, load, depth + 1)
    return names


def _secrets_of(config: dict[str, Any]) -> set[str]:
    names = {v for v in (config.get("secret_headers") or {}).values() if isinstance(v, str)}
    for key in ("auth_secret", "api_key_secret"):
        if isinstance(config.get(key), str):
            names.add(config[key])
    for tool in config.get("tools") or []:
        if isinstance(tool, dict) and isinstance(tool.get("http"), dict):
            names |= _secrets_of(tool["http"])
    return names
