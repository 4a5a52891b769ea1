"""Input schemas: JSON Schema, Draft 2020-12, checked by the ``jsonschema`` library.

A schema is checked against the Draft 2020-12 metaschema when a blueprint is saved (and its
``$ref``s must resolve within it), so a broken schema is refused then, not at every submission.
A value (a submission's input, a nested blueprint's input, an answer to a ``wait``) is checked
against it with ``format`` asserted. Any schema a tool makes (Pydantic's ``model_json_schema()``
with its ``$defs``, ``anyOf``, ``pattern``...) works as it is.

What is written here by hand is only the wording: each error is said with the place it concerns
(``input.items[2].name``) in the words the platform used before, and its JSON path goes in the
error's details.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from enact_platform.errors import InvalidInput

__all__ = ["schema_problems", "validate_input"]

MAX_ERRORS = 20  # listed in an error's details at most
_METASCHEMA = Draft202012Validator(Draft202012Validator.META_SCHEMA)


def schema_problems(schema: Any) -> list[str]:
    """What is wrong with ``schema`` as a Draft 2020-12 JSON Schema; ``[]`` if nothing."""
    if not isinstance(schema, dict):
        return ["a schema must be a JSON object"]
    problems = [
        f"{_at(_json_path('', error.absolute_path))}{error.message}"
        for error in sorted(_METASCHEMA.iter_errors(schema), key=lambda e: list(map(str, e.absolute_path)))
    ]
    if problems:
        return problems[:MAX_ERRORS]
    resolver = Registry().with_resource("", DRAFT202012.create_resource(schema)).resolver(base_uri="")
    for where, ref in _refs(schema, ""):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            problems.append(
                f"{_at(where)}$ref {ref!r} does not resolve (references within the schema, such as '#/$defs/Name', do)"
            )
    return problems[:MAX_ERRORS]


def validate_input(schema: dict[str, Any], value: Any, path: str = "input") -> None:
    """Raise :class:`InvalidInput` naming the place ``value`` breaks ``schema`` (the best match of
    its errors); ``details`` has its ``path`` and every error (``path``, ``message``)."""
    errors = list(_validator(_key(schema)).iter_errors(value))
    if not errors:
        return
    first = best_match(errors)
    assert first is not None
    listed = [{"path": _json_path(path, e.absolute_path), "message": _wording(path, e)} for e in errors]
    raise InvalidInput(
        _wording(path, first),
        details={"path": _json_path(path, first.absolute_path), "errors": listed[:MAX_ERRORS]},
    )


def _key(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=256)
def _validator(key: str) -> Draft202012Validator:
    # A schema is parsed once per process and text, not at every submission.
    return Draft202012Validator(json.loads(key), format_checker=FormatChecker())


def _refs(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield where, node["$ref"]
        for key, sub in node.items():
            yield from _refs(sub, _child(where, key))
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            yield from _refs(sub, f"{where}[{index}]")


def _child(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and key.replace("_", "a").replace("-", "a").replace("$", "a").isalnum():
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


def _json_path(root: str, parts: Iterable[Any]) -> str:
    path = root
    for part in parts:
        path = _child(path, part)
    return path


def _at(path: str) -> str:
    return f"at {path}: " if path else ""


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _wording(root: str, error: ValidationError) -> str:
    """An error in the platform's words; the library's own message for what has none here."""
    where, rule, value, instance = (
        _json_path(root, error.absolute_path),
        error.validator,
        error.validator_value,
        error.instance,
    )
    if rule == "required" and isinstance(instance, dict):
        missing = [name for name in value if name not in instance]
        return f"{_child(where, missing[0])} is required"
    if rule == "type":
        kinds = value if isinstance(value, list) else [value]
        return f"{where} must be " + " or ".join(_article(str(kind)) for kind in kinds)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if (
        rule == "additionalProperties"
        and value is False
        and isinstance(instance, dict)
        and "patternProperties" not in schema
    ):
        known = set(schema.get("properties", {}))
        return f"{where} has unknown fields: {', '.join(sorted(set(instance) - known))}"
    words = {
        "enum": f"must be one of {value}",
        "const": f"must be {json.dumps(value)}",
        "minLength": f"must be at least {value} characters",
        "maxLength": f"must be at most {value} characters",
        "minItems": f"has fewer than {value} items",
        "maxItems": f"has more than {value} items",
        "minimum": f"must be at least {value}",
        "maximum": f"must be at most {value}",
        "pattern": f"must match the pattern {value!r}",
        "format": f"must be a valid {value}",
    }
    if rule in words:
        return f"{where} {words[str(rule)]}"
    return f"{where}: {error.message}"
