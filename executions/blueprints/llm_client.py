"""Chat completions, streamed: a client for any OpenAI-compatible server, and an offline demo model.

Plain Python and httpx, no Django, so the ``llm`` node kind and its tests can use it anywhere. The
client never retries: a ``ChatError`` says whether a retry could help (``retryable``, and how long
the server asked to wait, ``retry_after_s``), and the kernel's retry policy decides.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from executions.blueprints.tools import pinned

if TYPE_CHECKING:
    from executions.kernel.cancellation import CancellationToken

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text with OpenAI-style tokenizers
ERROR_TEXT_LIMIT = 500


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # the raw JSON text the model produced; the caller parses (and may reject) it


@dataclass(frozen=True)
class ChatUsage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class ChatResult:
    text: str
    tool_calls: tuple[ToolCall, ...]
    usage: ChatUsage
    finish_reason: str | None
    model: str


class ChatError(Exception):
    """The model call failed. ``retryable`` is True for rate limits, server errors, timeouts and
    broken connections; ``retry_after_s`` is the server's Retry-After, when it sent one."""

    def __init__(
        self, message: str, *, status: int | None = None, retryable: bool = False, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.retryable = retryable
        self.retry_after_s = retry_after_s

    def __repr__(self) -> str:
        return f"ChatError({self.message!r}, status={self.status!r}, retryable={self.retryable!r})"


class ChatCancelled(Exception):
    """The call was cancelled through its token; the message is the token's reason."""


class ChatProvider(Protocol):
    def stream_chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        on_delta: Callable[[str], None],
        cancellation: CancellationToken | None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatResult: ...


# --- token estimates ---------------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """About four characters a token, at least one: used only when the server reports no usage."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def estimate_usage(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, result: ChatResult) -> ChatUsage:
    sent = [content_text(m.get("content")) for m in messages]
    sent += [str(c.get("function", {}).get("arguments", "")) for m in messages for c in m.get("tool_calls") or []]
    if tools:
        sent.append(json.dumps(tools))
    produced = result.text + "".join(c.name + c.arguments for c in result.tool_calls)
    return ChatUsage(input_tokens=estimate_tokens("".join(sent)), output_tokens=estimate_tokens(produced))


# --- the OpenAI-compatible client ----------------------------------------------------------------


class OpenAICompatibleProvider:
    """Streams ``POST {base_url}/chat/completions`` from any OpenAI-compatible server.

    Text deltas reach ``on_delta`` as they arrive; streamed tool calls are reassembled. Usage is the
    server's (``stream_options.include_usage``); a server that sends none gets an estimate of about
    four characters a token (at least one) for the prompt and for the reply. Cancelling the token
    shuts the connection at once, even mid-read, and the call raises ``ChatCancelled``.
    """

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout_s: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        address: str | None = None,
    ) -> None:
        # ``address``: where to connect, checked by the tool policy (``tools.connect_address``).
        self._address = address
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key or None
        self._timeout = httpx.Timeout(timeout_s)
        self._transport = transport

    def __repr__(self) -> str:
        return f"OpenAICompatibleProvider(base_url={self._base_url!r})"

    def stream_chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        on_delta: Callable[[str], None],
        cancellation: CancellationToken | None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatResult:
        _raise_if_cancelled(cancellation)
        body = _request_body(model, messages, tools, temperature, max_tokens)
        breaker = _StreamBreaker()
        unsubscribe = cancellation.on_cancel(breaker.abort) if cancellation is not None else _nothing
        try:
            reply = self._exchange(body, on_delta, breaker)
        except (ChatError, httpx.HTTPError, httpx.StreamError):  # StreamClosed: an abort closed the response
            if breaker.reason is not None:  # the failure is our own abort, not the server's
                raise ChatCancelled(breaker.reason) from None
            raise
        finally:
            unsubscribe()
        return reply.result(messages, tools)

    def _exchange(self, body: dict[str, Any], on_delta: Callable[[str], None], breaker: _StreamBreaker) -> _Reply:
        headers = {"Accept": "text/event-stream"}
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        transport = _Borrowed(self._transport) if self._transport is not None else None
        try:
            # trust_env off: no proxy or .netrc of the worker's environment applies to tenants' calls.
            with httpx.Client(timeout=self._timeout, transport=transport, trust_env=False) as client:
                url, headers, extensions = pinned(f"{self._base_url}/chat/completions", headers, self._address)
                extensions["trace"] = breaker.trace
                with client.stream("POST", url, json=body, headers=headers, extensions=extensions) as response:
                    breaker.watch(response)
                    _raise_for_status(response, self._redact)
                    return _read_stream(response, str(body["model"]), on_delta, breaker)
        except httpx.TimeoutException as exc:
            raise ChatError(self._redact(f"the model server timed out ({type(exc).__name__})"), retryable=True) from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise ChatError(self._redact(f"bad model server URL {self._base_url!r}: {exc}")) from exc
        except httpx.TransportError as exc:
            message = f"could not talk to the model server at {self._base_url}: {exc or type(exc).__name__}"
            raise ChatError(self._redact(message), retryable=True) from exc

    def _redact(self, text: str) -> str:
        # Servers echo a rejected key back ("Incorrect API key provided: sk-..."); it must not travel on.
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


