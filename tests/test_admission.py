"""Admission into Django's threaded code (enact_platform/admission.py) and what a request that
finds no free database connection answers: 429 server_busy with Retry-After, never 500."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from django.db import OperationalError
from psycopg_pool import PoolTimeout

from enact_platform.admission import Admission
from executions import selectors
from tenants.models import Tenant
from tenants.services import api_key_create


class _Blocking:
    """An ASGI app that answers only once released, counting how many run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.release = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.running += 1
        self.peak = max(self.peak, self.running)
        await self.release.wait()
        self.running -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _call(app: Any) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app({"type": "http", "path": "/api/v1/executions", "method": "POST"}, receive, send)
    headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    return sent[0]["status"], headers, sent[1]["body"]


def test_at_most_the_thread_count_run_at_once_the_rest_wait_and_past_the_queue_are_refused() -> None:
    async def scenario() -> list[tuple[int, dict[str, str], bytes]]:
        inner = _Blocking()
        app = Admission(inner, threads=2, queue=3)
        calls = [asyncio.create_task(_call(app)) for _ in range(7)]
        await asyncio.sleep(0.05)
        assert inner.running == 2  # two in,
        assert app.waiting == 3  # three waiting, two refused
        inner.release.set()
        answers = await asyncio.gather(*calls)
        assert inner.peak == 2
        return answers

    answers = asyncio.run(scenario())
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 5 + [429] * 2
    refused = [(headers, body) for status, headers, body in answers if status == 429]
    for headers, body in refused:
        assert headers["retry-after"] == "1"
        assert json.loads(body)["error"]["code"] == "server_busy"


def test_websockets_pass_untouched() -> None:
    seen: list[str] = []

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    async def scenario() -> None:
        app = Admission(inner, threads=1, queue=0)
        await asyncio.gather(*(app({"type": "websocket"}, None, None) for _ in range(3)))

    asyncio.run(scenario())
    assert seen == ["websocket"] * 3


@pytest.mark.django_db
def test_a_request_that_gets_no_pooled_connection_in_time_answers_429_not_500(
    client: Any, tenant_a: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_connection(**kwargs: Any) -> Any:
        raise OperationalError("couldn't get a connection after 10.00 sec") from PoolTimeout("pool timed out")

    monkeypatch.setattr(selectors, "execution_list", no_connection)
    key = api_key_create(tenant=tenant_a, scope="read")[1]
    response = client.get("/api/v1/executions", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 429, response.content
    assert response["Retry-After"] == "1"
    assert response.json()["error"]["code"] == "server_busy"
