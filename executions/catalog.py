"""What a tenant may run, in one place: the blueprints written in Python (for every tenant) and
the tenant's own blueprints, defined as JSON (their versions). Submission, workers, the API and the dashboard all look
blueprints up here, so a name means the same thing everywhere."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import F

from enact_platform.errors import InvalidInput, NotFound
from executions.blueprints.definition import Resources, compile_definition, referenced_secrets
from executions.blueprints.functions import FUNCTIONS
from executions.blueprints.tools import ToolPolicy
from executions.kernel import CompiledGraph
from executions.models import BlueprintVersion, ModelPrice
from executions.registry import CodeBlueprint, registry
from tenants.models import Tenant, TenantLimits
from tenants.services import tenant_secrets_plain


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    version: int
    description: str
    input_schema: dict[str, Any]
    source: str  # "code" or "blueprint"
    registered: CodeBlueprint | None = None
    stored: BlueprintVersion | None = None  # a tenant's blueprint: the version's row

    @property
    def definition(self) -> dict[str, Any] | None:
        return self.stored.definition if self.stored is not None else None

    def build(self, input: Any, resources: Resources | None = None) -> CompiledGraph:
        """The graph to run. Without ``resources`` a blueprint compiles for checking only."""
        if self.registered is not None:
            return self.registered.build(input)
        assert self.definition is not None
        return compile_definition(self.name, self.definition, resources or Resources())

    def initial_state(self, input: Any) -> Any:
        """What the entry node gets: a blueprint written in Python its input; one defined as JSON the run's state object."""
        return input if self.registered is not None else {"input": input}


def _from_registered(entry: CodeBlueprint) -> CatalogEntry:
    return CatalogEntry(entry.name, entry.version, entry.description, entry.input_schema, "code", registered=entry)


def _from_version(row: BlueprintVersion, name: str) -> CatalogEntry:
    definition = row.definition
    return CatalogEntry(
        name,
        row.version,
        definition.get("description", ""),
        definition.get("input_schema") or {"type": "object"},
        "blueprint",
        stored=row,
    )


def blueprint_lookup(
    *, tenant: Tenant, name: Any, version: Any = None, missing: type[Exception] = InvalidInput
) -> CatalogEntry:
    """The blueprint ``name`` (at ``version``, else its latest) for this tenant. An unknown name is
    ``missing`` (InvalidInput: it came in a request body; NotFound: it named the URL), an unknown
    version of a known one NotFound."""
    if not isinstance(name, str) or not name:
        raise InvalidInput("name a blueprint to run")
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
        raise InvalidInput("version must be a whole number of 1 or more")
    registered = registry.get(name)
    if registered is not None:
        if version not in (None, registered.version):
            raise NotFound(f"{name} has no version {version}", details={"versions": [registered.version]})
        return _from_registered(registered)
    rows = BlueprintVersion.objects.filter(tenant=tenant, blueprint__name=name).select_related("blueprint")
    row = rows.filter(version=version).first() if version is not None else rows.order_by("-version").first()
    if row is None:
        if version is not None and rows.exists():
            raise NotFound(f"blueprint {name!r} has no version {version}")
        if missing is NotFound:
            raise NotFound(f"no blueprint named {name!r}")
        raise InvalidInput(f"unknown blueprint {name!r}", details={"blueprints": blueprint_names(tenant=tenant)})
    return _from_version(row, name)


def blueprint_catalog(*, tenant: Tenant) -> list[CatalogEntry]:
    """Every blueprint the tenant may run, at its latest version, by name."""
    entries = [_from_registered(entry) for entry in registry.all()]
    latest = (
        BlueprintVersion.objects.filter(tenant=tenant, version=F("blueprint__latest_version"))
        .select_related("blueprint")
        .order_by("blueprint__name")
    )
    entries += [_from_version(row, row.blueprint.name) for row in latest]
    return sorted(entries, key=lambda e: e.name)


def blueprint_names(*, tenant: Tenant) -> list[str]:
    return [entry.name for entry in blueprint_catalog(tenant=tenant)]


def run_resources(
    *, tenant_id: int, definition: dict[str, Any], spawn_child: Callable[..., str] | None = None
) -> Resources:
    """Everything a blueprint's nodes need, resolved before the run: the secrets it names, model
    prices, the tenant's tool policy, registered functions, and its other blueprints.
    ``spawn_child`` starts a child execution (the worker passes one; a check needs none)."""
    limits = TenantLimits.objects.get(tenant_id=tenant_id)
    loaded: dict[tuple[str, int | None], dict[str, Any] | None] = {}

    def load(name: str, version: int | None) -> dict[str, Any] | None:
        if (name, version) not in loaded:
            rows = BlueprintVersion.objects.filter(tenant_id=tenant_id, blueprint__name=name)
            row = rows.filter(version=version).first() if version else rows.order_by("-version").first()
            loaded[(name, version)] = row.definition if row else None
        return loaded[(name, version)]

    names = referenced_secrets(definition, load)
    prices = {
        p.model: (float(p.input_usd_per_million), float(p.output_usd_per_million)) for p in ModelPrice.objects.all()
    }
    return Resources(
        tenant_id=str(tenant_id),
        secrets=tenant_secrets_plain(tenant_id=tenant_id, names=names) if names else {},
        prices=prices,
        tool_policy=ToolPolicy.from_limits(limits),
        functions=dict(FUNCTIONS),
        load_blueprint=load,
        spawn_child=spawn_child,
        llm_timeout_s=float(settings.ENACT_LLM_TIMEOUT_SECONDS),
    )