def _nothing() -> None:
    return None


def _raise_if_cancelled(cancellation: CancellationToken | None) -> None:
    if cancellation is not None and cancellation.is_cancelled:
        raise ChatCancelled(cancellation.reason or "cancelled")


def _request_body(
    model: str,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    temperature: float | None,
    max_tokens: int | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if tools:
        body["tools"] = tools
    if temperature is not None:
        body["temperature"] = temperature
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


class _Borrowed(httpx.BaseTransport):
    """A transport the caller owns: used for the call, never closed by it."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._inner.handle_request(request)

    def close(self) -> None:
        return None


class _StreamBreaker:
    """Breaks the call's connection from the cancelling thread.

    Closing a socket does not wake a thread blocked reading it, but shutting it down does: the read
    ends at once and the reading thread sees ``reason`` set. The sockets are collected through
    httpcore's ``trace`` extension as they connect, so an abort works before the response too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: list[Any] = []
        self._response: httpx.Response | None = None
        self.reason: str | None = None

    def trace(self, event: str, info: dict[str, Any]) -> None:
        stream = info.get("return_value")
        if event.endswith(".complete") and hasattr(stream, "get_extra_info"):
            self._add(stream)

    def watch(self, response: httpx.Response) -> None:
        with self._lock:
            self._response = response
        stream = response.extensions.get("network_stream")
        if stream is not None:  # a pooled connection from a caller's transport was never traced
            self._add(stream)

    def _add(self, stream: Any) -> None:
        with self._lock:
            self._streams.append(stream)
            aborted = self.reason is not None
        if aborted:
            _shut(stream)

    def abort(self, reason: str) -> None:
        with self._lock:
            self.reason = reason or "cancelled"
            streams, response = list(self._streams), self._response
        for stream in streams:
            _shut(stream)
        if not streams and response is not None:  # a transport without sockets: closing is all we can do
            with contextlib.suppress(Exception):  # the reading thread may be mid-close; its own close runs
                response.close()


def _shut(stream: Any) -> None:
    sock = stream.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        # The plain socket method even for TLS, so the reading thread's SSL object is left alone;
        # OSError: already closed, or never connected.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


def _raise_for_status(response: httpx.Response, redact: Callable[[str], str]) -> None:
    status = response.status_code
    if status < 400:
        return
    detail = _error_detail(response, _read_at_most(response, ERROR_BODY_LIMIT))
    retryable = status == 429 or status >= 500
    message = redact(f"the model server answered HTTP {status}: {detail}")
    raise ChatError(message, status=status, retryable=retryable, retry_after_s=_retry_after(response.headers))


ERROR_BODY_LIMIT = 64 * 1024


def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """An error body, but no more than ``limit`` bytes of it: a server may send anything."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk[: limit - len(body)]
        if len(body) >= limit:
            break
    return bytes(body)


def _error_detail(response: httpx.Response, body: bytes) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    text = body.decode(errors="replace").strip()
    return text[:ERROR_TEXT_LIMIT] if text else response.reason_phrase or "no detail"


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait: OpenAI's ``retry-after-ms``, else ``Retry-After`` in seconds or as an HTTP date."""
    if "retry-after-ms" in headers:
        try:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


# --- reading the stream ----------------------------------------------------------------------------


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class _Reply:
    model: str
    text: list[str] = field(default_factory=list)
    calls: dict[int, _PartialCall] = field(default_factory=dict)
    usage: ChatUsage | None = None
    finish_reason: str | None = None
    chunks: int = 0
    done: bool = False

    def result(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> ChatResult:
        calls = tuple(
            ToolCall(id=c.id or f"call_{index}", name=c.name, arguments="".join(c.arguments))
            for index, c in sorted(self.calls.items())
        )
        result = ChatResult("".join(self.text), calls, ChatUsage(0, 0), self.finish_reason, self.model)
        return _with_usage(result, self.usage or estimate_usage(messages, tools, result))


def _read_stream(
    response: httpx.Response, model: str, on_delta: Callable[[str], None], breaker: _StreamBreaker
) -> _Reply:
    reply = _Reply(model=model)
    for data in _sse_data(response.iter_lines()):
        if breaker.reason is not None:
            raise ChatCancelled(breaker.reason)
        if data.strip() == "[DONE]":
            reply.done = True
            break
        _apply_chunk(reply, _parse_chunk(data), on_delta)
    if breaker.reason is not None:
        raise ChatCancelled(breaker.reason)
    if not reply.done and reply.finish_reason is None:
        if reply.chunks == 0:
            raise ChatError("malformed stream from the model server: no server-sent events in the reply")
        raise ChatError("the model server's stream ended before the reply was complete", retryable=True)
    return reply


def _sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The data of each server-sent event; multi-line data joined, other fields and comments skipped."""
    pending: list[str] = []
    for line in lines:
        if not line:
            if pending:
                yield "\n".join(pending)
                pending = []
        elif line.startswith("data:"):
            value = line[5:]
            pending.append(value[1:] if value.startswith(" ") else value)
    if pending:
        yield "\n".join(pending)


def _parse_chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        raise ChatError(f"malformed stream from the model server: not JSON: {data[:100]!r}") from None
    if not isinstance(chunk, dict):
        raise ChatError(f"malformed stream from the model server: not a JSON object: {data[:100]!r}")
    error = chunk.get("error")
    if error is not None:  # some servers report a failure mid-stream, after the 200
        detail = error.get("message") if isinstance(error, dict) else error
        raise ChatError(f"the model server failed mid-stream: {detail}", retryable=True)
    return chunk


def _apply_chunk(reply: _Reply, chunk: dict[str, Any], on_delta: Callable[[str], None]) -> None:
    reply.chunks += 1
    if isinstance(chunk.get("model"), str) and chunk["model"]:
        reply.model = chunk["model"]
    if isinstance(chunk.get("usage"), dict):
        usage = chunk["usage"]
        reply.usage = ChatUsage(_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")))
    choices = chunk.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise ChatError("malformed stream from the model server: 'choices' is not a list of objects")
    for choice in choices[:1]:  # n is never set, so there is one choice
        if choice.get("finish_reason"):
            reply.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise ChatError("malformed stream from the model server: 'delta' is not an object")
        text = delta.get("content")
        if isinstance(text, str) and text:
            reply.text.append(text)
            on_delta(text)
        for piece in delta.get("tool_calls") or []:
            _apply_tool_piece(reply, piece)


def _apply_tool_piece(reply: _Reply, piece: Any) -> None:
    """Tool calls arrive in pieces keyed by ``index``: id and name first, then argument fragments."""
    if not isinstance(piece, dict):
        raise ChatError("malformed stream from the model server: a tool call piece is not an object")
    index = piece.get("index", len(reply.calls))
    if not isinstance(index, int):
        raise ChatError("malformed stream from the model server: a tool call's index is not a number")
    call = reply.calls.setdefault(index, _PartialCall())
    function = piece.get("function") or {}
    if isinstance(piece.get("id"), str) and not call.id:
        call.id = piece["id"]
    if isinstance(function.get("name"), str) and not call.name:
        call.name = function["name"]
    if isinstance(function.get("arguments"), str):
        call.arguments.append(function["arguments"])


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _with_usage(result: ChatResult, usage: ChatUsage) -> ChatResult:
    return ChatResult(result.text, result.tool_calls, usage, result.finish_reason, result.model)


# --- the demo model --------------------------------------------------------------------------------

DEMO_QUOTE_LIMIT = 200
DEMO_WORDS_PER_DELTA = 3


class DemoProvider:
    """An offline model for demos and tests: deterministic, no network, clearly labelled.

    - Without tools (or once the conversation holds a ``role: "tool"`` message), it answers the
      last user message in text: ``[demo model] You said: "<the message>" (N words, M characters).``,
      or, after a tool ran, ``[demo model] The tool returned: "<the start of the last tool result>"``.
      The text streams a few words at a time, ``delay_s`` apart (0.02 s by default).
    - With tools and no tool result yet, it asks for exactly one call of the first tool, with
      arguments built from the tool's JSON schema: string properties get the last user message,
      numbers and integers 1, booleans true, arrays [] and objects {}. Its finish_reason is
      ``"tool_calls"`` and its text is empty.

    Usage is estimated at about four characters a token. Cancelling the token stops the stream
    between deltas and raises ``ChatCancelled``.
    """

    def __init__(self, *, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s

    def stream_chat(
        self,
        *,
        model: str,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        on_delta: Callable[[str], None],
        cancellation: CancellationToken | None,
        temperature: float | None = None,
        max_tokens: int | None = None,
    ) -> ChatResult:
        _raise_if_cancelled(cancellation)
        has_tool_result = any(m.get("role") == "tool" for m in messages)
        if tools and not has_tool_result:
            call = _demo_tool_call(tools[0], _last_user_text(messages))
            result = ChatResult("", (call,), ChatUsage(0, 0), "tool_calls", model)
        else:
            text = _demo_answer(messages)
            self._stream(text, on_delta, cancellation)
            result = ChatResult(text, (), ChatUsage(0, 0), "stop", model)
        return _with_usage(result, estimate_usage(messages, tools, result))

    def _stream(self, text: str, on_delta: Callable[[str], None], cancellation: CancellationToken | None) -> None:
        words = re.findall(r"\s*\S+", text)
        for start in range(0, len(words), DEMO_WORDS_PER_DELTA):
            if start and self._wait(cancellation):
                raise ChatCancelled((cancellation.reason if cancellation else None) or "cancelled")
            on_delta("".join(words[start : start + DEMO_WORDS_PER_DELTA]))
        _raise_if_cancelled(cancellation)

    def _wait(self, cancellation: CancellationToken | None) -> bool:
        """Pause between deltas; True if cancelled meanwhile."""
        if cancellation is not None:
            return cancellation.wait(self.delay_s)
        time.sleep(self.delay_s)
        return False


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def _quote(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DEMO_QUOTE_LIMIT else text[: DEMO_QUOTE_LIMIT - 1] + "…"


def _demo_answer(messages: list[dict[str, Any]]) -> str:
    tool_results = [m for m in messages if m.get("role") == "tool"]
    if tool_results:
        return f'[demo model] The tool returned: "{_quote(content_text(tool_results[-1].get("content")))}"'
    said = _last_user_text(messages)
    if not said:
        return "[demo model] There is no user message to answer."
    words = len(said.split())
    return f'[demo model] You said: "{_quote(said)}" ({words} words, {len(said)} characters).'


DEMO_VALUES: dict[str, Any] = {"number": 1, "integer": 1, "boolean": True, "array": [], "object": {}}


def _demo_tool_call(tool: dict[str, Any], user_text: str) -> ToolCall:
    function = tool.get("function", tool)
    schema = function.get("parameters") or {}
    arguments: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        if isinstance(kind, list):  # ["string", "null"] and the like
            kind = next((k for k in kind if k != "null"), None)
        if kind == "string":
            arguments[name] = user_text
        elif kind in DEMO_VALUES:
            arguments[name] = DEMO_VALUES[kind]
    return ToolCall(id="call_demo_1", name=str(function.get("name", "tool")), arguments=json.dumps(arguments))
