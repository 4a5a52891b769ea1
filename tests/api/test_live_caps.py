"""Live connections per caller are capped (``ENACT_MAX_LIVE_CONNECTIONS``): sockets and event
streams together, per API key and per user; past the cap a socket closes with 4429 and a stream
answers 429; one given back makes room again."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import redis
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from enact_platform.asgi import application
from executions.live.sse import SharedLiveConnections
from executions.services.submit import execution_submit
from tenants.models import Membership, Tenant
from tenants.services import api_key_create, membership_set

from .test_stream import Stream

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_channel_layer")]

CAP = 3


@pytest.fixture(autouse=True)
def _cap(settings: Any) -> None:
    settings.ENACT_MAX_LIVE_CONNECTIONS = CAP


async def _socket(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[WebsocketCommunicator, int]:
    """A socket, and 0 while it is open or the code it was closed with."""
    ws = WebsocketCommunicator(application, path, headers=headers or [])
    connected, _ = await ws.connect()
    assert connected
    if await ws.receive_nothing(0.3):
        return ws, 0
    message = await ws.receive_output(1)
    if message["type"] == "websocket.close":
        return ws, int(message["code"])
    return ws, 0


def _session(tenant: Tenant, name: str) -> list[tuple[bytes, bytes]]:
    user = User.objects.create_user(name)
    membership_set(tenant=tenant, user=user, role=Membership.Role.ADMIN)
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    return [(b"cookie", cookie.encode()), (b"host", b"localhost"), (b"origin", b"http://localhost")]


def test_sockets_and_streams_of_one_key_are_capped_together(tenant_a: Tenant) -> None:
    key = api_key_create(tenant=tenant_a, scope="read")[1]
    other = api_key_create(tenant=tenant_a, scope="read")[1]
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 1, "seconds": 1})

    async def scenario() -> dict[str, Any]:
        feed, feed_code = await _socket(f"/ws/executions/?token={key}")
        one, one_code = await _socket(f"/ws/executions/{execution.pk}/?token={key}")
        stream = Stream(execution.pk, key)
        stream_status = await stream.open()
        # The cap is reached: one more of either kind is refused.
        _, over_code = await _socket(f"/ws/executions/?token={key}")
        refused = Stream(execution.pk, key)
        refused_status = await refused.open()
        refused_body = json.loads((await refused.io.receive_output(5))["body"])
        # Another key has its own.
        theirs, theirs_code = await _socket(f"/ws/executions/?token={other}")
        # One given back makes room.
        await one.disconnect()
        again, again_code = await _socket(f"/ws/executions/{execution.pk}/?token={key}")
        for ws in (feed, again, theirs):
            await ws.disconnect()
        await stream.io.send_input({"type": "http.disconnect"})
        await stream.io.wait(5)
        later = Stream(execution.pk, key)
        later_status = await later.open()
        await later.io.send_input({"type": "http.disconnect"})
        await later.io.wait(5)
        return {
            "open": (feed_code, one_code, stream_status),
            "over": (over_code, refused_status, refused.headers.get(b"retry-after")),
            "body": refused_body,
            "others": (theirs_code, again_code, later_status),
        }

    outcome = asyncio.run(scenario())
    assert outcome["open"] == (0, 0, 200)
    assert outcome["over"][:2] == (4429, 429)
    assert outcome["over"][2] is not None
    assert outcome["body"]["error"]["code"] == "rate_limited"
    assert outcome["body"]["error"]["details"]["maximum"] == CAP
    assert outcome["others"] == (0, 0, 200)


def test_a_users_sockets_are_capped_across_their_tabs(tenant_a: Tenant) -> None:
    alice, bob = _session(tenant_a, "alice"), _session(tenant_a, "bob")

    async def scenario() -> tuple[list[int], int, int]:
        sockets = [await _socket("/ws/executions/", alice) for _ in range(CAP + 1)]
        bobs, bob_code = await _socket("/ws/executions/", bob)
        await sockets[0][0].disconnect()
        _, after_one_closed = await _socket("/ws/executions/", alice)
        for ws, code in [*sockets[1:], (bobs, bob_code)]:
            if code == 0:
                await ws.disconnect()
        return [code for _, code in sockets], bob_code, after_one_closed

    codes, bob_code, after_one_closed = asyncio.run(scenario())
    assert codes == [0] * CAP + [4429]
    assert bob_code == 0
    assert after_one_closed == 0


def test_a_refused_handshake_holds_nothing(tenant_a: Tenant) -> None:
    key = api_key_create(tenant=tenant_a, scope="read")[1]

    async def scenario() -> list[int]:
        codes = []
        for _ in range(CAP + 2):  # refused for another reason: none of these count
            _, code = await _socket(f"/ws/executions/exec_nope/?token={key}")
            codes.append(code)
        held = [await _socket(f"/ws/executions/?token={key}") for _ in range(CAP)]
        for ws, _ in held:
            await ws.disconnect()
        return codes + [code for _, code in held]

    assert asyncio.run(scenario()) == [4404] * (CAP + 2) + [0] * CAP


def _redis_url(settings: Any) -> str:
    url = settings.REDIS_URL or "redis://127.0.0.1:6379/7"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"needs Redis ({url})")
    return str(url)


def test_the_cap_holds_across_web_processes_and_a_dead_ones_claims_lapse(settings: Any) -> None:
    """Two web processes of a scaled deployment: each with its own count, sharing Redis."""
    url = _redis_url(settings)
    first, second = SharedLiveConnections(url, lease=1.0), SharedLiveConnections(url, lease=1.0)
    who = f"key:test-{uuid.uuid4().hex}"

    async def scenario() -> dict[str, Any]:
        held = [await first.claim(who), await second.claim(who), await first.claim(who)]
        over = [await second.claim(who), await first.claim(who)]
        await second.release(held[1])
        after_release = await second.claim(who)
        # Renewed, the claims outlive their lease.
        await asyncio.sleep(0.6)
        await asyncio.to_thread(first.renew)
        await asyncio.to_thread(second.renew)
        await asyncio.sleep(0.6)
        still_full = await second.claim(who)
        # The first process dies: it renews nothing more, and its claims lapse.
        first._held.clear()
        await asyncio.sleep(1.2)
        await asyncio.to_thread(second.renew)
        room = [await second.claim(who), await second.claim(who)]
        second._held.clear()
        await asyncio.to_thread(second.client.delete, second.namespace + who)
        return {"held": held, "over": over, "after": after_release, "full": still_full, "room": room}

    outcome = asyncio.run(scenario())
    assert all(token is not None for token in outcome["held"])
    assert outcome["over"] == [None, None]
    assert outcome["after"] is not None
    assert outcome["full"] is None
    assert all(token is not None for token in outcome["room"])
