"""The admin's webhook pages: an operator sees the webhooks and deliveries of its own tenants only,
reads each delivery's attempts, and cannot add a webhook there (the API shows its secret once)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from executions.models import Execution, WebhookAttempt, WebhookDelivery
from executions.services import webhooks
from tenants.models import Tenant
from tenants.services import tenant_set_limits
from tests.test_admin import staff_user, url

pytestmark = pytest.mark.django_db


def delivery_of(tenant: Tenant, path: str) -> WebhookDelivery:
    tenant_set_limits(tenant=tenant, changes={"tool_allowed_domains": ["hooks.example.com"]})
    endpoint, _ = webhooks.webhook_create(
        tenant=tenant, url=f"https://hooks.example.com/{path}", events=["data-execution-end"]
    )
    execution = Execution.objects.create(tenant=tenant, blueprint="demo.chain", state="completed")
    delivery = WebhookDelivery.objects.create(
        tenant=tenant,
        endpoint=endpoint,
        execution=execution,
        url=endpoint.url,
        event_type="data-execution-end",
        event_id=f"evt_{path}",
        attempts=1,
        last_status=503,
    )
    WebhookAttempt.objects.create(
        delivery=delivery, number=1, started_at=timezone.now(), status_code=503, response_body=f"down-{path}"
    )
    return delivery


def test_an_operator_sees_its_own_tenants_webhooks_and_deliveries_only(
    tenant_a: Tenant, tenant_b: Tenant, client: Client, django_user_model: Any
) -> None:
    mine, theirs = delivery_of(tenant_a, "mine"), delivery_of(tenant_b, "theirs")
    staff_user(django_user_model, client, "op", {tenant_a: "operator"})
    page = client.get(url("executions_webhookdelivery_changelist")).content.decode()
    assert mine.pk in page
    assert theirs.pk not in page
    hooks = client.get(url("executions_webhookendpoint_changelist")).content.decode()
    assert "/mine" in hooks
    assert "/theirs" not in hooks
    detail = client.get(url("executions_webhookdelivery_change", mine.pk))
    assert detail.status_code == 200
    assert "down-mine" in detail.content.decode()  # its attempts, inline
    assert client.get(url("executions_webhookdelivery_change", theirs.pk)).status_code == 302  # not found: away
    assert client.get(url("executions_webhookendpoint_change", theirs.endpoint_id)).status_code == 302
    assert client.get(url("executions_webhookendpoint_add")).status_code == 403
    assert "whsec_" not in client.get(url("executions_webhookendpoint_change", mine.endpoint_id)).content.decode()
