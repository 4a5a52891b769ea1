"""/healthz, /readyz, /metrics, and the tenant and execution on every log record."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from enact_platform.asgi import application
from executions.ops.logs import ContextFilter, JsonFormatter, log_context
from executions.ops.metrics import gauges
from executions.runtime.leases import worker_seen
from executions.services.controls import execution_cancel
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import api_key_create

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_channel_layer")]


def test_healthz_answers_while_the_process_lives(client: Client) -> None:
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert client.post("/healthz").status_code == 405


def test_readyz_needs_a_worker_seen_recently(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["channel_layer"] == "ok"
    assert body["checks"]["workers"].startswith("no worker seen in the last ")

    worker_seen(worker="host:1", running=0)
    response = client.get("/readyz")
    assert (response.status_code, response.json()["checks"]) == (
        200,
        {"database": "ok", "channel_layer": "ok", "workers": "ok"},
    )


def metric(text: str, name: str, **labels: str) -> float | None:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = "^" + re.escape(f"{name}{{{inner}}}" if labels else name) + r" (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_metrics_count_executions_by_tenant_and_state(
    client: Client, tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]
) -> None:
    for _ in range(2):
        execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    done, _ = execution_submit(tenant=tenant_b, blueprint="demo.chain", input={"n": 1})
    execution_cancel(tenant=tenant_b, execution_id=done.pk)
    worker_seen(worker="host:7", running=3)

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    text = response.content.decode()
    assert metric(text, "enact_executions", state="queued", tenant="acme") == 2
    assert metric(text, "enact_executions", state="cancelled", tenant="globex") == 1
    assert metric(text, "enact_queue_depth") == 2
    assert metric(text, "enact_executions_today", tenant="acme") == 2
    assert metric(text, "enact_tokens_today", tenant="acme") == 0
    assert metric(text, "enact_workers") == 1
    assert metric(text, "enact_worker_running", worker="host:7") == 3
    assert metric(text, "enact_websocket_connections") is not None
    assert "# TYPE enact_executions gauge" in text


def test_metrics_are_not_public(client: Client, settings: Any) -> None:
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 403
    settings.ENACT_METRICS_TOKEN = "scrape-me"
    assert client.get("/metrics").status_code == 403  # with a token set, even this machine needs it
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me").status_code == 200


def test_open_websockets_are_counted(tenant_a: Tenant) -> None:
    key = api_key_create(tenant=tenant_a, scope="read")[1]

    async def scenario() -> tuple[int, int, int]:
        before = gauges.websocket_connections
        ws = WebsocketCommunicator(application, f"/ws/executions/?token={key}")
        connected, _ = await ws.connect()
        assert connected
        during = gauges.websocket_connections
        await ws.disconnect()
        await asyncio.sleep(0.05)
        return before, during, gauges.websocket_connections

    before, during, after = asyncio.run(scenario())
    assert (during - before, after - before) == (1, 0)


def test_log_records_carry_their_tenant_and_execution() -> None:
    record = logging.LogRecord("enact", logging.WARNING, __file__, 1, "lease lost", None, None)
    with log_context(tenant_id=7, execution_id="exec_x"):
        ContextFilter().filter(record)
    entry = json.loads(JsonFormatter().format(record))
    assert {k: entry[k] for k in ("level", "message", "tenant_id", "execution_id")} == {
        "level": "WARNING",
        "message": "lease lost",
        "tenant_id": "7",
        "execution_id": "exec_x",
    }
    outside = logging.LogRecord("enact", logging.INFO, __file__, 1, "idle", None, None)
    ContextFilter().filter(outside)
    assert (outside.tenant_id, outside.execution_id) == ("-", "-")  # type: ignore[attr-defined]
