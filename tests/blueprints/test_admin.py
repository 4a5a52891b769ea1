"""Blueprints, tenant secrets and model prices in the admin: saves go through the services, every
save of a blueprint is a new version, problems show where they are, secrets are never shown."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.test import Client
from django.urls import reverse

from executions.models import Blueprint, BlueprintVersion, ModelPrice
from tenants import secrets
from tenants.models import Tenant, TenantSecret

pytestmark = pytest.mark.django_db

DEFINITION: dict[str, Any] = {
    "entry": "hello",
    "nodes": {"hello": {"kind": "template", "config": {"template": "hi {{ input.name }}"}}},
    "edges": [{"from": "hello", "to": "end"}],
}


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:{name}", args=[quote(arg) for arg in args])


def add_blueprint(client: Client, tenant: Tenant, name: str, definition: Any) -> Any:
    form = {"tenant": tenant.pk, "name": name, "definition": json.dumps(definition)}
    form.update({"versions-TOTAL_FORMS": "0", "versions-INITIAL_FORMS": "0"})
    return client.post(url("executions_blueprint_add"), form)


def test_a_blueprint_added_in_the_admin_is_version_1(admin_client: Client, tenant_a: Tenant) -> None:
    response = add_blueprint(admin_client, tenant_a, "hello", DEFINITION)
    assert response.status_code == 302
    version = BlueprintVersion.objects.get()
    assert (version.blueprint.name, version.version, version.definition, version.tenant) == (
        "hello",
        1,
        DEFINITION,
        tenant_a,
    )


def test_each_save_of_the_change_form_is_a_new_version(admin_client: Client, tenant_a: Tenant) -> None:
    add_blueprint(admin_client, tenant_a, "hello", DEFINITION)
    blueprint = Blueprint.objects.get()
    page = admin_client.get(url("executions_blueprint_change", blueprint.pk))
    assert page.status_code == 200
    assert "hi {{ input.name }}" in page.content.decode()  # the latest definition, ready to edit
    changed = {**DEFINITION, "description": "second"}
    form = {"definition": json.dumps(changed), "versions-TOTAL_FORMS": "1", "versions-INITIAL_FORMS": "1"}
    form["versions-0-id"] = str(BlueprintVersion.objects.get().pk)
    form["versions-0-blueprint"] = str(blueprint.pk)
    response = admin_client.post(url("executions_blueprint_change", blueprint.pk), form)
    assert response.status_code == 302
    assert list(BlueprintVersion.objects.order_by("version").values_list("version", flat=True)) == [1, 2]
    assert Blueprint.objects.get().latest_version == 2
    assert BlueprintVersion.objects.get(version=1).definition == DEFINITION


def test_problems_are_shown_with_their_place_and_nothing_is_saved(admin_client: Client, tenant_a: Tenant) -> None:
    bad = {**DEFINITION, "edges": [{"from": "hello", "to": "bye"}]}
    response = add_blueprint(admin_client, tenant_a, "hello", bad)
    assert response.status_code == 200
    assert "edges[0].to: &#x27;bye&#x27; is not a node (or &quot;end&quot;); nodes: hello" in response.content.decode()
    assert not Blueprint.objects.exists()


def test_a_secret_is_stored_encrypted_and_never_shown(admin_client: Client, tenant_a: Tenant) -> None:
    value = "sk-admin-typed-secret-42"
    response = admin_client.post(
        url("tenants_tenantsecret_add"), {"tenant": tenant_a.pk, "name": "OPENAI_KEY", "value": value}
    )
    assert response.status_code == 302
    row = TenantSecret.objects.get()
    assert value not in row.ciphertext
    assert secrets.decrypt(row.ciphertext) == value
    for page in (url("tenants_tenantsecret_change", row.pk), url("tenants_tenantsecret_changelist")):
        assert value not in admin_client.get(page).content.decode()


def test_a_secret_is_replaced_by_saving_a_new_value(admin_client: Client, tenant_a: Tenant) -> None:
    admin_client.post(url("tenants_tenantsecret_add"), {"tenant": tenant_a.pk, "name": "K", "value": "first"})
    row = TenantSecret.objects.get()
    admin_client.post(url("tenants_tenantsecret_change", row.pk), {"value": "second"})
    assert secrets.decrypt(TenantSecret.objects.get().ciphertext) == "second"


def test_model_prices_are_set_in_the_admin(admin_client: Client) -> None:
    response = admin_client.post(
        url("executions_modelprice_add"),
        {"model": "gpt-x", "input_usd_per_million": "0.15", "output_usd_per_million": "0.6"},
    )
    assert response.status_code == 302
    price = ModelPrice.objects.get()
    assert price.cost_usd(1_000_000, 1_000_000) == pytest.approx(0.75)
