"""The client's parts that a live server seldom shows: the SSE decoder, error answers that are
not the contract's body (a proxy's page), the stream's gap filling, its waits on 429 and its
giving up; against httpx's mock transport, no server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from enact_client import (  # isort: skip  (client/ is put on the path by conftest)
    AsyncClient,
    Client,
    ConnectionFailed,
    EnactError,
    NotFound,
    RateLimited,
    ServerBusy,
    ServerError,
)
from enact_client import _core  # isort: skip
from enact_client._core import SSEDecoder  # isort: skip
from enact_client.errors import error_from_response  # isort: skip

EXEC = "exec_0000000000000000000000000a"


def _event(seq: int, kind: str = "data-step-end") -> dict[str, Any]:
    return {
        "id": f"evt_{seq}", "seq": seq, "type": kind, "execution_id": EXEC, "step_id": None,
        "timestamp": "2026-01-01T00:00:00Z", "data": {"n": seq},
    }  # fmt: skip


def _frame(seq: int, kind: str = "data-step-end") -> bytes:
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps(_event(seq, kind))}\n\n".encode()


class Cut(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that breaks off after its chunks, as a reset connection does."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        raise httpx.ReadError("Connection reset by peer")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        raise httpx.ReadError("Connection reset by peer")


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    monkeypatch.setattr("enact_client._sync.time.sleep", waits.append)
    return waits


def test_the_decoder_follows_the_event_stream_format() -> None:
    decoder = SSEDecoder()
    lines = ["retry: 2500", ": a comment", "id: 7", "event: x", "data: one", "data:two", "", "data: lone", ""]
    messages = [m for m in (decoder.feed(line) for line in lines) if m is not None]
    assert [(m.id, m.event, m.data) for m in messages] == [("7", "x", "one\ntwo"), ("7", "message", "lone")]
    assert decoder.retry_ms == 2500
    # A frame without data, or cut off before its blank line, is never given out.
    decoder = SSEDecoder()
    assert [decoder.feed(line) for line in ["id: 8", "event: y", ""]] == [None, None, None]
    assert [decoder.feed(line) for line in ["id: 9", "event: y", 'data: {"seq": 9}']] == [None, None, None]


@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "code", "retry_after"),
    [
        (404, {"error": {"code": "not_found", "message": "no", "details": {}}}, {}, NotFound, "not_found", None),
        (429, {"error": {"code": "server_busy", "message": "busy", "details": {}}}, {"Retry-After": "7"},
         ServerBusy, "server_busy", 7.0),
        (429, {"error": {"code": "rate_limited", "message": "slow", "details": {"retry_after": 3}}}, {},
         RateLimited, "rate_limited", 3.0),
        (502, "<html>Bad Gateway</html>", {}, ServerError, "server_error", None),
        (418, {"error": {"code": "teapot", "message": "short and stout", "details": {}}}, {}, EnactError, "teapot",
         None),
    ],
)  # fmt: skip
def test_errors_by_code_or_by_status(
    status: int, body: Any, headers: dict[str, str], cls: type[EnactError], code: str, retry_after: float | None
) -> None:
    content = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
    error = error_from_response(httpx.Response(status, content=content, headers=headers))
    assert type(error) is cls
    assert (error.status, error.code) == (status, code)
    if retry_after is not None:
        assert isinstance(error, RateLimited | ServerBusy)
        assert error.retry_after == retry_after
    if isinstance(body, dict):
        assert error.body == body
        assert error.message == body["error"]["message"]


def test_ids_never_change_the_endpoint_and_the_url_may_name_the_api() -> None:
    assert _core.execution_path("../tenant") == "executions/..%2Ftenant"
    assert _core.execution_path("..") == "executions/%2E%2E"
    assert _core.execution_path("a?b#c", "/events") == "executions/a%3Fb%23c/events"
    assert _core.api_base("http://h:8000/api/v1/") == _core.api_base("http://h:8000") == "http://h:8000/api/v1/"


def _client(handler: Any) -> Client:
    return Client("http://enact.test", "key", transport=httpx.MockTransport(handler))


def test_a_gap_in_the_stream_is_filled_from_the_log(slept: list[float]) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            body = _frame(1) + _frame(3) + _frame(4, "data-execution-end")
            return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
        assert request.url.params["after"] == "1"
        return httpx.Response(200, json={"results": [_event(2), _event(3)], "next": None})

    with _client(handler) as client:
        assert [e["seq"] for e in client.stream(EXEC)] == [1, 2, 3, 4]


def test_a_busy_server_is_waited_out_and_a_cut_resumed_after_the_last_whole_event(slept: list[float]) -> None:
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("last-event-id"))
        if len(asked) == 1:
            return httpx.Response(200, stream=Cut(b"retry: 500\n\n", _frame(1), _frame(2)[:20]))
        if len(asked) == 2:
            body = {"error": {"code": "server_busy", "message": "busy", "details": {"retry_after": 4}}}
            return httpx.Response(429, json=body, headers={"Retry-After": "4"})
        if len(asked) == 3:
            return httpx.Response(200, content=_frame(2))  # ends cleanly before the terminal event
        return httpx.Response(200, content=_frame(2) + _frame(3, "data-execution-failed") + _frame(4))

    with _client(handler) as client:
        events = list(client.stream(EXEC))
    assert [e["seq"] for e in events] == [1, 2, 3]  # 2 once; nothing after the terminal event
    assert asked == [None, "1", "1", "2"]
    # At once after the cut; Retry-After for the busy answer; the server's retry after a clean end.
    assert slept == [4.0, 0.5]


def test_the_stream_gives_up_after_failures_in_a_row_and_never_retries_a_404(slept: list[float]) -> None:
    calls = 0

    def refused(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        raise httpx.ConnectError("Connection refused")

    # A server never reached (a wrong address): at once, no retrying.
    with _client(refused) as client, pytest.raises(ConnectionFailed) as unreached:
        list(client.stream(EXEC))
    assert (calls, slept) == (1, [])
    assert (unreached.value.status, unreached.value.code) == (0, "connection_failed")

    # A server that answered, then went away: retried, with growing waits, then given up.
    calls = 0

    def gone(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(200, stream=Cut(_frame(1)))
        raise httpx.ConnectError("Connection refused")

    with _client(gone) as client:
        given: list[int] = []
        with pytest.raises(ConnectionFailed):
            given.extend(e["seq"] for e in client.stream(EXEC))
    assert given == [1]
    assert calls == 1 + _core.MAX_FAILURES
    assert slept == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]

    calls = 0

    def missing(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "no", "details": {}}})

    with _client(missing) as client, pytest.raises(NotFound):
        list(client.stream(EXEC))
    assert calls == 1


def test_a_stream_with_nothing_left_ends_at_once() -> None:
    with _client(lambda request: httpx.Response(204)) as client:
        assert list(client.stream(EXEC, after=9)) == []
    with pytest.raises(ValueError, match="after"):
        list(Client("http://enact.test").stream(EXEC, after=-1))


def test_the_async_stream_resumes_and_fills_gaps_too(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def no_wait(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("enact_client._async.asyncio.sleep", no_wait)
    asked: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, json={"results": [_event(3)], "next": None})
        asked.append(request.headers.get("last-event-id"))
        if len(asked) == 1:
            return httpx.Response(200, stream=Cut(_frame(1), _frame(2)[:30]))
        return httpx.Response(200, content=_frame(2) + _frame(4, "data-execution-end"))

    async def scenario() -> list[int]:
        async with AsyncClient("http://enact.test", "key", transport=httpx.MockTransport(handler)) as client:
            return [e["seq"] async for e in client.stream(EXEC)]

    assert asyncio.run(scenario()) == [1, 2, 3, 4]
    assert asked == [None, "1"]
    assert waits == []
