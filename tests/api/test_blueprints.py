"""/api/v1/blueprints: the catalog, saving declarative blueprints as versions, and running a version."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from executions.models import Blueprint, BlueprintVersion, Execution

from .conftest import Api, error_of

pytestmark = pytest.mark.django_db

GREET: dict[str, Any] = {
    "description": "Greets",
    "input_schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    "entry": "greet",
    "nodes": {"greet": {"kind": "template", "config": {"template": "hello {{ input.name }}"}}},
    "edges": [{"from": "greet", "to": "end"}],
}


def failed(response: Any) -> tuple[int, str]:
    return response.status_code, error_of(response)["code"]


def create(api: Api, name: str = "greet", definition: Any = None) -> Any:
    return api.post("blueprints", {"name": name, "definition": GREET if definition is None else definition})


def test_create_then_read_it_back(api_a: Api) -> None:
    response = create(api_a)
    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["version"], body["versions"], body["source"]) == ("greet", 1, [1], "blueprint")
    assert body["definition"] == GREET
    assert body["input_schema"] == GREET["input_schema"]
    assert api_a.get("blueprints/greet").json() == body
    listed = {b["name"]: b for b in api_a.get("blueprints").json()}
    assert listed["greet"]["version"] == 1
    assert listed["demo.chain"]["source"] == "code"


def test_every_put_is_a_new_version_and_old_versions_stay(api_a: Api) -> None:
    create(api_a)
    changed = copy.deepcopy(GREET)
    changed["nodes"]["greet"]["config"]["template"] = "hi {{ input.name }}"
    response = api_a.put("blueprints/greet", {"definition": changed})
    assert response.status_code == 200
    assert (response.json()["version"], response.json()["versions"]) == (2, [1, 2])
    assert api_a.get("blueprints/greet", {"version": 1}).json()["definition"] == GREET
    assert api_a.get("blueprints/greet").json()["definition"] == changed
    assert failed(api_a.get("blueprints/greet", {"version": 3})) == (404, "not_found")


def test_an_execution_records_and_runs_the_version_it_asked_for(
    api_a: Api, enqueued: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    create(api_a)
    api_a.put("blueprints/greet", {"definition": {**GREET, "description": "v2"}})
    pinned = api_a.post("executions", {"blueprint": "greet", "version": 1, "input": {"name": "Ann"}})
    latest = api_a.post("executions", {"blueprint": "greet", "input": {"name": "Bob"}})
    assert (pinned.status_code, latest.status_code) == (201, 201)
    assert (pinned.json()["version"], latest.json()["version"]) == (1, 2)
    assert Execution.objects.get(pk=pinned.json()["id"]).blueprint_version == 1


def test_input_is_checked_against_the_blueprints_schema(api_a: Api, enqueued: list[str]) -> None:
    create(api_a)
    response = api_a.post("executions", {"blueprint": "greet", "input": {}})
    assert failed(response) == (400, "invalid_input")
    assert response.json()["error"]["message"] == "input.name is required"
    assert not Execution.objects.exists()


def test_an_invalid_definition_is_refused_with_every_problem_and_nothing_is_written(api_a: Api) -> None:
    bad = {
        "entry": "start",
        "nodes": {"greet": {"kind": "prompt"}},
        "edges": [{"from": "greet", "to": "nowhere"}],
    }
    response = create(api_a, definition=bad)
    assert failed(response) == (400, "invalid_input")
    problems = response.json()["error"]["details"]["problems"]
    assert {"path": "entry", "message": "entry point 'start' is not a node; nodes: greet"} in problems
    assert {
        "path": "nodes.greet.kind",
        "message": "unknown kind 'prompt'; kinds: function, http, llm, map, router, subgraph, template, wait",
    } in problems
    assert {"path": "edges[0].to", "message": "'nowhere' is not a node (or \"end\"); nodes: greet"} in problems
    assert response.json()["error"]["message"].startswith("invalid blueprint: ")
    assert not Blueprint.objects.exists()
    assert not BlueprintVersion.objects.exists()


def test_a_failed_put_keeps_the_version_it_had(api_a: Api) -> None:
    create(api_a)
    response = api_a.put("blueprints/greet", {"definition": {"nodes": {}}})
    assert failed(response) == (400, "invalid_input")
    assert api_a.get("blueprints/greet").json()["versions"] == [1]


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [("Greet Me", 400, "invalid_input"), ("demo.chain", 409, "conflict"), ("", 400, "invalid_input")],
)
def test_bad_names(api_a: Api, name: str, status: int, code: str) -> None:
    assert failed(create(api_a, name=name)) == (status, code)
    assert not Blueprint.objects.exists()


def test_creating_an_existing_name_is_a_conflict_and_put_needs_an_existing_one(api_a: Api) -> None:
    create(api_a)
    assert failed(create(api_a)) == (409, "conflict")
    assert failed(api_a.put("blueprints/other", {"definition": GREET})) == (404, "not_found")
    assert BlueprintVersion.objects.count() == 1


def test_malformed_bodies(api_a: Api) -> None:
    assert failed(api_a.post("blueprints", raw="{not json")) == (400, "invalid_input")
    assert failed(api_a.post("blueprints", {"name": "x"})) == (400, "invalid_input")
    assert failed(api_a.post("blueprints", {"name": "x", "definition": [1]})) == (400, "invalid_input")
    assert failed(api_a.post("blueprints", {"name": "x", "definition": GREET, "extra": 1})) == (400, "invalid_input")
    assert not Blueprint.objects.exists()


def test_an_oversized_definition_is_refused(api_a: Api) -> None:
    big = copy.deepcopy(GREET)
    big["description"] = "x" * 300_000
    assert failed(create(api_a, definition=big))[0] == 413
    assert not Blueprint.objects.exists()


def test_blueprints_are_per_tenant(api_a: Api, api_b: Api, enqueued: list[str]) -> None:
    create(api_a)
    assert failed(api_b.get("blueprints/greet")) == (404, "not_found")
    assert "greet" not in [b["name"] for b in api_b.get("blueprints").json()]
    assert failed(api_b.put("blueprints/greet", {"definition": GREET})) == (404, "not_found")
    assert failed(api_b.post("executions", {"blueprint": "greet", "input": {"name": "x"}})) == (400, "invalid_input")
    assert create(api_b).status_code == 201  # the same name is free in another tenant
    assert BlueprintVersion.objects.filter(blueprint__name="greet").count() == 2


def test_a_read_key_cannot_save(reader_a: Api) -> None:
    assert failed(create(reader_a)) == (403, "forbidden")
    assert not Blueprint.objects.exists()


def test_nested_blueprints_are_pinned_to_the_version_they_had_when_saved(api_a: Api) -> None:
    create(api_a)
    outer = {
        "entry": "each",
        "nodes": {"each": {"kind": "map", "config": {"items": "input.people", "blueprint": "greet"}}},
        "edges": [{"from": "each", "to": "end"}],
    }
    saved = create(api_a, name="greet-all", definition=outer).json()
    assert saved["definition"]["nodes"]["each"]["config"]["version"] == 1
    api_a.put("blueprints/greet", {"definition": GREET})
    assert api_a.get("blueprints/greet-all").json()["definition"]["nodes"]["each"]["config"]["version"] == 1


def test_a_blueprint_cannot_run_itself_or_a_missing_one(api_a: Api) -> None:
    loop = {
        "entry": "again",
        "nodes": {"again": {"kind": "subgraph", "config": {"blueprint": "self"}}},
    }
    response = create(api_a, name="self", definition=loop)
    assert response.json()["error"]["details"]["problems"] == [
        {"path": "nodes.again.config.blueprint", "message": "a blueprint cannot run itself"}
    ]
    loop["nodes"]["again"]["config"]["blueprint"] = "ghost"
    response = create(api_a, name="self", definition=loop)
    assert response.json()["error"]["details"]["problems"] == [
        {"path": "nodes.again.config.blueprint", "message": "no blueprint named 'ghost'"}
    ]


def test_shapes_no_check_foresaw_are_refused_as_bad_input_never_a_500(api_a: Api) -> None:
    odd = [
        {"entry": ["a"], "nodes": {"a": {"kind": "template", "config": {"template": "x"}}}},
        {"entry": "a", "nodes": {"a": {"kind": ["template"]}}},
        {
            "entry": "a",
            "nodes": {"a": {"kind": "template", "config": {"template": "x"}}},
            "edges": [{"from": ["a"], "to": {}}],
        },
        {"entry": "a", "nodes": {"a": {"kind": "wait", "config": {"mode": "input", "schema": {"type": 5}}}}},
        {
            "entry": "a",
            "nodes": {"a": {"kind": "template", "config": {"template": "x"}}},
            "input_schema": {"type": "obj"},
        },
        {
            "entry": "a",
            "nodes": {"a": {"kind": "subgraph", "config": {"blueprint": "x", "mode": "child", "version": "2"}}},
        },
    ]
    for definition in odd:
        assert failed(create(api_a, definition=definition)) == (400, "invalid_input"), definition
    assert not Blueprint.objects.exists()


def test_nesting_is_one_level_and_a_mapped_node_is_simple(api_a: Api) -> None:
    create(api_a)
    mapper = {"entry": "m", "nodes": {"m": {"kind": "map", "config": {"items": "input", "blueprint": "greet"}}}}
    assert create(api_a, name="mapper", definition=mapper).status_code == 201
    outer = {"entry": "m", "nodes": {"m": {"kind": "map", "config": {"items": "input", "blueprint": "mapper"}}}}
    problems = create(api_a, name="outer", definition=outer).json()["error"]["details"]["problems"]
    assert problems == [
        {
            "path": "nodes.m.config.blueprint",
            "message": "blueprint 'mapper' runs other blueprints (node 'm'); one run inside a step may not",
        }
    ]
    llm_each = {"kind": "llm", "config": {"provider": "demo", "model": "demo", "prompt": "x"}}
    mapped = {"entry": "m", "nodes": {"m": {"kind": "map", "config": {"items": "input", "node": llm_each}}}}
    problems = create(api_a, name="mapped", definition=mapped).json()["error"]["details"]["problems"]
    assert problems == [
        {
            "path": "nodes.m.config.node.kind",
            "message": 'a mapped node is a function or a template; map a "blueprint" for anything else',
        }
    ]
