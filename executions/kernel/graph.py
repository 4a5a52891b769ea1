"""Graphs: nodes, static and conditional edges, fan-out with join, bounded loops.

A graph is compiled once; compilation checks it whole and reports every problem with the node or
edge it concerns. The kernel runs compiled graphs only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ExecutionError, RetryPolicy
from .state import StepType

if TYPE_CHECKING:
    from .node import NodeContext

END = "__end__"

NodeFn = Callable[[Any, "NodeContext"], Any]
RouterFn = Callable[[Any], "str | None"]


@dataclass(frozen=True)
class Node:
    name: str
    fn: NodeFn
    step_type: StepType = StepType.FUNCTION_NODE
    retry: RetryPolicy | None = None
    # A node on a cycle needs this bound; the kernel fails the execution past it.
    max_iterations: int | None = None
    description: str = ""


@dataclass(frozen=True)
class ConditionalEdge:
    """``router(output)`` names a key of ``destinations`` (or a destination itself); ``None``
    falls back to the node's static edges."""

    router: RouterFn
    destinations: Mapping[str, str]


@dataclass(frozen=True)
class FanOut:
    """Branches that run concurrently after ``origin`` and meet at ``join`` (``None``: at the end).

    Each branch is the chain of nodes from its head up to, not including, the join.
    """

    origin: str
    branches: tuple[tuple[str, ...], ...]
    join: str | None


@dataclass(frozen=True)
class GraphProblem:
    message: str
    node: str | None = None
    edge: tuple[str, str] | None = None

    def __str__(self) -> str:
        return self.message


class GraphValidationError(ValueError):
    def __init__(self, problems: list[GraphProblem]) -> None:
        self.problems = problems
        super().__init__("invalid graph: " + "; ".join(p.message for p in problems))


class RoutingError(ExecutionError):
    """A router returned a destination the graph does not declare."""


