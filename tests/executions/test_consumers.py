"""The websockets, through the project's ASGI application: an execution's socket (stored events,
live ones, the end, controls) and the tenant's feed. Workers run on threads of this process and
commit through their own connections; events cross by the relay, or by Redis when it is set."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from enact_platform.asgi import application
from executions.live import relay as relay_module
from executions.live.groups import created_message, event_message, execution_group, tenant_group
from executions.models import Execution
from executions.services.controls import execution_cancel
from executions.services.submit import execution_submit
from tenants.models import Membership, Tenant
from tenants.services import api_key_create, membership_set

from ..conftest import cancel_on_this_thread, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_channel_layer")]


@pytest.fixture
def writer(tenant_a: Tenant) -> str:
    return api_key_create(tenant=tenant_a, scope="write")[1]


@pytest.fixture
def reader(tenant_a: Tenant) -> str:
    return api_key_create(tenant=tenant_a, scope="read")[1]


def socket(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=headers or [])


async def frames_until_end(ws: WebsocketCommunicator, timeout: float = 20) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []

    async def read() -> None:
        while not frames or frames[-1]["type"] != "end":
            frames.append(await ws.receive_json_from(timeout))

    await asyncio.wait_for(read(), timeout)
    return frames


def _seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [f["event"]["seq"] for f in frames if f["type"] == "event"]


def test_a_finished_execution_replays_then_ends_and_the_socket_stays_open(
    tenant_a: Tenant, writer: str, inline_worker: Any
) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 2})
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).is_terminal)

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
        ws = socket(f"/ws/executions/{execution.pk}/?token={writer}")
        connected, _ = await ws.connect()
        assert connected
        frames = await frames_until_end(ws)
        await ws.send_json_to({"type": "ping"})
        pong = await ws.receive_json_from(5)
        await ws.disconnect()
        later = socket(f"/ws/executions/{execution.pk}/?token={writer}&after=4")
        await later.connect()
        rest = await frames_until_end(later)
        await later.disconnect()
        return frames, pong, rest

    frames, pong, rest = asyncio.run(scenario())
    seqs = _seqs(frames)
    assert seqs == list(range(1, len(seqs) + 1))
    assert frames[-2]["event"]["type"] == "data-execution-end"
    assert frames[-1] == {"type": "end"}
    assert pong == {"type": "pong"}
    assert _seqs(rest) == list(range(5, seqs[-1] + 1))


def test_live_events_arrive_and_a_reconnect_misses_nothing(tenant_a: Tenant, reader: str, inline_worker: Any) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 4, "seconds": 0.2})

    async def scenario() -> list[dict[str, Any]]:
        ws = socket(f"/ws/executions/{execution.pk}/", [(b"authorization", f"Bearer {reader}".encode())])
        assert (await ws.connect())[0]
        first = [await ws.receive_json_from(10) for _ in range(3)]
        await ws.disconnect()
        await asyncio.sleep(0.5)
        last = first[-1]["event"]["seq"]
        again = socket(
            f"/ws/executions/{execution.pk}/?after={last}", [(b"authorization", f"Bearer {reader}".encode())]
        )
        assert (await again.connect())[0]
        rest = await frames_until_end(again)
        await again.disconnect()
        return first + rest

    frames = asyncio.run(scenario())
    seqs = _seqs(frames)
    assert seqs == list(range(1, len(seqs) + 1))
    assert seqs[-1] == Execution.objects.get(pk=execution.pk).events.count()
    assert frames[-1] == {"type": "end"}


def test_cancel_over_the_socket(tenant_a: Tenant, writer: str, inline_worker: Any) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 1, "seconds": 60})
    assert wait_until(lambda: execution.steps.filter(state="running").exists())

    async def scenario() -> list[dict[str, Any]]:
        ws = socket(f"/ws/executions/{execution.pk}/?token={writer}")
        assert (await ws.connect())[0]
        await ws.send_json_to({"type": "cancel", "reason": "from the socket"})
        frames = await frames_until_end(ws, timeout=10)
        await ws.disconnect()
        return frames

    frames = asyncio.run(scenario())
    control = next(f for f in frames if f["type"] == "control")
    assert control["action"] == "cancel"
    assert control["execution"]["id"] == execution.pk
    cancelled = [
        f["event"] for f in frames if f["type"] == "event" and f["event"]["type"] == "data-execution-cancelled"
    ]
    assert cancelled[0]["data"]["reason"] == "from the socket"
    assert Execution.objects.get(pk=execution.pk).state == "cancelled"


def test_a_read_key_cannot_control_and_bad_frames_get_errors(tenant_a: Tenant, reader: str) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})

    async def scenario() -> list[dict[str, Any]]:
        ws = socket(f"/ws/executions/{execution.pk}/?token={reader}")
        assert (await ws.connect())[0]
        replies = []
        for frame in ('{"type": "cancel"}', "not json", "[1, 2]", '{"no": "type"}', '{"type": "dance"}'):
            await ws.send_to(text_data=frame)
            replies.append(await ws.receive_json_from(5))
        await ws.send_to(bytes_data=b"\x00\x01")
        replies.append(await ws.receive_json_from(5))
        await ws.send_json_to({"type": "ping"})
        replies.append(await ws.receive_json_from(5))  # still open
        await ws.disconnect()
        return replies

    replies = asyncio.run(scenario())
    assert replies[0]["type"] == "error"
    assert replies[0]["error"]["code"] == "forbidden"
    assert [r["error"]["code"] for r in replies[1:6]] == ["invalid_input"] * 5
    assert replies[4]["error"]["details"] == {"type": "dance"}
    assert replies[-1] == {"type": "pong"}
    assert Execution.objects.get(pk=execution.pk).state == "queued"


def _close_code(path: str, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    async def scenario() -> int:
        ws = socket(path, headers)
        connected, _ = await ws.connect()
        assert connected  # accepted, so that the close can say why
        message = await ws.receive_output(5)
        assert message["type"] == "websocket.close"
        return int(message["code"])

    return asyncio.run(scenario())


def test_the_handshake_refuses_strangers(tenant_a: Tenant, tenant_b: Tenant, writer: str) -> None:
    theirs, _ = execution_submit(tenant=tenant_b, blueprint="demo.chain", input={"n": 1})
    mine, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    assert _close_code(f"/ws/executions/{mine.pk}/") == 4401
    assert _close_code(f"/ws/executions/{mine.pk}/?token=enact_bad_key") == 4401
    assert _close_code("/ws/executions/") == 4401
    assert _close_code(f"/ws/executions/{theirs.pk}/?token={writer}") == 4404
    assert _close_code(f"/ws/executions/exec_nope/?token={writer}") == 4404
    assert _close_code(f"/ws/executions/{mine.pk}/?token={writer}&after=x") == 4400
    # A seq the log does not have yet: the client would wait for ever (as the stream refuses it).
    assert _close_code(f"/ws/executions/{mine.pk}/?token={writer}&after=5") == 4400


def test_a_client_that_has_every_event_of_an_ended_execution_gets_the_end_at_once(
    tenant_a: Tenant, writer: str
) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    execution_cancel(tenant=tenant_a, execution_id=execution.pk)
    last = Execution.objects.get(pk=execution.pk).events.count()

    async def scenario() -> tuple[dict[str, Any], bool]:
        ws = socket(f"/ws/executions/{execution.pk}/?token={writer}&after={last}")
        assert (await ws.connect())[0]
        end = await ws.receive_json_from(5)
        await ws.send_json_to({"type": "ping"})  # the socket stays open, for controls
        pong = await ws.receive_json_from(5) == {"type": "pong"}
        await ws.disconnect()
        return end, pong

    assert asyncio.run(scenario()) == ({"type": "end"}, True)


def test_a_socket_whose_handler_fails_gives_back_what_it_held(
    tenant_a: Tenant, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failing handler ends the consumer without a disconnect: its count, its resync task and
    its channel go all the same."""
    from channels.layers import get_channel_layer

    from executions.live.sockets import ExecutionSocket
    from executions.ops.metrics import gauges

    made: list[ExecutionSocket] = []
    real_opened = ExecutionSocket.opened

    async def opened(self: ExecutionSocket) -> None:
        made.append(self)
        await real_opened(self)

    async def broken(self: ExecutionSocket, message: dict[str, Any]) -> None:
        raise RuntimeError("a handler failed")

    monkeypatch.setattr(ExecutionSocket, "opened", opened)
    monkeypatch.setattr(ExecutionSocket, "_deliver", broken)
    execution = Execution.objects.create(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})

    async def scenario() -> tuple[int, int, bool, bool]:
        before = gauges.websocket_connections
        ws = socket(f"/ws/executions/{execution.pk}/?token={reader}")
        assert (await ws.connect())[0]
        during = gauges.websocket_connections
        message = {"type": "execution.event", "seq": 1, "event_type": "data-execution-start", "json": "{}"}
        await get_channel_layer().group_send(execution_group(execution.pk), message)
        with pytest.raises(RuntimeError, match="a handler failed"):
            await ws.wait(5)
        consumer = made[0]
        await asyncio.sleep(0)
        return (
            during - before,
            gauges.websocket_connections - before,
            consumer._resync_task.done(),
            (consumer.let_go_of),
        )

    assert asyncio.run(scenario()) == (1, 0, True, True)


