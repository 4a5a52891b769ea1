"""Validating blueprint definitions: every problem found at once, each with the place it concerns
and the message a user sees. No database: references to other blueprints are checked through a
function the test gives."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from executions.blueprints.definition import Problem, Resources, compile_definition, validate
from executions.blueprints.functions import FUNCTIONS
from executions.kernel import END

VALID: dict[str, Any] = {
    "description": "greet",
    "input_schema": {"type": "object", "properties": {"name": {"type": "string"}}},
    "entry": "greet",
    "nodes": {
        "greet": {"kind": "template", "config": {"template": "hello {{ input.name }}"}},
        "route": {
            "kind": "router",
            "config": {"cases": [{"when": "len(state.greet) > 10", "to": "long"}], "default": "end"},
        },
        "long": {"kind": "template", "config": {"template": {"text": "{{ state.greet }}", "long": True}}},
    },
    "edges": [{"from": "greet", "to": "route"}, {"from": "long", "to": "end"}],
}


# The built-in functions only: other tests register functions of their own.
BUILT_IN_FUNCTIONS = {name: f for name, f in FUNCTIONS.items() if name.startswith("demo.")}


def problems(definition: Any, **kwargs: Any) -> list[tuple[str, str]]:
    found = validate(definition, functions=BUILT_IN_FUNCTIONS, **kwargs)
    return [(p.path, p.message) for p in found]


def changed(**edits: Any) -> dict[str, Any]:
    definition = copy.deepcopy(VALID)
    for path, value in edits.items():
        target = definition
        keys = path.split("__")
        for key in keys[:-1]:
            target = target[key]
        if value is None:
            del target[keys[-1]]
        else:
            target[keys[-1]] = value
    return definition


def test_a_valid_definition_has_no_problems_and_compiles() -> None:
    assert problems(VALID) == []
    graph = compile_definition("greeting", VALID, Resources())
    assert graph.entry_point == "greet"
    assert set(graph.nodes) == {"greet", "route", "long"}
    assert graph.conditional["route"].destinations == {"long": "long", "end": END}


def test_not_an_object() -> None:
    assert problems([1, 2]) == [("", "a blueprint definition must be a JSON object")]


def test_missing_entry() -> None:
    assert problems(changed(entry=None)) == [("entry", "the blueprint has no entry point: name the node it starts at")]


def test_entry_that_is_not_a_node() -> None:
    assert problems(changed(entry="start")) == [
        ("entry", "entry point 'start' is not a node; nodes: greet, long, route")
    ]


def test_unknown_kind_names_the_kinds() -> None:
    found = problems(changed(nodes__long__kind="python"))
    assert found == [
        (
            "nodes.long.kind",
            "unknown kind 'python'; kinds: function, http, llm, map, router, subgraph, template, wait",
        )
    ]


def test_unknown_node_in_an_edge_and_a_route() -> None:
    found = problems(
        changed(
            edges=[{"from": "greet", "to": "rout"}, {"from": "long", "to": "end"}],
            nodes__route__config={"cases": [{"when": "true", "to": "lon"}]},
        )
    )
    assert found == [
        ("nodes.route.config.cases[0].to", "'lon' is not a node (or \"end\"); nodes: greet, long, route"),
        ("edges[0].to", "'rout' is not a node (or \"end\"); nodes: greet, long, route"),
    ]


def test_bad_expression_points_at_the_case() -> None:
    found = problems(changed(nodes__route__config={"cases": [{"when": "state.greet ==", "to": "long"}]}))
    assert len(found) == 1
    path, message = found[0]
    assert path == "nodes.route.config.cases[0].when"
    assert message.startswith("bad expression: ")


def test_unsafe_expression_is_refused() -> None:
    found = problems(changed(nodes__route__config={"cases": [{"when": "__import__('os')", "to": "long"}]}))
    assert [p for p, _ in found] == ["nodes.route.config.cases[0].when"]
    assert found[0][1].startswith("bad expression: ")


def test_bad_template_points_at_the_node() -> None:
    found = problems(changed(nodes__greet__config={"template": "hello {{ input.name"}))
    assert [p for p, _ in found] == ["nodes.greet.config.template"]


def test_cycle_without_a_bound_and_with_one() -> None:
    looping = changed(edges=[{"from": "greet", "to": "route"}, {"from": "long", "to": "greet"}])
    found = problems(looping)
    assert len(found) == 1
    assert found[0][0].startswith("nodes.")
    assert 'give a node on the cycle "max_iterations" to bound it' in found[0][1]
    looping["nodes"]["greet"]["max_iterations"] = 3
    assert problems(looping) == []


def test_unreachable_node() -> None:
    definition = changed()
    definition["nodes"]["orphan"] = {"kind": "template", "config": {"template": "x"}}
    found = problems(definition)
    assert len(found) == 1
    assert found[0][0] == "nodes.orphan"
    assert "orphan" in found[0][1]


def test_every_problem_is_reported_at_once() -> None:
    definition = {
        "entry": "a",
        "nodes": {
            "a": {"kind": "nope"},
            "b": {"kind": "template", "config": {}},
            "c": {"kind": "wait", "config": {"mode": "later"}},
            "input": {"kind": "template", "config": {"template": "x"}},
        },
        "edges": [{"from": "a", "to": "z"}],
        "extra": 1,
    }
    found = problems(definition)
    assert ("extra", "unknown field; allowed: description, edges, entry, input_schema, nodes, routes") in found
    assert (
        "nodes.a.kind",
        "unknown kind 'nope'; kinds: function, http, llm, map, router, subgraph, template, wait",
    ) in found
    assert (
        "nodes.b.config",
        "a template node needs a template (a string or JSON value with {{ ... }} placeholders)",
    ) in found
    assert ("nodes.c.config.mode", 'must be "input" or "approval"') in found
    assert any(path == "nodes.input" and "not one of end, input, secrets, state" in msg for path, msg in found)
    assert ("edges[0].to", "'z' is not a node (or \"end\"); nodes: a, b, c, input") in found


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"provider": "gpt", "model": "x", "prompt": "hi"},
            [("nodes.n.config.provider", 'must be "openai" (any OpenAI-compatible server) or "demo" (offline)')],
        ),
        (
            {"provider": "openai", "model": "x", "prompt": "hi"},
            [
                (
                    "nodes.n.config.base_url",
                    "an OpenAI-compatible provider needs its base_url, such as https://api.openai.com/v1",
                )
            ],
        ),
        (
            {"provider": "demo", "model": "demo"},
            [("nodes.n.config.prompt", "an llm node needs a prompt (the user message; may hold {{ ... }})")],
        ),
        (
            {"provider": "demo", "model": "demo", "prompt": "hi", "temperature": 5},
            [("nodes.n.config.temperature", "must be a number from 0 to 2")],
        ),
        (
            {"provider": "demo", "model": "demo", "prompt": "hi", "tools": [{"name": "t", "function": "no.such"}]},
            [
                (
                    "nodes.n.config.tools[0].function",
                    "unknown function 'no.such'; functions: demo.lookup, demo.word_count",
                )
            ],
        ),
        (
            {"provider": "demo", "model": "demo", "prompt": "hi", "tools": [{"name": "t"}]},
            [
                (
                    "nodes.n.config.tools[0]",
                    'a tool is either "http" (a request) or "function" (a registered Python function)',
                )
            ],
        ),
    ],
)
def test_llm_config_problems(config: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert problems({"entry": "n", "nodes": {"n": {"kind": "llm", "config": config}}}) == expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, [("nodes.n.config.url", "an http tool needs a url (text, may hold {{ ... }})")]),
        (
            {"url": "https://x.test", "method": "FETCH"},
            [("nodes.n.config.method", "must be one of GET, HEAD, POST, PUT, PATCH, DELETE")],
        ),
        (
            {"url": "https://x.test", "auth_secret": "not a name"},
            [("nodes.n.config.auth_secret", "must be the name of one of the tenant's secrets")],
        ),
        (
            {"url": "https://x.test", "approval": "never"},
            [("nodes.n.config.approval", 'must be "auto" (trusted hosts run, others wait for approval) or "always"')],
        ),
    ],
)
def test_http_config_problems(config: dict[str, Any], expected: list[tuple[str, str]]) -> None:
    assert problems({"entry": "n", "nodes": {"n": {"kind": "http", "config": config}}}) == expected


def test_function_node_names_the_registered_functions() -> None:
    definition = {"entry": "n", "nodes": {"n": {"kind": "function", "config": {"function": "nope"}}}}
    assert problems(definition) == [
        ("nodes.n.config.function", "unknown function 'nope'; functions: demo.lookup, demo.word_count")
    ]


def test_map_and_subgraph_references_are_checked() -> None:
    def check(name: str, version: int | None, nested: bool = True) -> str | None:
        return None if name == "known" else f"no blueprint named {name!r}"

    definition = {
        "entry": "m",
        "nodes": {
            "m": {"kind": "map", "config": {"items": "input.list", "blueprint": "unknown"}},
            "s": {"kind": "subgraph", "config": {"blueprint": "known", "version": 0}},
            "both": {"kind": "map", "config": {"items": "input", "blueprint": "known", "node": {}}},
        },
        "edges": [{"from": "m", "to": "s"}, {"from": "s", "to": "both"}],
    }
    assert problems(definition, check_blueprint=check) == [
        ("nodes.m.config.blueprint", "no blueprint named 'unknown'"),
        ("nodes.s.config.version", "must be a version number (1 or more)"),
        (
            "nodes.both.config",
            'give either "blueprint" (a blueprint to run per item) or "node" (a node to run per item)',
        ),
    ]


def test_a_router_may_not_also_have_a_route() -> None:
    definition = changed(routes=[{"from": "route", "cases": [{"when": "true", "to": "long"}]}])
    assert problems(definition) == [("routes[0].from", "node 'route' is a router: its cases are its routes")]


def test_problems_serialize_for_the_api() -> None:
    assert Problem("nodes.a", "bad").to_dict() == {"path": "nodes.a", "message": "bad"}


def test_child_options_belong_to_child_mode() -> None:
    def check(name: str, version: int | None, nested: bool = True) -> str | None:
        return None

    definition = {
        "entry": "s",
        "nodes": {
            "s": {"kind": "subgraph", "config": {"blueprint": "other", "background": True}},
            "c": {"kind": "subgraph", "config": {"blueprint": "other", "mode": "child", "inherit_inbox": "yes"}},
            "x": {"kind": "subgraph", "config": {"blueprint": "other", "mode": "fork"}},
        },
        "edges": [{"from": "s", "to": "c"}, {"from": "c", "to": "x"}],
    }
    assert problems(definition, check_blueprint=check) == [
        ("nodes.s.config.background", 'only for mode "child"'),
        ("nodes.c.config.inherit_inbox", "must be true or false"),
        ("nodes.x.config.mode", 'must be "inline" (runs within this step) or "child" (a child execution)'),
    ]
