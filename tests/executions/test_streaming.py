"""Events reach the channel layer only after the transaction that stored them commits."""

from __future__ import annotations

import json
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

from executions.live.groups import execution_group, tenant_group
from executions.models import Execution
from executions.persistence.kernels import kernel_for
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def layer(settings: Any) -> Any:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.ENACT_PUBLISH_DIRECT = True
    return get_channel_layer()


def _listen(layer: Any, group: str) -> str:
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(group, channel)
    return channel


def _receive(layer: Any, channel: str, timeout: float = 2.0) -> dict[str, Any] | None:
    import asyncio

    async def get() -> dict[str, Any] | None:
        try:
            return await asyncio.wait_for(layer.receive(channel), timeout)
        except TimeoutError:
            return None

    return async_to_sync(get)()


def test_an_event_is_published_to_its_execution_and_tenant_groups_after_commit(tenant_a: Tenant, layer: Any) -> None:
    execution = Execution.objects.create(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    on_execution = _listen(layer, execution_group(execution.pk))
    on_tenant = _listen(layer, tenant_group(tenant_a.pk))

    kernel_for(execution).cancel_execution("test")

    for channel in (on_execution, on_tenant):
        message = _receive(layer, channel)
        assert message is not None
        assert message["type"] == "execution.event"
        event = json.loads(message["json"])
        assert (
            (message["seq"], message["event_type"]) == (event["seq"], event["type"]) == (1, "data-execution-cancelled")
        )
        assert message["execution_id"] == event["execution_id"] == execution.pk


def test_a_rolled_back_event_is_never_published(tenant_a: Tenant, layer: Any) -> None:
    execution = Execution.objects.create(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    channel = _listen(layer, execution_group(execution.pk))

    class Abort(Exception):
        pass

    def cancel_then_roll_back() -> None:
        with transaction.atomic():
            kernel_for(execution).cancel_execution("test")
            raise Abort

    with pytest.raises(Abort):
        cancel_then_roll_back()

    assert _receive(layer, channel, timeout=0.5) is None
    assert Execution.objects.get(pk=execution.pk).state == "queued"
    assert execution.events.count() == 0