@dataclass
class GraphBuilder:
    name: str = "graph"
    _nodes: dict[str, Node] = field(default_factory=dict)
    _edges: list[tuple[str, str]] = field(default_factory=list)
    _conditional: dict[str, ConditionalEdge] = field(default_factory=dict)
    _entry: str | None = None
    _problems: list[GraphProblem] = field(default_factory=list)

    def add_node(
        self,
        name: str,
        fn: NodeFn,
        *,
        step_type: StepType = StepType.FUNCTION_NODE,
        retry: RetryPolicy | None = None,
        max_iterations: int | None = None,
        description: str = "",
    ) -> GraphBuilder:
        if not isinstance(name, str) or not name or name == END:
            self._problems.append(GraphProblem(f"invalid node name {name!r}", node=str(name)))
        elif name in self._nodes:
            self._problems.append(GraphProblem(f"node '{name}' is defined twice", node=name))
        elif not callable(fn):
            self._problems.append(GraphProblem(f"node '{name}': its function is not callable", node=name))
        elif max_iterations is not None and (not isinstance(max_iterations, int) or max_iterations < 1):
            self._problems.append(GraphProblem(f"node '{name}': max_iterations must be a positive integer", node=name))
        else:
            self._nodes[name] = Node(name, fn, step_type, retry, max_iterations, description)
        return self

    def add_edge(self, source: str, target: str) -> GraphBuilder:
        if (source, target) in self._edges:
            self._problems.append(
                GraphProblem(f"edge '{source}' -> '{target}' is defined twice", edge=(source, target))
            )
        else:
            self._edges.append((source, target))
        return self

    def add_conditional_edges(
        self, source: str, router: RouterFn, destinations: Mapping[str, str] | Iterable[str]
    ) -> GraphBuilder:
        mapping = dict(destinations) if isinstance(destinations, Mapping) else {d: d for d in destinations}
        if source in self._conditional:
            self._problems.append(GraphProblem(f"node '{source}' has two conditional edges", node=source))
        elif not callable(router):
            self._problems.append(GraphProblem(f"node '{source}': its router is not callable", node=source))
        elif not mapping:
            self._problems.append(GraphProblem(f"node '{source}': a conditional edge needs destinations", node=source))
        else:
            self._conditional[source] = ConditionalEdge(router, mapping)
        return self

    def set_entry_point(self, name: str) -> GraphBuilder:
        self._entry = name
        return self

    def set_finish_point(self, name: str) -> GraphBuilder:
        return self.add_edge(name, END)

    def compile(self, *, max_concurrent_branches: int | None = None) -> CompiledGraph:
        """Check the whole graph and return it compiled, or raise :class:`GraphValidationError`."""
        problems = list(self._problems)
        static: dict[str, list[str]] = {name: [] for name in self._nodes}
        problems += self._check_references(static)
        if self._entry is None:
            problems.append(GraphProblem("the graph has no entry point"))
        elif self._entry not in self._nodes:
            problems.append(GraphProblem(f"entry point '{self._entry}' is not a node", node=self._entry))
        if problems:
            raise GraphValidationError(problems)
        assert self._entry is not None
        successors = {
            name: static[name] + [d for d in self._destinations(name) if d not in static[name]] for name in self._nodes
        }
        problems += _check_reachable(self._entry, self._nodes, successors)
        problems += _check_cycles(self._nodes, successors)
        fanouts, fan_problems = _find_fanouts(static, self._conditional)
        problems += fan_problems
        if problems:
            raise GraphValidationError(problems)
        return CompiledGraph(
            name=self.name,
            entry_point=self._entry,
            nodes=dict(self._nodes),
            static={k: tuple(v) for k, v in static.items()},
            conditional=dict(self._conditional),
            fanouts=fanouts,
            max_concurrent_branches=max_concurrent_branches,
        )

    def _destinations(self, name: str) -> list[str]:
        edge = self._conditional.get(name)
        return [d for d in edge.destinations.values() if d != END] if edge else []

    def _check_references(self, static: dict[str, list[str]]) -> list[GraphProblem]:
        problems = []
        for source, target in self._edges:
            if source not in self._nodes:
                problems.append(
                    GraphProblem(f"edge '{source}' -> '{target}': unknown node '{source}'", edge=(source, target))
                )
            elif target != END and target not in self._nodes:
                problems.append(
                    GraphProblem(f"edge '{source}' -> '{target}': unknown node '{target}'", edge=(source, target))
                )
            elif target != END:
                static[source].append(target)
            if target == END and source in static and len(self._edges_from(source)) > 1:
                problems.append(
                    GraphProblem(f"node '{source}' has an edge to the end beside other static edges", node=source)
                )
        for source, edge in self._conditional.items():
            if source not in self._nodes:
                problems.append(GraphProblem(f"conditional edge from unknown node '{source}'", node=source))
            for key, target in edge.destinations.items():
                if target != END and target not in self._nodes:
                    problems.append(
                        GraphProblem(
                            f"conditional edge '{source}' -> '{target}' (route '{key}'): unknown node '{target}'",
                            edge=(source, target),
                        )
                    )
        return problems

    def _edges_from(self, source: str) -> list[tuple[str, str]]:
        return [e for e in self._edges if e[0] == source]


