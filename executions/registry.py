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


# --- input validation: the JSON Schema subset graphs declare -----------------------------------

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def validate_input(schema: dict[str, Any], value: Any, path: str = "input") -> None:
    """Raise :class:`InvalidInput` naming the first place ``value`` breaks ``schema``.

    Supports type, properties, required, additionalProperties (false), minimum, maximum,
    minLength, maxLength, maxItems, items and enum."""
    expected = schema.get("type")
    if expected is not None:
        kinds = _TYPES[expected]
        is_bool = isinstance(value, bool)
        if not isinstance(value, kinds) or (is_bool and expected in ("integer", "number")):
            raise InvalidInput(f"{path} must be {_article(expected)}", details={"path": path})
    if "enum" in schema and value not in schema["enum"]:
        raise InvalidInput(f"{path} must be one of {schema['enum']}", details={"path": path})
    if isinstance(value, dict):
        _validate_object(schema, value, path)
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            raise InvalidInput(f"{path} has more than {schema['maxItems']} items", details={"path": path})
        for index, item in enumerate(value):
            if "items" in schema:
                validate_input(schema["items"], item, f"{path}[{index}]")
    elif isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            raise InvalidInput(f"{path} must be at least {schema['minLength']} characters", details={"path": path})
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise InvalidInput(f"{path} must be at most {schema['maxLength']} characters", details={"path": path})
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise InvalidInput(f"{path} must be at least {schema['minimum']}", details={"path": path})
        if "maximum" in schema and value > schema["maximum"]:
            raise InvalidInput(f"{path} must be at most {schema['maximum']}", details={"path": path})


def _validate_object(schema: dict[str, Any], value: dict[str, Any], path: str) -> None:
    properties = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            raise InvalidInput(f"{path}.{name} is required", details={"path": f"{path}.{name}"})
    if schema.get("additionalProperties") is False:
        extra = sorted(set(value) - set(properties))
        if extra:
            raise InvalidInput(
                f"{path} has unknown fields: {', '.join(extra)}", details={"path": path, "unknown": extra}
            )
    for name, sub in properties.items():
        if name in value:
            validate_input(sub, value[name], f"{path}.{name}")


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


_NUMBER_KEYWORDS = ("minimum", "maximum")
_COUNT_KEYWORDS = ("minLength", "maxLength", "maxItems")
_KNOWN_KEYWORDS = {
    "type", "properties", "required", "additionalProperties", "items", "enum", "description", "title", "default",
    *_NUMBER_KEYWORDS, *_COUNT_KEYWORDS,
}  # fmt: skip


def schema_problems(schema: Any, path: str = "") -> list[str]:
    """What is wrong with a schema of the subset :func:`validate_input` understands; ``[]`` if nothing.

    Checked when a blueprint is saved, so a broken schema is refused then, not at every submission."""
    where = f"at {path}: " if path else ""
    if not isinstance(schema, dict):
        return [f"{where}a schema must be a JSON object"]
    problems = [f"{where}unknown keyword {key!r}" for key in sorted(set(schema) - _KNOWN_KEYWORDS)]
    kind = schema.get("type")
    if kind is not None and (not isinstance(kind, str) or kind not in _TYPES):
        problems.append(f"{where}type must be one of {', '.join(_TYPES)}")
    for key in _NUMBER_KEYWORDS:
        value = schema.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            problems.append(f"{where}{key} must be a number")
    for key in _COUNT_KEYWORDS:
        value = schema.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            problems.append(f"{where}{key} must be a whole number of 0 or more")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
        problems.append(f"{where}required must be a list of property names")
    if not isinstance(schema.get("additionalProperties", True), bool):
        problems.append(f"{where}additionalProperties must be true or false")
    if "enum" in schema and not isinstance(schema["enum"], list):
        problems.append(f"{where}enum must be a list")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        problems.append(f"{where}properties must be an object of schemas")
    else:
        for name, sub in properties.items():
            problems += schema_problems(sub, f"{path}.properties.{name}" if path else f"properties.{name}")
    if "items" in schema:
        problems += schema_problems(schema["items"], f"{path}.items" if path else "items")
    return problems
