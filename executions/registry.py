"""Blueprints written in Python: registered with :func:`blueprint`, discovered from each app's
``graphs.py``.

A registration is a factory of the blueprint's graph: ``factory(input) -> CompiledGraph``. Most ignore the input;
some (``demo.chain``) are shaped by it. A factory must be deterministic, since a resumed execution
rebuilds its graph from the same input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from enact_platform.errors import InvalidInput
from executions.blueprints.schemas import schema_problems, validate_input
from executions.kernel import CompiledGraph, GraphValidationError

GraphFactory = Callable[[Any], CompiledGraph]


@dataclass(frozen=True)
class CodeBlueprint:
    name: str
    factory: GraphFactory
    description: str = ""
    input_schema: dict[str, Any] = field(default_factory=dict)
    version: int = 1

    def build(self, input: Any) -> CompiledGraph:
        try:
            graph = self.factory(input)
        except GraphValidationError as exc:
            raise InvalidInput(f"graph {self.name} cannot be built from this input: {exc}") from None
        if graph.name != self.name:
            raise RuntimeError(f"graph factory for {self.name} built a graph named {graph.name}")
        return graph


class BlueprintRegistry:
    def __init__(self) -> None:
        self._graphs: dict[str, CodeBlueprint] = {}

    def register(self, entry: CodeBlueprint) -> None:
        if entry.name in self._graphs and self._graphs[entry.name].factory is not entry.factory:
            raise ValueError(f"graph {entry.name!r} is registered twice")
        self._graphs[entry.name] = entry

    def get(self, name: str) -> CodeBlueprint | None:
        return self._graphs.get(name)

    def all(self) -> list[CodeBlueprint]:
        return sorted(self._graphs.values(), key=lambda g: g.name)


registry = BlueprintRegistry()


def blueprint(
    name: str, *, description: str = "", input_schema: dict[str, Any] | None = None
) -> Callable[[GraphFactory], GraphFactory]:
    """Register the factory of blueprint ``name``'s graph."""

    def decorate(factory: GraphFactory) -> GraphFactory:
        registry.register(CodeBlueprint(name, factory, description, input_schema or {"type": "object"}))
        return factory

    return decorate


# Input schemas are JSON Schema (Draft 2020-12), checked by the jsonschema library: see
# executions/blueprints/schemas.py. Submissions and answers to waits check their values here too.
__all__ = ["BlueprintRegistry", "CodeBlueprint", "blueprint", "registry", "schema_problems", "validate_input"]