def _check_reachable(entry: str, nodes: Mapping[str, Node], successors: Mapping[str, list[str]]) -> list[GraphProblem]:
    seen = {entry}
    stack = [entry]
    while stack:
        for nxt in successors[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return [GraphProblem(f"node '{n}' cannot be reached from the entry point", node=n) for n in nodes if n not in seen]


def _check_cycles(nodes: Mapping[str, Node], successors: Mapping[str, list[str]]) -> list[GraphProblem]:
    problems = []
    for component in _strongly_connected(list(nodes), successors):
        looped = len(component) > 1 or component[0] in successors[component[0]]
        if looped and not any(nodes[n].max_iterations for n in component):
            cycle = " -> ".join([*component, component[0]])
            problems.append(
                GraphProblem(
                    f"cycle without a bound: {cycle}; set max_iterations on one of its nodes", node=component[0]
                )
            )
    return problems


def _strongly_connected(names: list[str], successors: Mapping[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative so deep graphs do not hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for root in names:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child_i = work.pop()
            if child_i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = successors[node]
            if child_i < len(children):
                work.append((node, child_i + 1))
                child = children[child_i]
                if child not in index:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                result.append(list(reversed(component)))
    return result


def _find_fanouts(
    static: Mapping[str, list[str]], conditional: Mapping[str, ConditionalEdge]
) -> tuple[dict[str, FanOut], list[GraphProblem]]:
    fanouts: dict[str, FanOut] = {}
    problems: list[GraphProblem] = []
    for origin, targets in static.items():
        if len(targets) < 2:
            continue
        chains = []
        for head in targets:
            chain, problem = _walk_branch(origin, head, static, conditional)
            if problem:
                problems.append(problem)
            chains.append(chain)
        if len(chains) != len(targets) or any(p.node == origin for p in problems):
            continue
        fanout, problem = _join_of(origin, targets, chains)
        if problem:
            problems.append(problem)
        elif fanout:
            fanouts[origin] = fanout
    return fanouts, problems


def _walk_branch(
    origin: str, head: str, static: Mapping[str, list[str]], conditional: Mapping[str, ConditionalEdge]
) -> tuple[list[str], GraphProblem | None]:
    """The nodes a branch passes through, in order, to the end or back into itself."""
    chain = [head]
    node = head
    while True:
        if node in conditional:
            return chain, GraphProblem(
                f"fan-out from '{origin}': branch '{head}' reaches '{node}', which has a conditional edge; "
                "branches must be plain chains",
                node=origin,
            )
        nxt = static[node]
        if len(nxt) > 1:
            return chain, GraphProblem(
                f"fan-out from '{origin}': branch '{head}' fans out again at '{node}'; nested fan-out is not supported",
                node=origin,
            )
        if not nxt or nxt[0] in chain or nxt[0] == origin:
            return chain, None
        node = nxt[0]
        chain.append(node)


def _join_of(origin: str, targets: list[str], chains: list[list[str]]) -> tuple[FanOut | None, GraphProblem | None]:
    common = [n for n in chains[0] if all(n in c for c in chains[1:])]
    join = common[0] if common else None
    branches = tuple(tuple(c[: c.index(join)] if join else c) for c in chains)
    if any(not b for b in branches):
        return None, GraphProblem(f"fan-out from '{origin}': a branch starts at the join node '{join}'", node=origin)
    seen: set[str] = set()
    for branch in branches:
        if seen & set(branch):
            return None, GraphProblem(
                f"fan-out from '{origin}': branches {', '.join(repr(t) for t in targets)} share nodes before they join",
                node=origin,
            )
        seen |= set(branch)
    return FanOut(origin, branches, join), None


@dataclass(frozen=True)
class CompiledGraph:
    name: str
    entry_point: str
    nodes: Mapping[str, Node]
    static: Mapping[str, tuple[str, ...]]
    conditional: Mapping[str, ConditionalEdge]
    fanouts: Mapping[str, FanOut]
    max_concurrent_branches: int | None = None

    def get_node(self, name: str) -> Node | None:
        return self.nodes.get(name)

    def next_targets(self, name: str, output: Any) -> list[str]:
        """Where to go after ``name`` produced ``output``: ``[]`` or ``[END]`` ends, several fan out.

        Conditional edges win; a router that returns ``None`` falls back to the static edges.
        """
        edge = self.conditional.get(name)
        if edge is not None:
            key = edge.router(output)
            if key is not None:
                if key in edge.destinations:
                    return [edge.destinations[key]]
                if key in edge.destinations.values():
                    return [key]
                raise RoutingError.validation(
                    f"router of '{name}' returned {key!r}, which is not one of {sorted(edge.destinations)}",
                    code="bad_route",
                )
        return list(self.static[name]) or [END]

    def get_next(self, name: str, output: Any) -> list[str]:
        """The seed's name for :meth:`next_targets`."""
        return self.next_targets(name, output)

    def branch_successor(self, fanout: FanOut, node: str) -> str | None:
        """The next node of a branch after ``node``, or ``None`` when the branch is done."""
        for branch in fanout.branches:
            if node in branch:
                position = branch.index(node)
                return branch[position + 1] if position + 1 < len(branch) else None
        raise KeyError(node)

    def describe(self) -> dict[str, Any]:
        """A JSON description for drawing the graph."""
        return {
            "name": self.name,
            "entry_point": self.entry_point,
            "nodes": [
                {"name": n.name, "type": n.step_type.value, "description": n.description} for n in self.nodes.values()
            ],
            "edges": [{"source": s, "target": t, "conditional": False} for s, ts in self.static.items() for t in ts]
            + [
                {"source": s, "target": t, "conditional": True, "route": k}
                for s, e in self.conditional.items()
                for k, t in e.destinations.items()
            ],
        }
