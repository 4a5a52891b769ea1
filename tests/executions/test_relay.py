"""The embedded default's relay: events a worker commits reach this process's channel layer."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from channels.layers import get_channel_layer
from django.db import connection

from executions.live import relay as relay_module
from executions.live.groups import execution_group
from executions.live.relay import Relay, ensure_relay
from executions.models import Execution
from executions.persistence.kernels import kernel_for
from tenants.models import Tenant

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def layer(settings: Any) -> Any:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    settings.ENACT_PUBLISH_DIRECT = False
    return get_channel_layer()


def _as_a_worker_would(execution: Execution) -> None:
    """Commit events from another thread (in production: another process)."""

    def work() -> None:
        try:
            kernel = kernel_for(Execution.objects.get(pk=execution.pk))
            kernel.start()
            kernel.cancel_execution("relayed")
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)


def test_the_relay_forwards_new_rows_once_each_in_order(tenant_a: Tenant, layer: Any) -> None:
    execution = Execution.objects.create(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    relay = Relay(poll_seconds=0.01)

    async def scenario() -> tuple[list[dict[str, Any]], int]:
        channel = await layer.new_channel()
        await layer.group_add(execution_group(execution.pk), channel)
        await relay.run_once()  # sets the high-water mark: history is the log's job
        await asyncio.get_running_loop().run_in_executor(None, _as_a_worker_would, execution)
        sent = await relay.run_once()
        again = await relay.run_once()
        received = [await asyncio.wait_for(layer.receive(channel), 1) for _ in range(sent)]
        return received, again

    received, again = asyncio.run(scenario())
    events = [json.loads(m["json"]) for m in received]
    assert [(m["seq"], m["event_type"]) for m in received] == [(e["seq"], e["type"]) for e in events]
    assert [(e["seq"], e["type"]) for e in events] == [
        (1, "data-execution-start"),
        (2, "data-execution-cancelled"),
    ]
    assert events[1]["data"] == {"reason": "relayed", "skipped_step_ids": []}
    assert again == 0


def test_ensure_relay_does_nothing_when_processes_publish_directly(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.ENACT_PUBLISH_DIRECT = True
    monkeypatch.setattr(relay_module, "_relay_task", None)  # whatever an earlier test's event loop left

    async def scenario() -> Any:
        ensure_relay()
        return relay_module._relay_task

    assert asyncio.run(scenario()) is None
