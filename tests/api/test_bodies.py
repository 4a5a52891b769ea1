"""Request bodies against real web processes, started the two ways the platform starts them:
``manage.py up`` (the embedded default) and ``python -m daphne … enact_platform.asgi:application``
(a web process of the scaled deployment). The limit has to hold where the server reads the body:
daphne buffers a whole body before the application sees the request."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .webservers import Server, web_processes

pytestmark = pytest.mark.slow

LIMIT = 1024 * 1024  # ENACT_API_MAX_BODY_BYTES's default


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    with web_processes(tmp_path_factory.mktemp("bodies")) as started:
        yield started


@pytest.fixture(params=["up", "daphne"])
def server(request: pytest.FixtureRequest, servers: dict[str, Server]) -> Server:
    return servers[request.param]


def _head(server: Server, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(sock: socket.socket, already: bytes = b"", timeout: float = 60) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length (or ended by the server's close)."""
    data = already
    deadline = time.monotonic() + timeout
    sock.setblocking(True)
    sock.settimeout(timeout)
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {data!r}"
        data += chunk
        assert time.monotonic() < deadline
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    length = int(headers.get("content-length", "-1"))
    while length < 0 or len(body) < length:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body[: length if length >= 0 else None]


def _send_streaming(sock: socket.socket, blocks: Iterator[bytes]) -> bytes:
    """Send every block, unless the server answers first; what it answered so far."""
    answered = b""
    for block in blocks:
        view = memoryview(block)
        while view:
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    return answered
                answered += chunk
                if b"\r\n\r\n" in answered:
                    return answered
            if writable:
                try:
                    sent = sock.send(view[: 1 << 20])
                except (BrokenPipeError, ConnectionResetError):
                    return answered
                view = view[sent:]
    return answered


def _error(status: int, body: bytes) -> dict[str, Any]:
    parsed = json.loads(body)
    assert set(parsed) == {"error"}, parsed
    assert set(parsed["error"]) == {"code", "message", "details"}, parsed
    return parsed["error"]


def _warm(server: Server) -> None:
    """A few requests, so what the process loads on first use is loaded before RSS is read."""
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(_head(server, "/api/v1/executions", {"Content-Length": "2", "Connection": "close"}) + b"{}")
            assert _read_response(sock)[0] == 401


def test_a_300_mb_body_without_a_key_is_refused_from_content_length_and_never_held(server: Server) -> None:
    _warm(server)
    before = server.rss_kb()
    size = 300 * 1024 * 1024
    block = bytes(1 << 20)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            _head(server, "/api/v1/executions", {"Content-Type": "application/json", "Content-Length": str(size)})
        )
        answered = _send_streaming(sock, (block for _ in range(size // len(block))))
        status, headers, body = _read_response(sock, answered)
    grown_kb = server.rss_kb() - before
    assert status == 413, body[:300]
    assert headers["content-type"].startswith("application/json")
    error = _error(status, body)
    assert error["code"] == "payload_too_large"
    assert error["details"]["maximum"] == LIMIT
    assert grown_kb < 5 * 1024, f"the web process grew by {grown_kb} kB"


def _chunked(blocks: list[bytes]) -> Iterator[bytes]:
    for block in blocks:
        yield f"{len(block):x}\r\n".encode() + block + b"\r\n"
    yield b"0\r\n\r\n"


def _post_chunked(server: Server, path: str, blocks: list[bytes], headers: dict[str, str]) -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_head(server, path, {"Transfer-Encoding": "chunked", **headers}))
        answered = _send_streaming(sock, _chunked(blocks))
        status, _, body = _read_response(sock, answered)
    return status, body


def test_a_chunked_body_is_read(server: Server) -> None:
    submission = json.dumps({"blueprint": "demo.chain", "input": {"n": 1}}).encode()
    status, body = _post_chunked(
        server,
        "/api/v1/executions",
        [submission[:10], submission[10:]],
        {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"},
    )
    assert status == 201, body[:300]
    assert json.loads(body)["blueprint"] == "demo.chain"


def test_a_chunked_body_over_the_limit_is_refused_as_it_is_counted(server: Server) -> None:
    _warm(server)
    before = server.rss_kb()
    # A valid submission's start, then padding: 200 MB in chunks of 64 kB, no length announced.
    blocks = [b'{"blueprint": "demo.chain", "input": {"n": 1}, "metadata": {"pad": "'] + [b"x" * 65536] * 3200
    status, body = _post_chunked(
        server,
        "/api/v1/executions",
        blocks,
        {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"},
    )
    grown_kb = server.rss_kb() - before
    assert status == 413, body[:300]
    assert _error(status, body)["code"] == "payload_too_large"
    assert grown_kb < 5 * 1024, f"the web process grew by {grown_kb} kB"


def test_a_chunked_body_just_over_the_limit_is_refused_on_any_path(server: Server) -> None:
    status, body = _post_chunked(server, "/admin/login/", [b"a" * (LIMIT // 2), b"b" * (LIMIT // 2 + 1)], {})
    assert status == 413, body[:300]
    assert _error(status, body)["code"] == "payload_too_large"


def _at_the_limit() -> bytes:
    submission = json.dumps({"blueprint": "demo.chain", "input": {"n": 1}, "metadata": {"pad": ""}}).encode()
    padded = submission[:-3] + b"x" * (LIMIT - len(submission)) + submission[-3:]
    assert len(padded) == LIMIT
    return padded


def test_a_body_at_the_limit_is_read_chunked_or_not(server: Server) -> None:
    headers = {"Authorization": f"Bearer {server.key}", "Content-Type": "application/json"}
    body = _at_the_limit()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_head(server, "/api/v1/executions", {**headers, "Content-Length": str(LIMIT)}) + body)
        status, _, answer = _read_response(sock)
    assert status == 201, answer[:300]
    status, answer = _post_chunked(server, "/api/v1/executions", [body[: LIMIT // 3], body[LIMIT // 3 :]], headers)
    assert status == 201, answer[:300]
    assert json.loads(answer)["metadata"] == json.loads(body)["metadata"]


def test_expect_100_continue_over_the_limit_gets_the_413_instead(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_head(server, "/api/v1/executions", {"Content-Length": str(10 * LIMIT), "Expect": "100-continue"}))
        status, _, body = _read_response(sock)
    assert status == 413, body[:300]


def test_a_refused_client_that_goes_quiet_is_let_go_of(server: Server) -> None:
    """The connection of a refused body is kept only to let the 413 arrive, never for good."""
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(_head(server, "/api/v1/executions", {"Content-Length": str(10 * LIMIT)}) + b"{" * 1000)
        status, _, _ = _read_response(sock)
        assert status == 413
        started = time.monotonic()
        sock.settimeout(30)
        try:
            rest = sock.recv(65536)
        except ConnectionResetError:
            rest = b""
        waited = time.monotonic() - started
    assert rest == b""
    assert waited < 15