def _session_headers(tenant: Tenant, role: str, origin: str = "http://localhost") -> list[tuple[bytes, bytes]]:
    user = User.objects.create_user(f"{role}-user")
    membership_set(tenant=tenant, user=user, role=role)
    client = Client()
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    return [(b"cookie", cookie.encode()), (b"host", b"localhost"), (b"origin", origin.encode())]


def test_a_viewers_session_watches_but_cannot_control(tenant_a: Tenant) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    headers = _session_headers(tenant_a, Membership.Role.VIEWER)

    async def scenario() -> dict[str, Any]:
        ws = socket(f"/ws/executions/{execution.pk}/", headers)
        assert (await ws.connect())[0]
        await ws.send_json_to({"type": "pause"})
        reply = await ws.receive_json_from(5)
        await ws.disconnect()
        return reply

    assert asyncio.run(scenario())["error"]["code"] == "forbidden"
    assert Execution.objects.get(pk=execution.pk).state == "queued"


def test_a_session_from_another_site_is_refused(tenant_a: Tenant) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    headers = _session_headers(tenant_a, Membership.Role.ADMIN, origin="https://evil.example")
    assert _close_code(f"/ws/executions/{execution.pk}/", headers) == 4401


def test_the_tenant_feed_shows_new_executions_and_state_changes(
    tenant_a: Tenant, tenant_b: Tenant, writer: str, inline_worker: Any
) -> None:
    async def scenario() -> list[dict[str, Any]]:
        ws = socket(f"/ws/executions/?token={writer}")
        assert (await ws.connect())[0]
        await asyncio.sleep(0.2)  # the relay's first poll sets its clock
        await asyncio.to_thread(_submit_both, tenant_a, tenant_b)
        summaries: list[dict[str, Any]] = []
        while not summaries or summaries[-1]["state"] != "completed":
            frame = await ws.receive_json_from(15)
            assert frame["type"] == "execution"
            summaries.append(frame["execution"])
        await ws.disconnect()
        return summaries

    summaries = asyncio.run(scenario())
    mine = Execution.objects.get(tenant=tenant_a)
    assert {s["id"] for s in summaries} == {mine.pk}  # nothing of tenant B
    states = [s["state"] for s in summaries]
    assert states[-1] == "completed"
    assert "running" in states  # the summary read when the start event came, mid-run
    assert set(summaries[-1]) >= {"id", "blueprint", "state", "created_at", "last_seq"}
    assert "input" not in summaries[-1]


