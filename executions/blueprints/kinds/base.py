"""What every node kind is made of, and what it is handed: the shared vocabulary of the kinds.

A kind (:class:`Kind`) is two functions: ``check`` looks at a node's config and reports each
problem to a :class:`Checker`; ``build`` turns a checked node (a :class:`NodeSpec`) into the
kernel node that runs it. Both get a context from ``definition.py``, which drives them: a
:class:`ValidationContext` while validating, a :class:`BuildContext` while compiling. What a run
needs from the platform (secrets, prices, the tool policy, other blueprints) comes in a
:class:`Resources`.

This module imports no kind: every kind module imports it, and ``kinds/__init__.py`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from executions.blueprints.expressions import ExpressionError, check_template, compile_expression, render_template
from executions.kernel import ExecutionError, RetryPolicy, StepType
from executions.kernel.graph import CompiledGraph, NodeFn


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a definition: where (a dotted path) and what."""

    path: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}


@dataclass
class Resources:
    """What the platform resolves before a run (the kernel never looks anything up itself).

    ``load_blueprint(name, version)`` returns a definition (for ``map`` and ``subgraph``), or None."""

    tenant_id: str = ""
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # model -> USD per 1M in, out
    tool_policy: Any = None  # executions.blueprints.tools.ToolPolicy
    functions: Mapping[str, Any] = field(default_factory=dict)  # name -> functions.RegisteredFunction
    load_blueprint: Callable[[str, int | None], dict[str, Any] | None] = lambda name, version: None
    # Submits a child execution of the running one: (blueprint, version, input, inherit_inbox, node) -> its id.
    spawn_child: Callable[[str, int | None, Any, bool, str], str] | None = None
    llm_timeout_s: float = 120.0
    depth: int = 0  # how deep in subgraphs this graph is built


@dataclass(frozen=True)
class NodeSpec:
    name: str
    kind: str
    config: dict[str, Any]
    retry: RetryPolicy | None
    max_iterations: int | None
    description: str


@dataclass
class Checker:
    """Collects problems; ``at(path)`` gives a checker for a deeper place."""

    problems: list[Problem] = field(default_factory=list)
    prefix: str = ""

    def at(self, path: str) -> Checker:
        return Checker(self.problems, f"{self.prefix}.{path}" if self.prefix else path)

    def add(self, message: str, path: str = "") -> None:
        full = f"{self.prefix}.{path}" if self.prefix and path else (path or self.prefix)
        self.problems.append(Problem(full, message))

    def expression(self, text: Any, path: str) -> None:
        if not isinstance(text, str) or not text.strip():
            self.add("must be an expression (text)", path)
            return
        try:
            compile_expression(text)
        except ExpressionError as exc:
            self.add(f"bad expression: {exc.message}", path)

    def template(self, template: Any, path: str) -> None:
        for message in check_template(template):
            self.add(message, path)


@dataclass(frozen=True)
class Kind:
    """A node kind: how its config is checked, and how a node of it becomes a kernel node."""

    name: str
    check: Callable[[dict[str, Any], Checker, ValidationContext], None]
    build: Callable[[NodeSpec, Resources, BuildContext], NodeFn]
    step_type: StepType = StepType.FUNCTION_NODE
    # A kind that loops on itself (an agent) bounds its own loop: (spec) -> max iterations.
    bound: Callable[[NodeSpec], int | None] = lambda spec: None


@dataclass
class ValidationContext:
    node_names: set[str]
    # A problem with running a blueprint (name, version, nested within a step?), or None.
    check_blueprint: Callable[..., str | None]
    functions: Mapping[str, Any]
    # Every kind, by name (a map checks the node it runs per item with its kind).
    kinds: Mapping[str, Kind]


@dataclass
class BuildContext:
    """Set while compiling: lets a router node declare its conditional edge.

    ``definition.py`` hands in its compiler and the kinds, so that no kind imports it: ``map`` and
    ``subgraph`` compile the blueprints they run with ``compile_definition``, and a map builds the
    node it runs per item with its kind from ``kinds``."""

    compile_definition: Callable[[str, dict[str, Any], Resources], CompiledGraph]
    kinds: Mapping[str, Kind]
    routers: dict[str, tuple[Callable[[Any], str | None], list[str]]] = field(default_factory=dict)


# --- helpers the kinds and definition.py share ---------------------------------------------------


def unknown_keys(config: dict[str, Any], allowed: set[str], checker: Checker) -> None:
    for key in sorted(set(config) - allowed):
        checker.add(f"unknown field; allowed: {', '.join(sorted(allowed))}", key)


def known_node(name: Any, nodes: set[str]) -> bool:
    return isinstance(name, str) and name in nodes


def check_cases(config: dict[str, Any], checker: Checker, nodes: set[str]) -> None:
    """Check ``cases`` (``when`` an expression, ``to`` a node) and ``default``: shared by routes and routers."""
    allowed = {"from", "cases", "default"}
    for key in sorted(set(config) - allowed):
        checker.add("unknown field; allowed: cases, default", key)
    cases = config.get("cases")
    if not isinstance(cases, list) or not cases:
        checker.add('must be a list of one or more {"when": expression, "to": node}', "cases")
        cases = []
    for index, case in enumerate(cases):
        here = checker.at(f"cases[{index}]")
        if not isinstance(case, dict) or set(case) != {"when", "to"}:
            here.add('must be {"when": expression, "to": node or "end"}')
            continue
        here.expression(case["when"], "when")
        _check_target(case["to"], here, nodes, "to")
    if "default" in config:
        _check_target(config["default"], checker, nodes, "default")


def _check_target(target: Any, checker: Checker, nodes: set[str], path: str) -> None:
    if target != "end" and not known_node(target, nodes):
        checker.add(f'{target!r} is not a node (or "end"); nodes: {", ".join(sorted(nodes))}', path)


def case_targets(config: dict[str, Any]) -> list[str]:
    """Where checked ``cases`` (and ``default``) may lead, each once, in order."""
    targets = [case["to"] for case in config["cases"]]
    if "default" in config:
        targets.append(config["default"])
    return list(dict.fromkeys(targets))


def expression_names(state: Any) -> dict[str, Any]:
    """What expressions and templates see: ``state`` (the whole run state) and ``input``."""
    if isinstance(state, dict):
        return {"state": state, "input": state.get("input")}
    return {"state": state, "input": None}


def render(template: Any, state: Any, where: str) -> Any:
    """A template rendered against the state; a failure is the tenant's mistake, so not retried."""
    try:
        return render_template(template, expression_names(state))
    except ExpressionError as exc:
        raise ExecutionError.validation(f"{where}: {exc.message}", code="template_failed") from None
