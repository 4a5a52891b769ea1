"""Python callables that ``function`` nodes (and agents, as tools) may call by name.

Register one in any installed app's ``graphs.py`` (discovered at start-up)::

    @blueprint_function("acme.lookup_order", description="An order by its number",
                        parameters={"type": "object", "properties": {"number": {"type": "string"}}})
    def lookup_order(value, ctx):
        return {...}

``value`` is the node's rendered ``input`` (or the run's state when it has none); ``ctx`` is the
kernel's node context (cancellation, usage, artifacts). The result must be JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BlueprintFunction = Callable[[Any, Any], Any]


@dataclass(frozen=True)
class RegisteredFunction:
    name: str
    fn: BlueprintFunction
    description: str = ""
    # JSON Schema of ``value``: what an agent is told when the function is one of its tools.
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})


FUNCTIONS: dict[str, RegisteredFunction] = {}


def blueprint_function(
    name: str, *, description: str = "", parameters: dict[str, Any] | None = None
) -> Callable[[BlueprintFunction], BlueprintFunction]:
    def decorate(fn: BlueprintFunction) -> BlueprintFunction:
        existing = FUNCTIONS.get(name)
        if existing is not None and existing.fn is not fn:
            raise ValueError(f"blueprint function {name!r} is registered twice")
        FUNCTIONS[name] = RegisteredFunction(name, fn, description, parameters or {"type": "object"})
        return fn

    return decorate