def _submit_both(tenant_a: Tenant, tenant_b: Tenant) -> None:
    from django.db import connection

    try:
        execution_submit(tenant=tenant_b, blueprint="demo.chain", input={"n": 1})
        execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 2, "seconds": 0.3})
    finally:
        connection.close()


def test_frames_are_json(tenant_a: Tenant, writer: str) -> None:
    """Every frame the server sends parses as JSON with a type (clients rely on it)."""
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    execution_cancel(tenant=tenant_a, execution_id=execution.pk)

    async def scenario() -> list[str]:
        ws = socket(f"/ws/executions/{execution.pk}/?token={writer}")
        await ws.connect()
        raw = [await ws.receive_from(5) for _ in range(2)]
        await ws.disconnect()
        return raw

    raw = asyncio.run(scenario())
    assert [json.loads(r)["type"] for r in raw] == ["event", "end"]


def test_a_frame_with_text_no_database_stores_gets_an_error_and_changes_nothing(tenant_a: Tenant, writer: str) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 1, "seconds": 1})

    async def scenario() -> dict[str, Any]:
        ws = socket(f"/ws/executions/{execution.pk}/?token={writer}")
        assert (await ws.connect())[0]
        await ws.send_to(text_data='{"type": "cancel", "reason": "stop\\u0000now"}')
        answer = await ws.receive_json_from(5)
        await ws.disconnect()
        return answer

    answer = asyncio.run(scenario())
    assert (answer["type"], answer["error"]["code"]) == ("error", "invalid_input")
    assert "NUL" in answer["error"]["message"]
    execution.refresh_from_db()
    assert (execution.state, execution.cancel_requested_at) == ("queued", None)


