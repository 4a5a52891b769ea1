"""A session rides along with any page's websocket, so only a page of the same origin (scheme,
host and port) may open one with it: another local port is another site."""

from __future__ import annotations

import asyncio

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from enact_platform.asgi import application
from executions.models import Execution
from executions.services.submit import execution_submit
from tenants.models import Membership, Tenant
from tenants.services import membership_set

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_channel_layer")]


def _cookie(tenant: Tenant) -> bytes:
    user = User.objects.create_user("admin-user")
    membership_set(tenant=tenant, user=user, role=Membership.Role.ADMIN)
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def _outcome(path: str, headers: list[tuple[bytes, bytes]], scheme: str = "ws") -> int | str:
    """The close code of a refused socket, or what a cancel over an accepted one answered."""

    async def scenario() -> int | str:
        ws = WebsocketCommunicator(application, path, headers=headers)
        ws.scope["scheme"] = scheme
        connected, _ = await ws.connect()
        assert connected
        if path == "/ws/executions/":
            # The feed says nothing until an execution changes: a refusal closes at once.
            if await ws.receive_nothing(1):
                await ws.disconnect()
                return "accepted"
            message = await ws.receive_output(1)
            if message["type"] == "websocket.send":
                await ws.disconnect()
                return "accepted"
            return int(message["code"])
        await ws.send_json_to({"type": "cancel", "reason": "from a page"})
        message = await ws.receive_output(5)
        while message["type"] != "websocket.close":
            if '"type": "control"' in message.get("text", ""):
                await ws.disconnect()
                return "accepted"
            message = await ws.receive_output(5)
        return int(message["code"])

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    ("host", "origin", "scheme"),
    [
        ("localhost:8000", "http://localhost:8001", "ws"),  # another local port
        ("127.0.0.1:8000", "http://127.0.0.1:9000", "ws"),
        ("localhost:8000", "http://localhost", "ws"),  # port 80 is not 8000
        ("localhost", "http://localhost:8000", "ws"),
        ("localhost:8000", "https://localhost:8000", "ws"),  # another scheme
        ("localhost:443", "http://localhost:443", "wss"),
        ("localhost:8000", "http://127.0.0.1:8000", "ws"),  # another host
        ("localhost:8000", "null", "ws"),
    ],
)
def test_a_session_from_another_origin_is_refused(tenant_a: Tenant, host: str, origin: str, scheme: str) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 1, "seconds": 1})
    headers = [(b"cookie", _cookie(tenant_a)), (b"host", host.encode()), (b"origin", origin.encode())]
    assert _outcome("/ws/executions/", headers, scheme) == 4401
    assert _outcome(f"/ws/executions/{execution.pk}/", headers, scheme) == 4401
    assert Execution.objects.get(pk=execution.pk).state == "queued"


@pytest.mark.parametrize(
    ("host", "origin", "scheme"),
    [
        ("localhost:8000", "http://localhost:8000", "ws"),
        ("LOCALHOST:8000", "http://localhost:8000", "ws"),
        ("localhost", "http://localhost:80", "ws"),
        ("localhost", "https://localhost", "wss"),
        ("127.0.0.1:8000", "http://127.0.0.1:8000", "ws"),
    ],
)
def test_a_session_from_the_same_origin_is_accepted(tenant_a: Tenant, host: str, origin: str, scheme: str) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 1, "seconds": 1})
    headers = [(b"cookie", _cookie(tenant_a)), (b"host", host.encode()), (b"origin", origin.encode())]
    assert _outcome("/ws/executions/", headers, scheme) == "accepted"
    assert _outcome(f"/ws/executions/{execution.pk}/", headers, scheme) == "accepted"
    assert Execution.objects.get(pk=execution.pk).state == "cancelled"


def test_a_session_behind_a_tls_proxy_is_same_origin_by_the_proxy_header(tenant_a: Tenant, settings: object) -> None:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")  # type: ignore[attr-defined]
    headers = [(b"cookie", _cookie(tenant_a)), (b"host", b"localhost"), (b"origin", b"https://localhost")]
    assert _outcome("/ws/executions/", [*headers, (b"x-forwarded-proto", b"https")]) == "accepted"
    assert _outcome("/ws/executions/", headers) == 4401
