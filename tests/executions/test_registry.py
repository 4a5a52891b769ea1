from __future__ import annotations

import pytest

from enact_platform.errors import InvalidInput
from executions.registry import blueprint, registry, validate_input

BUILT_IN = ["demo.approval", "demo.chain", "demo.fanout", "demo.flaky", "demo.pipeline", "demo.slow"]


def test_the_built_in_graphs_are_registered_exactly_as_named() -> None:
    names = [g.name for g in registry.all()]
    assert [n for n in names if n.startswith("demo.")] == BUILT_IN
    for name in BUILT_IN:
        entry = registry.get(name)
        assert entry is not None
        assert entry.description
        assert entry.input_schema["type"] == "object"


@pytest.mark.parametrize(
    ("name", "input", "nodes"),
    [
        ("demo.chain", {"n": 3}, ["n_1", "n_2", "n_3"]),
        ("demo.slow", {"steps": 2, "seconds": 0.1}, ["step_1", "step_2"]),
        ("demo.fanout", {"branches": 2}, ["start", "join", "branch_1", "branch_2"]),
        ("demo.approval", {}, ["draft", "approve", "finish"]),
        ("demo.pipeline", {"text": "x"}, ["normalize", "analyze", "report"]),
        ("demo.flaky", {"failures": 1}, ["call"]),
    ],
)
def test_factories_build_the_graph_the_input_describes(name: str, input: object, nodes: list[str]) -> None:
    entry = registry.get(name)
    assert entry is not None
    assert list(entry.build(input).nodes) == nodes


def test_registering_a_name_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        blueprint("demo.chain")(lambda input: None)  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(
    ("schema", "value", "message"),
    [
        ({"type": "integer"}, True, "input must be an integer"),
        ({"type": "number"}, "1", "input must be a number"),
        ({"type": "string", "maxLength": 2}, "abc", "input must be at most 2 characters"),
        ({"type": "array", "items": {"type": "string"}}, ["a", 1], r"input\[1\] must be a string"),
        ({"type": "array", "maxItems": 1}, [1, 2], "input has more than 1 items"),
        ({"enum": ["a", "b"]}, "c", r"input must be one of \['a', 'b'\]"),
        (
            {"type": "object", "properties": {"x": {"type": "object", "required": ["y"]}}},
            {"x": {}},
            "input.x.y is required",
        ),
    ],
)
def test_input_validation_names_the_faulty_place(schema: dict[str, object], value: object, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_input(schema, value)
