"""Input schemas are JSON Schema (Draft 2020-12): a schema a tool made (Pydantic's
``model_json_schema()``, with ``$defs``, ``$ref``, ``anyOf``, ``pattern``, ``format``, ``minItems``)
is saved as it is, inputs are checked against all of it, and a schema that is not one is refused
on save, each problem with its place, in the API's error body."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from executions.models import Blueprint, Execution

from .conftest import Api, error_of

pytestmark = pytest.mark.django_db


class Line(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}-\d{4}$")
    quantity: int = Field(ge=1, le=99)


class Pickup(BaseModel):
    kind: Literal["pickup"]
    store: str


class Courier(BaseModel):
    kind: Literal["courier"]
    address: str = Field(min_length=5)


class Order(BaseModel):
    email: str = Field(json_schema_extra={"format": "email"})
    placed: str = Field(json_schema_extra={"format": "date"})
    lines: list[Line] = Field(min_length=1)
    delivery: Pickup | Courier = Field(discriminator="kind")
    note: str | None = None


SCHEMA = Order.model_json_schema()
GOOD = {
    "email": "ann@example.com",
    "placed": "2026-12-04",
    "lines": [{"sku": "ABC-1234", "quantity": 2}],
    "delivery": {"kind": "courier", "address": "1 Main Street"},
}


def definition(schema: Any) -> dict[str, Any]:
    return {
        "input_schema": schema,
        "entry": "echo",
        "nodes": {"echo": {"kind": "template", "config": {"template": "{{ input.lines[0].sku }}"}}},
        "edges": [{"from": "echo", "to": "end"}],
    }


def test_the_schema_really_is_pydantics_with_what_the_old_subset_refused() -> None:
    text = str(SCHEMA)
    for keyword in ("$defs", "$ref", "oneOf", "anyOf", "pattern", "minItems", "format"):
        assert f"'{keyword}'" in text, keyword


def test_a_pydantic_schema_is_saved_and_checks_every_submission(api_a: Api, enqueued: list[str]) -> None:
    saved = api_a.post("blueprints", {"name": "orders", "definition": definition(SCHEMA)})
    assert saved.status_code == 201, saved.json()
    assert saved.json()["input_schema"] == SCHEMA
    assert api_a.post("executions", {"blueprint": "orders", "input": GOOD}).status_code == 201
    cases = [
        ({**GOOD, "lines": []}, "input.lines has fewer than 1 items", "input.lines"),
        (
            {**GOOD, "lines": [{"sku": "abc", "quantity": 2}]},
            "input.lines[0].sku must match the pattern '^[A-Z]{3}-\\\\d{4}$'",
            "input.lines[0].sku",
        ),
        ({**GOOD, "lines": [{"sku": "ABC-1234", "quantity": 0}]}, "input.lines[0].quantity must be at least 1", None),
        ({**GOOD, "email": "not an address"}, "input.email must be a valid email", "input.email"),
        ({**GOOD, "placed": "2026-13-45"}, "input.placed must be a valid date", "input.placed"),
        (
            {**GOOD, "delivery": {"kind": "courier", "address": "x"}},
            "input.delivery.address must be at least 5 characters",
            "input.delivery.address",
        ),
        ({k: v for k, v in GOOD.items() if k != "lines"}, "input.lines is required", "input"),
    ]
    for value, message, path in cases:
        response = api_a.post("executions", {"blueprint": "orders", "input": value})
        assert response.status_code == 400, value
        error = error_of(response)
        assert error["code"] == "invalid_input"
        if message is not None:
            assert error["message"] == message
        if path is not None:
            assert error["details"]["path"] == path, error
        assert error["details"]["errors"], error
    assert Execution.objects.count() == 1


@pytest.mark.parametrize(
    ("schema", "place"),
    [
        ({"type": "obj"}, "at type: "),
        ({"type": "array", "minItems": -1}, "at minItems: "),
        ({"properties": {"a": {"pattern": 5}}}, "at properties.a.pattern: "),
        (
            {"properties": {"a": {"$ref": "#/$defs/Missing"}}},
            "at properties.a: $ref '#/$defs/Missing' does not resolve",
        ),
        ({"$ref": "https://example.com/schema.json"}, "$ref 'https://example.com/schema.json' does not resolve"),
        ([], "a schema must be a JSON object"),
    ],
)
def test_a_schema_that_is_not_json_schema_is_refused_on_save_with_its_place(
    api_a: Api, schema: Any, place: str
) -> None:
    response = api_a.post("blueprints", {"name": "bad", "definition": definition(schema)})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_input"
    problems = error["details"]["problems"]
    assert any(p["path"] == "input_schema" and p["message"].startswith(place) for p in problems), problems
    assert not Blueprint.objects.exists()


def test_a_wait_for_input_takes_a_pydantic_schema_too(api_a: Api) -> None:
    waiting = {
        "entry": "ask",
        "nodes": {"ask": {"kind": "wait", "config": {"mode": "input", "schema": SCHEMA}}},
        "edges": [{"from": "ask", "to": "end"}],
    }
    assert api_a.post("blueprints", {"name": "ask", "definition": waiting}).status_code == 201
