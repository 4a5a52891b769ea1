"""Websocket frames against real web processes, with a real client: a malformed frame gets an
error and the socket stays open; a frame over the size limit gets a close with 1009, which
reaches the client (daphne's default is to drop the connection without one)."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from .webservers import Server, web_processes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    with web_processes(tmp_path_factory.mktemp("frames")) as started:
        yield started


@pytest.fixture(params=["up", "daphne"])
def server(request: pytest.FixtureRequest, servers: dict[str, Server]) -> Server:
    return servers[request.param]


def submit(server: Server) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}/api/v1/executions",
        data=json.dumps({"blueprint": "demo.slow", "input": {"steps": 1, "seconds": 1}}).encode(),
        headers={"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["id"])


def _open(server: Server, path: str) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{server.port}{path}?token={server.key}", open_timeout=30, close_timeout=10)


def _next_json(ws: ClientConnection) -> dict[str, object]:
    return dict(json.loads(ws.recv(timeout=30)))


def _still_open(ws: ClientConnection) -> None:
    ws.send(json.dumps({"type": "ping"}))
    frame = _next_json(ws)
    while frame["type"] != "pong":
        frame = _next_json(ws)


@pytest.mark.parametrize("path", ["/ws/executions/", "/ws/executions/{id}/"])
def test_malformed_frames_get_an_error_and_the_socket_stays_open(server: Server, path: str) -> None:
    with _open(server, path.format(id=submit(server))) as ws:
        for frame in ["[" * 100_000, "{" * 100_000, '{"type": ' * 50_000, "not json", "[]", '{"type": 1}']:
            ws.send(frame)
            reply = _next_json(ws)
            while reply["type"] == "event":  # an execution socket sends its events first
                reply = _next_json(ws)
            assert reply["type"] == "error", reply
            assert reply["error"]["code"] == "invalid_input"  # type: ignore[index]
            _still_open(ws)


def _read_until_closed(ws: ClientConnection) -> None:
    while True:
        ws.recv(timeout=30)


@pytest.mark.parametrize("size", [1024 * 1024 + 1, 4 * 1024 * 1024])
def test_a_frame_over_the_limit_is_closed_with_1009(server: Server, size: int) -> None:
    with _open(server, f"/ws/executions/{submit(server)}/") as ws:
        _still_open(ws)
        ws.send('{"type": "ping", "pad": "' + "x" * size + '"}')
        with pytest.raises(ConnectionClosed) as closed:
            _read_until_closed(ws)
    assert closed.value.rcvd is not None, "the connection was dropped without a close frame"
    assert closed.value.rcvd.code == 1009


def test_a_frame_under_the_limit_is_read(server: Server) -> None:
    with _open(server, "/ws/executions/") as ws:
        ws.send('{"type": "ping", "pad": "' + "x" * (1024 * 1024 - 100) + '"}')
        assert _next_json(ws) == {"type": "pong"}
