"""A real, scripted OpenAI-compatible HTTP server for tests, on 127.0.0.1 and a free port.

    with OpenAIServer() as server:
        server.script(error(429, "slow down", retry_after="2"), text_stream(["Hel", "lo"]))
        provider = OpenAICompatibleProvider(base_url=server.url, api_key="sk-test")

Each POST to ``/v1/chat/completions`` is recorded in ``server.requests`` and answered by the next
queued script. Streams are sent chunked, one server-sent event a chunk, ``delay_s`` apart; a slow
stream notices a client that went away (``server.client_gone``) or a server stopping, and ends.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

MODEL = "test-model"


@dataclass(frozen=True)
class Script:
    """One scripted response: an SSE stream when ``events`` is set, else ``body`` as is."""

    status: int = 200
    events: tuple[str, ...] = ()  # each event's data, sent as "data: <it>\n\n"
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0  # between events
    headers_delay_s: float = 0.0  # before the status line, as a server still thinking


@dataclass(frozen=True)
class Recorded:
    path: str
    headers: dict[str, str]  # names lower-cased
    body: Any


def _chunk(delta: dict[str, Any] | None = None, finish_reason: str | None = None) -> str:
    choice = {"index": 0, "delta": delta or {}, "finish_reason": finish_reason}
    return json.dumps({"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": MODEL, "choices": [choice]})


def _usage_chunk(usage: tuple[int, int]) -> str:
    prompt, completion = usage
    counts = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return json.dumps({"id": "chatcmpl-test", "model": MODEL, "choices": [], "usage": counts})


def text_stream(chunks: list[str], *, usage: tuple[int, int] | None = None, delay_s: float = 0.0) -> Script:
    """A streamed text reply in the given chunks, then a usage chunk when ``usage`` is (prompt, completion)."""
    # The role rides on the first chunk, so a slow stream's first text is not held back by the delay.
    events = [
        _chunk({"role": "assistant", "content": text} if not n else {"content": text}) for n, text in enumerate(chunks)
    ]
    events.append(_chunk(finish_reason="stop"))
    if usage is not None:
        events.append(_usage_chunk(usage))
    return Script(events=(*events, "[DONE]"), delay_s=delay_s)


def tool_call_stream(
    *, call_id: str, name: str, argument_parts: list[str], usage: tuple[int, int] | None = None
) -> Script:
    """One tool call as OpenAI streams it: id and name first, then the arguments in fragments."""
    first = {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
    events = [_chunk({"role": "assistant", "content": None, "tool_calls": [first]})]
    events += [_chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]}) for part in argument_parts]
    events.append(_chunk(finish_reason="tool_calls"))
    if usage is not None:
        events.append(_usage_chunk(usage))
    return Script(events=(*events, "[DONE]"))


def error(status: int, message: str, *, retry_after: str | None = None) -> Script:
    """An HTTP error with an OpenAI-style body, and a Retry-After header when given."""
    body = json.dumps({"error": {"message": message, "type": "test_error", "code": None}}).encode()
    headers = [("Content-Type", "application/json")]
    if retry_after is not None:
        headers.append(("Retry-After", retry_after))
    return Script(status=status, body=body, headers=tuple(headers))


def malformed_stream() -> Script:
    """A stream whose second event is cut-off JSON."""
    return Script(events=(_chunk({"content": "Hi"}), '{"choices": [{"delta": {"content": "th', "[DONE]"))


@dataclass
class _State:
    scripts: deque[Script] = field(default_factory=deque)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)
    client_gone: threading.Event = field(default_factory=threading.Event)
    streams_ended: int = 0


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close (never abandoned): every wait in them is bounded.
    daemon_threads = False
    block_on_close = True

    def __init__(self, state: _State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5  # a client that connects and sends nothing cannot hold a thread
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None  # keep test output quiet

    def do_POST(self) -> None:
        state = self.server.state
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        routed = self.path == "/v1/chat/completions"
        with state.lock:
            state.requests.append(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            script = state.scripts.popleft() if routed and state.scripts else None
        self.close_connection = True
        if script is None:
            script = error(404 if not routed else 500, f"the test server has no scripted response for {self.path}")
        if script.headers_delay_s and not self._pause(script.headers_delay_s):
            return
        if script.events:
            self._stream(script)
        else:
            self._plain(script)

    def _plain(self, script: Script) -> None:
        self.send_response(script.status)
        for name, value in script.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(script.body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(script.body)

    def _stream(self, script: Script) -> None:
        self.send_response(script.status)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for number, data in enumerate(script.events):
                if number and script.delay_s and not self._pause(script.delay_s):
                    return
                self._write_chunk(f"data: {data}\n\n".encode())
            self._write_chunk(b"")
        except OSError:  # broken pipe or reset: the client went away between our checks
            self.server.state.client_gone.set()
        finally:
            with self.server.state.lock:
                self.server.state.streams_ended += 1

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _pause(self, seconds: float) -> bool:
        """Wait, watching the client: False (and ``client_gone`` set) if it hung up, or the server stops."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.server.state.stopping.is_set():
                return False
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable and self._client_hung_up():
                self.server.state.client_gone.set()
                return False
        return True

    def _client_hung_up(self) -> bool:
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class OpenAIServer:
    """The server, run in a daemon thread; use it as a context manager (or ``start``/``stop``)."""

    def __init__(self) -> None:
        self._state = _State()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the server first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def requests(self) -> list[Recorded]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def client_gone(self) -> threading.Event:
        """Set when a client hung up on a response still being sent."""
        return self._state.client_gone

    @property
    def streams_ended(self) -> int:
        with self._state.lock:
            return self._state.streams_ended

    def script(self, *scripts: Script) -> None:
        with self._state.lock:
            self._state.scripts.extend(scripts)

    def start(self) -> OpenAIServer:
        self._server = _Server(self._state)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._state.stopping.set()
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
