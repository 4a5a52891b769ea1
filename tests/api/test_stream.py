"""The SSE stream, through the project's ASGI application: stored events, then live ones, the end,
and a reconnect with ``Last-Event-ID`` that misses nothing and repeats nothing.

Workers run on threads of this process (``inline_worker``) and commit through their own database
connections, as worker processes do; events reach the stream through the relay on the embedded
default and through Redis when ``REDIS_URL`` is set.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.conf import settings
from django.db import connection

from enact_platform.asgi import application
from executions.live import relay as relay_module
from executions.models import Execution
from executions.services.controls import execution_cancel
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import api_key_create, tenant_set_limits

from ..conftest import cancel_on_this_thread, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_channel_layer")]


@pytest.fixture
def key_a(tenant_a: Tenant) -> str:
    return api_key_create(tenant=tenant_a, scope="read")[1]


class Stream:
    """One SSE request to the ASGI application, read frame by frame."""

    def __init__(
        self,
        execution_id: str,
        key: str,
        *,
        last_event_id: int | str | None = None,
        query: str = "",
        method: str = "GET",
    ) -> None:
        headers = [(b"authorization", f"Bearer {key}".encode())]
        if last_event_id is not None:
            headers.append((b"last-event-id", str(last_event_id).encode()))
        path = f"/api/v1/executions/{execution_id}/stream"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": headers,
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
        }
        self.io = ApplicationCommunicator(application, scope)
        self.buffer = ""
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.ended = False

    async def open(self) -> int:
        await self.io.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await self.io.receive_output(5)
        assert start["type"] == "http.response.start"
        self.status, self.headers = start["status"], dict(start["headers"])
        return start["status"]

    async def body(self) -> bytes:
        message = await self.io.receive_output(5)
        assert message["type"] == "http.response.body"
        self.ended = not message.get("more_body", False)
        return message["body"]

    async def events(self, count: int | None = None, timeout: float = 20) -> list[dict[str, Any]]:
        """Events until ``count`` of them arrived, or the response ended."""
        events: list[dict[str, Any]] = []

        async def read() -> None:
            while not self.ended and (count is None or len(events) < count):
                self.buffer += (await self.body()).decode()
                while "\n\n" in self.buffer:
                    frame, self.buffer = self.buffer.split("\n\n", 1)
                    fields = dict(line.split(": ", 1) for line in frame.splitlines() if not line.startswith(":"))
                    if "data" in fields:
                        event = json.loads(fields["data"])
                        assert fields["id"] == str(event["seq"])
                        assert fields["event"] == event["type"]
                        events.append(event)

        await asyncio.wait_for(read(), timeout)
        return events

    async def drop(self) -> None:
        await self.io.send_input({"type": "http.disconnect"})
        await self.io.wait(5)


def _run_in_thread(fn: Any, *args: Any) -> threading.Thread:
    def target() -> None:
        try:
            fn(*args)
        finally:
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _finished(execution_id: str) -> bool:
    return Execution.objects.get(pk=execution_id).is_terminal


def test_a_finished_execution_streams_its_log_and_ends(tenant_a: Tenant, key_a: str, inline_worker: Any) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 3})
    assert wait_until(lambda: _finished(execution.pk))

    async def scenario() -> list[dict[str, Any]]:
        stream = Stream(execution.pk, key_a)
        assert await stream.open() == 200
        assert stream.headers[b"content-type"].startswith(b"text/event-stream")
        events = await stream.events()
        assert stream.ended
        return events

    events = asyncio.run(scenario())
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "data-execution-start"
    assert events[-1]["type"] == "data-execution-end"
    assert events[-1]["data"]["output"] == 3


def test_live_events_follow_the_stored_ones_and_the_stream_ends(
    tenant_a: Tenant, key_a: str, inline_worker: Any
) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 3, "seconds": 0.3})
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).state == "running")

    async def scenario() -> list[dict[str, Any]]:
        stream = Stream(execution.pk, key_a)
        assert await stream.open() == 200
        return await stream.events()

    events = asyncio.run(scenario())
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "data-execution-end"
    assert sum(e["type"] == "data-step-end" for e in events) == 3


def test_a_client_that_drops_and_reconnects_misses_nothing_and_sees_nothing_twice(
    tenant_a: Tenant, key_a: str, inline_worker: Any
) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 4, "seconds": 0.2})

    async def scenario() -> list[dict[str, Any]]:
        first = Stream(execution.pk, key_a)
        assert await first.open() == 200
        before = await first.events(count=3)
        await first.drop()
        await asyncio.sleep(0.5)  # events are committed while nobody listens
        again = Stream(execution.pk, key_a, last_event_id=before[-1]["seq"])
        assert await again.open() == 200
        return before + await again.events()

    events = asyncio.run(scenario())
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    assert events[-1]["type"] == "data-execution-end"
    stored = Execution.objects.get(pk=execution.pk).events.count()
    assert len(seqs) == stored


def test_a_client_with_every_event_gets_204_and_one_from_the_future_400(
    tenant_a: Tenant, key_a: str, client: Any
) -> None:
    """EventSource reconnects after the stream ends; 204 is what stops it."""
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    execution_cancel(tenant=tenant_a, execution_id=execution.pk)  # one event: seq 1

    async def status(last: int) -> int:
        stream = Stream(execution.pk, key_a, last_event_id=last)
        status = await stream.open()
        await stream.body()
        return status

    assert asyncio.run(status(0)) == 200
    assert asyncio.run(status(1)) == 204
    status_400, body, _ = _refusal(execution.pk, key_a, last_event_id=2)
    assert (status_400, body["error"]["details"]) == (400, {"last_seq": 1})
    headers = {"Authorization": f"Bearer {key_a}", "Accept": "text/event-stream", "Last-Event-ID": "1"}
    assert client.get(f"/api/v1/executions/{execution.pk}/stream", headers=headers).status_code == 204


def test_after_in_the_query_works_like_last_event_id(tenant_a: Tenant, key_a: str, inline_worker: Any) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 2})
    assert wait_until(lambda: _finished(execution.pk))

    async def scenario() -> list[int]:
        stream = Stream(execution.pk, key_a, query="after=4")
        await stream.open()
        return [e["seq"] for e in await stream.events()]

    seqs = asyncio.run(scenario())
    assert seqs[0] == 5
    assert seqs == list(range(5, 5 + len(seqs)))


def _refusal(execution_id: str, key: str, **kwargs: Any) -> tuple[int, dict[str, Any], dict[bytes, bytes]]:
    async def scenario() -> tuple[int, dict[str, Any], dict[bytes, bytes]]:
        stream = Stream(execution_id, key, **kwargs)
        status = await stream.open()
        body = await stream.body()
        assert stream.ended
        return status, json.loads(body), stream.headers

    return asyncio.run(scenario())


def test_the_stream_refuses_strangers_and_bad_requests(tenant_a: Tenant, tenant_b: Tenant, key_a: str) -> None:
    theirs, _ = execution_submit(tenant=tenant_b, blueprint="demo.chain", input={"n": 1})
    mine, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    status, body, _ = _refusal(theirs.pk, key_a)
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body, _ = _refusal("exec_nope", key_a)
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body, headers = _refusal(mine.pk, "enact_bad_key")
    assert (status, body["error"]["code"]) == (401, "unauthenticated")
    assert headers[b"www-authenticate"] == b"Bearer"
    status, body, _ = _refusal(mine.pk, key_a, last_event_id=-1)
    assert (status, body["error"]["code"]) == (400, "invalid_input")
    status, body, _ = _refusal(mine.pk, key_a, last_event_id="²")  # a digit to str.isdigit, not to int()
    assert (status, body["error"]["code"]) == (400, "invalid_input")
    status, body, _ = _refusal(mine.pk, key_a, query="after=soon")
    assert (status, body["error"]["code"]) == (400, "invalid_input")
    status, body, headers = _refusal(mine.pk, key_a, method="POST")
    assert (status, body["error"]["code"], headers[b"allow"]) == (405, "method_not_allowed", b"GET")


def test_the_stream_counts_against_the_keys_rate(tenant_a: Tenant, key_a: str) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"requests_per_minute": 1})
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    execution_cancel(tenant=tenant_a, execution_id=execution.pk)

    async def whole_stream() -> list[dict[str, Any]]:
        stream = Stream(execution.pk, key_a)
        assert await stream.open() == 200
        return await stream.events()  # a short one: the execution is over

    assert [e["type"] for e in asyncio.run(whole_stream())] == ["data-execution-cancelled"]
    status, body, headers = _refusal(execution.pk, key_a)
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    assert int(headers[b"retry-after"]) >= 1


def test_idle_clients_hold_no_thread_and_no_database_connection(tenant_a: Tenant, key_a: str) -> None:
    """Twenty clients wait on an execution that is not going anywhere."""
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})

    def connections() -> int:
        if connection.vendor != "postgresql":
            return 0
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
            return int(cursor.fetchone()[0])

    async def scenario() -> tuple[int, int, int, int]:
        threads_before, connections_before = threading.active_count(), await asyncio.to_thread(connections)
        streams = [Stream(execution.pk, key_a) for _ in range(20)]
        for stream in streams:
            assert await stream.open() == 200
            await stream.body()  # the retry hint: each stream is open and has read the log
        await asyncio.sleep(0.3)
        threads_during, connections_during = threading.active_count(), await asyncio.to_thread(connections)
        for stream in streams:
            await stream.drop()
        return threads_before, threads_during, connections_before, connections_during

    threads_before, threads_during, connections_before, connections_during = asyncio.run(scenario())
    assert threads_during - threads_before <= 2  # the executor that borrows connections, the relay
    # Counted on PostgreSQL (CI runs the suite there too); SQLite has no server to ask.
    assert connections_during - connections_before <= 2


def test_a_quiet_stream_sends_keep_alives_and_notices_what_was_not_published(
    tenant_a: Tenant, key_a: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A publisher can drop an event (Redis restarting); the stream finds it in the log anyway."""
    monkeypatch.setattr(settings, "ENACT_SSE_KEEPALIVE_SECONDS", 0.2)
    monkeypatch.setattr(settings, "ENACT_PUBLISH_DIRECT", False)
    monkeypatch.setattr(relay_module, "ensure_relay", lambda: None)  # nothing is delivered live
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})

    async def scenario() -> tuple[str, list[dict[str, Any]]]:
        stream = Stream(execution.pk, key_a)
        await stream.open()
        hint = (await stream.body()).decode()
        keep_alive = (await stream.body()).decode()
        await asyncio.to_thread(cancel_on_this_thread, tenant_a, execution.pk)
        return hint + keep_alive, await stream.events(timeout=5)

    text, events = asyncio.run(scenario())
    assert text == "retry: 1000\n\n: keep-alive\n\n"
    assert [e["type"] for e in events] == ["data-execution-cancelled"]


