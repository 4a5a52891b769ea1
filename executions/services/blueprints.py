"""Saving blueprints (every save is a new version; nothing is edited in place), and installing
the demo ones."""

from __future__ import annotations

import copy
import json
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction

from enact_platform.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from enact_platform.locks import locked
from executions.blueprints.definition import NAME, Problem, validate
from executions.blueprints.demo import DEMO_BLUEPRINTS
from executions.blueprints.functions import FUNCTIONS
from executions.models import Blueprint, BlueprintVersion
from executions.registry import registry
from tenants.models import Tenant

MAX_DEFINITION_BYTES = 256 * 1024
NESTED_KINDS = ("map", "subgraph")


def blueprint_save(
    *, tenant: Tenant, name: Any, definition: Any, user: User | None = None, create: bool | None = None
) -> BlueprintVersion:
    """Validate ``definition`` and store it as the next version of blueprint ``name``.

    ``create``: True refuses a name that exists (POST), False one that does not (PUT), None takes
    either. Blueprints it runs (``map``, ``subgraph``) without a version are pinned to their latest
    version now, so a saved version always runs the same graph. Invalid definitions raise
    InvalidInput with every problem in ``details.problems``; nothing is written."""
    _check_name(name)
    if not isinstance(definition, dict):
        raise InvalidInput("definition must be a JSON object")
    size = len(json.dumps(definition, separators=(",", ":")).encode())
    if size > MAX_DEFINITION_BYTES:
        raise PayloadTooLarge(f"definition is {size} bytes; at most {MAX_DEFINITION_BYTES}")
    definition = _pinned(tenant, name, definition)
    problems = blueprint_problems(tenant=tenant, name=name, definition=definition)
    if problems:
        raise InvalidInput(
            f"invalid blueprint: {problems[0].path or 'definition'}: {problems[0].message}"
            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
            details={"problems": [p.to_dict() for p in problems]},
        )
    try:
        return _store(tenant, name, definition, user, create)
    except IntegrityError:  # two first saves of one name raced; the loser tries once more as an update
        return _store(tenant, name, definition, user, None if create is None else False)


def blueprint_problems(*, tenant: Tenant, name: str, definition: Any) -> list[Problem]:
    """Every problem with a definition, as saving it under ``name`` would report them."""
    return validate(definition, check_blueprint=_reference_checker(tenant, name), functions=FUNCTIONS)


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidInput(
            "a blueprint name is 1 to 100 characters: lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    if registry.get(name) is not None:
        raise Conflict(f"{name!r} is the name of a built-in graph; choose another")


@transaction.atomic
def _store(
    tenant: Tenant, name: str, definition: dict[str, Any], user: User | None, create: bool | None
) -> BlueprintVersion:
    blueprint = locked(Blueprint.objects.filter(tenant=tenant, name=name)).first()
    if blueprint is None:
        if create is False:
            raise NotFound(f"no blueprint named {name!r}")
        blueprint = Blueprint.objects.create(tenant=tenant, name=name)
    elif create is True:
        raise Conflict(
            f"blueprint {name!r} exists; PUT a new version to it", details={"version": blueprint.latest_version}
        )
    blueprint.latest_version += 1
    blueprint.description = definition.get("description", "")
    blueprint.save(update_fields=["latest_version", "description", "updated_at"])
    return BlueprintVersion.objects.create(
        tenant=tenant,
        blueprint=blueprint,
        version=blueprint.latest_version,
        definition=definition,
        created_by=user if user is not None and user.is_authenticated else None,
    )


def _pinned(tenant: Tenant, name: str, definition: dict[str, Any]) -> dict[str, Any]:
    nodes = definition.get("nodes")
    if not isinstance(nodes, dict):
        return definition
    definition = copy.deepcopy(definition)
    for node in definition["nodes"].values():
        if not isinstance(node, dict) or node.get("kind") not in NESTED_KINDS:
            continue
        config = node.get("config")
        if isinstance(config, dict) and isinstance(config.get("blueprint"), str) and config.get("version") is None:
            latest = (
                Blueprint.objects.filter(tenant=tenant, name=config["blueprint"])
                .values_list("latest_version", flat=True)
                .first()
            )
            if latest:
                config["version"] = latest
    return definition


def _reference_checker(tenant: Tenant, saving: str) -> Any:
    def check(name: str, version: int | None, nested: bool = True) -> str | None:
        """A problem with running blueprint ``name``: within a step (``nested``) or as a child."""
        if name == saving:
            return "a blueprint cannot run itself"
        rows = BlueprintVersion.objects.filter(tenant=tenant, blueprint__name=name)
        row = rows.filter(version=version).first() if version else rows.order_by("-version").first()
        if row is None:
            return f"no blueprint named {name!r}" + (f" with version {version}" if version else "")
        if not nested:  # a child is an execution of its own: it may wait, and run others
            return None
        kinds = {n: node.get("kind") for n, node in row.definition["nodes"].items()}
        waiting = [n for n, kind in kinds.items() if kind == "wait"]
        if waiting:
            return f"blueprint {name!r} waits (node {waiting[0]!r}); a blueprint run inside a step cannot wait"
        # One level only: a map of maps of maps would multiply its items past any bound.
        nesting = [n for n, kind in kinds.items() if kind in NESTED_KINDS]
        if nesting:
            return f"blueprint {name!r} runs other blueprints (node {nesting[0]!r}); one run inside a step may not"
        return None

    return check


def blueprints_install_demo(*, tenant: Tenant) -> list[str]:
    """Save the demo blueprints the tenant does not have yet; returns the names saved."""
    saved = []
    for name, definition in DEMO_BLUEPRINTS.items():
        if not Blueprint.objects.filter(tenant=tenant, name=name).exists():
            blueprint_save(tenant=tenant, name=name, definition=definition)
            saved.append(name)
    return saved