def _cancel_and_read_back(execution: Execution) -> dict[str, Any]:
    """Cancel on a thread of its own (not the sync thread), and return the stored event."""
    from django.db import connection

    from executions.persistence.kernels import kernel_for
    from executions.serializers import EventSerializer

    try:
        kernel_for(execution).cancel_execution("test")
        return dict(EventSerializer(Execution.objects.get(pk=execution.pk).events.get(seq=1)).data)
    finally:
        connection.close()


def test_an_event_reaches_its_socket_while_the_sync_thread_is_busy(tenant_a: Tenant, reader: str) -> None:
    """Sync code (requests, database reads) runs on one thread; delivering an event must not
    wait for it, or a hundred sockets queue behind each other and behind every request."""
    import time

    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer

    execution = Execution.objects.create(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})

    async def scenario() -> tuple[dict[str, Any], float, bool]:
        ws = socket(f"/ws/executions/{execution.pk}/?token={reader}")
        assert (await ws.connect())[0]
        await ws.send_json_to({"type": "ping"})
        assert await ws.receive_json_from(5) == {"type": "pong"}  # its catch-up read is done
        busy = asyncio.ensure_future(sync_to_async(time.sleep)(3))
        await asyncio.sleep(0.1)  # the sync thread sleeps now
        wire = await asyncio.to_thread(_cancel_and_read_back, execution)
        sent = time.monotonic()
        # Sent as a publisher sends it (with Redis one did already: the socket ignores a repeat).
        await get_channel_layer().group_send(execution_group(execution.pk), event_message(wire))
        frame = await ws.receive_json_from(2)
        took, still_busy = time.monotonic() - sent, not busy.done()
        await busy
        await ws.disconnect()
        return frame, took, still_busy

    frame, took, still_busy = asyncio.run(scenario())
    assert frame["type"] == "event"
    assert (frame["event"]["seq"], frame["event"]["type"]) == (1, "data-execution-cancelled")
    assert still_busy
    assert took < 1


def test_sockets_find_in_the_database_what_never_came_live(
    tenant_a: Tenant, reader: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A web process away from Redis for a moment hears nothing published meanwhile: a quiet
    execution socket looks at the log, and the feed reads its unfinished executions again."""
    from channels.layers import get_channel_layer
    from django.conf import settings

    monkeypatch.setattr(settings, "ENACT_SOCKET_RESYNC_SECONDS", 0.2)
    monkeypatch.setattr(settings, "ENACT_PUBLISH_DIRECT", False)
    monkeypatch.setattr(relay_module, "ensure_relay", lambda: None)  # nothing is delivered live
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
        feed = socket(f"/ws/executions/?token={reader}")
        assert (await feed.connect())[0]
        ws = socket(f"/ws/executions/{execution.pk}/?token={reader}")
        assert (await ws.connect())[0]
        # The new execution is announced live, as a publisher does; what follows is not.
        await get_channel_layer().group_send(tenant_group(tenant_a.pk), created_message(execution.pk))
        announced = await feed.receive_json_from(5)
        await asyncio.to_thread(cancel_on_this_thread, tenant_a, execution.pk)
        frames = await frames_until_end(ws, timeout=5)
        changed = await feed.receive_json_from(5)
        await ws.disconnect()
        await feed.disconnect()
        return announced, frames, changed

    announced, frames, changed = asyncio.run(scenario())
    assert (announced["execution"]["id"], announced["execution"]["state"]) == (execution.pk, "queued")
    assert [f["event"]["type"] for f in frames if f["type"] == "event"] == ["data-execution-cancelled"]
    assert (changed["execution"]["id"], changed["execution"]["state"]) == (execution.pk, "cancelled")


def test_quiet_sockets_on_one_execution_share_one_read_of_the_log(
    tenant_a: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    from executions import selectors
    from executions.live.sockets import StoredHeads
    from executions.persistence.kernels import kernel_for

    execution = Execution.objects.create(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    kernel_for(execution).cancel_execution("test")
    reads: list[str] = []
    real = selectors.last_event_seq

    def counted(*, execution_id: str) -> int:
        reads.append(execution_id)
        return real(execution_id=execution_id)

    monkeypatch.setattr(selectors, "last_event_seq", counted)

    async def scenario() -> tuple[list[int], int]:
        heads = StoredHeads.here()
        together = await asyncio.gather(*(heads.last_seq(execution.pk, max_age=10) for _ in range(50)))
        return list(together), await heads.last_seq(execution.pk, max_age=10)

    together, later = asyncio.run(scenario())
    assert together == [1] * 50
    assert later == 1
    assert reads == [execution.pk]