def test_the_django_view_serves_the_stored_events_without_the_asgi_router(
    tenant_a: Tenant, key_a: str, client: Any
) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    execution_cancel(tenant=tenant_a, execution_id=execution.pk)
    response = client.get(
        f"/api/v1/executions/{execution.pk}/stream",
        headers={"Authorization": f"Bearer {key_a}", "Accept": "text/event-stream"},
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert text.startswith("retry: 1000\n\nid: 1\nevent: data-execution-cancelled\ndata: ")


@pytest.mark.skipif(not settings.REDIS_URL, reason="subscriptions are Redis's (REDIS_URL)")
def test_streams_sockets_and_readiness_checks_leave_no_subscription_behind(
    tenant_a: Tenant, key_a: str, inline_worker: Any, settings: Any
) -> None:
    """A web process serves clients for weeks, and a load balancer asks /readyz every few
    seconds: each channel they make is given back, with its Redis subscription."""
    import uuid

    from asgiref.sync import sync_to_async
    from channels.layers import channel_layers, get_channel_layer
    from channels.testing import WebsocketCommunicator
    from redis.asyncio import Redis

    from executions.live.groups import channel_release
    from executions.ops.health import check_channel_layer

    prefix = f"leak{uuid.uuid4().hex[:8]}"  # this test's channels alone, whatever else uses Redis
    settings.CHANNEL_LAYERS = {"default": {**settings.CHANNEL_LAYERS["default"]}}
    settings.CHANNEL_LAYERS["default"]["CONFIG"] = {**settings.CHANNEL_LAYERS["default"]["CONFIG"], "prefix": prefix}
    channel_layers.backends.clear()
    finished, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 2})
    assert wait_until(lambda: _finished(finished.pk))
    running, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 30, "seconds": 0.2})

    async def ours(redis: Redis) -> set[bytes]:
        return set(await redis.pubsub_channels(f"{prefix}*"))

    async def scenario() -> tuple[set[bytes], set[bytes], list[str | None]]:
        redis = Redis.from_url(settings.REDIS_URL)
        checks = []
        for _ in range(3):
            # A stream to the end, a stream dropped half way, a socket, a readiness check.
            stream = Stream(finished.pk, key_a)
            assert await stream.open() == 200
            assert (await stream.events())[-1]["type"] == "data-execution-end"
            await stream.io.wait(5)
            dropped = Stream(running.pk, key_a)
            assert await dropped.open() == 200
            await dropped.events(count=2)
            await dropped.drop()
            ws = WebsocketCommunicator(application, f"/ws/executions/{finished.pk}/?token={key_a}")
            assert (await ws.connect())[0]
            await ws.disconnect()
            # A socket that goes while its execution's events still come.
            live = WebsocketCommunicator(application, f"/ws/executions/{running.pk}/?token={key_a}")
            assert (await live.connect())[0]
            await live.receive_json_from(10)
            await live.disconnect()
            # As a view runs it: on a thread, hopping back to this (the server's) loop.
            checks.append(await sync_to_async(check_channel_layer)())
        # A channel with messages still queued when it is let go of.
        layer = get_channel_layer()
        channel = await layer.new_channel()
        for n in range(3):
            await layer.send(channel, {"type": "test.message", "n": n})
        await asyncio.sleep(0.2)  # they have arrived
        while_open = await ours(redis)
        await channel_release(layer, channel)
        await asyncio.sleep(0.2)  # unsubscribing finishes on the loop
        after = await ours(redis)
        await redis.aclose()
        return while_open, after, checks

    while_open, after, checks = asyncio.run(scenario())
    assert checks == [None, None, None]
    assert any(name.startswith(f"{prefix}specific.".encode()) for name in while_open)  # the probe sees ours
    assert after == set()
