"""The chat client against a real scripted OpenAI-compatible server, and the offline demo model."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from executions.blueprints.llm_client import (
    ChatCancelled,
    ChatError,
    ChatResult,
    ChatUsage,
    DemoProvider,
    OpenAICompatibleProvider,
    ToolCall,
)
from executions.kernel.cancellation import CancellationToken
from tests.blueprints.openai_server import OpenAIServer, error, malformed_stream, text_stream, tool_call_stream

KEY = "sk-test-7f3a9c-very-secret"
HELLO = [{"role": "user", "content": "Say hello"}]
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look something up.",
        "parameters": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}, "exact": {"type": "boolean"}},
        },
    },
}


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as running:
        yield running


class Deltas:
    """An ``on_delta`` that records, and tells other threads when the first delta came."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.first = threading.Event()

    def __call__(self, text: str) -> None:
        self.seen.append(text)
        self.first.set()


def chat(provider: Any, messages: list[dict[str, Any]] = HELLO, **kwargs: Any) -> ChatResult:
    kwargs.setdefault("tools", None)
    kwargs.setdefault("on_delta", Deltas())
    kwargs.setdefault("cancellation", None)
    result: ChatResult = provider.stream_chat(model="gpt-test", messages=messages, **kwargs)
    return result


def openai(server: OpenAIServer, **kwargs: Any) -> OpenAICompatibleProvider:
    kwargs.setdefault("api_key", KEY)
    return OpenAICompatibleProvider(base_url=server.url, **kwargs)


def raised(provider: OpenAICompatibleProvider, **kwargs: Any) -> ChatError:
    with pytest.raises(ChatError) as info:
        chat(provider, **kwargs)
    return info.value


def cancel_on_first_delta(token: CancellationToken, deltas: Deltas) -> list[float]:
    """Cancel from another thread once the first delta arrives; returns [when it cancelled]."""
    cancelled_at: list[float] = []

    def cancel() -> None:
        if deltas.first.wait(5):
            cancelled_at.append(time.monotonic())
            token.cancel("stopped by the user")

    threading.Thread(target=cancel, daemon=True).start()
    return cancelled_at


# --- the OpenAI-compatible client ----------------------------------------------------------------


def test_text_streams_its_deltas_in_order_with_the_servers_usage(server: OpenAIServer) -> None:
    server.script(text_stream(["Hel", "lo", ", wor", "ld"], usage=(12, 4)))
    deltas = Deltas()
    provider = OpenAICompatibleProvider(base_url=server.url + "/", api_key=KEY)
    result = chat(provider, on_delta=deltas, temperature=0.2, max_tokens=50)
    assert deltas.seen == ["Hel", "lo", ", wor", "ld"]
    assert result == ChatResult("Hello, world", (), ChatUsage(12, 4), "stop", "test-model")
    [request] = server.requests
    assert request.path == "/v1/chat/completions"
    assert request.body == {
        "model": "gpt-test",
        "messages": HELLO,
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "max_tokens": 50,
    }


def test_usage_is_estimated_when_the_server_sends_none(server: OpenAIServer) -> None:
    server.script(text_stream(["Hello", " there!"]))  # 12 characters out
    result = chat(openai(server), [{"role": "user", "content": "x" * 17}])  # 17 characters in
    assert result.usage == ChatUsage(input_tokens=5, output_tokens=3)
    assert "temperature" not in server.requests[0].body
    assert "tools" not in server.requests[0].body


def test_a_streamed_tool_call_is_reassembled_from_its_fragments(server: OpenAIServer) -> None:
    server.script(tool_call_stream(call_id="call_1", name="lookup", argument_parts=['{"que', 'ry": "ref', 'unds"}']))
    deltas = Deltas()
    result = chat(openai(server), tools=[LOOKUP], on_delta=deltas)
    assert result.tool_calls == (ToolCall(id="call_1", name="lookup", arguments='{"query": "refunds"}'),)
    assert (result.text, result.finish_reason, deltas.seen) == ("", "tool_calls", [])
    assert server.requests[0].body["tools"] == [LOOKUP]


def test_a_rate_limit_is_retryable_with_its_retry_after_and_the_next_call_succeeds(server: OpenAIServer) -> None:
    server.script(error(429, "Rate limit reached for gpt-test", retry_after="2"), text_stream(["ok"], usage=(3, 1)))
    provider = openai(server)
    exc = raised(provider)
    assert (exc.status, exc.retryable, exc.retry_after_s) == (429, True, 2.0)
    assert "Rate limit reached for gpt-test" in exc.message
    assert chat(provider).text == "ok"
    assert len(server.requests) == 2


def test_a_server_error_is_retryable(server: OpenAIServer) -> None:
    server.script(error(500, "The server had an error"))
    exc = raised(openai(server))
    assert (exc.status, exc.retryable, exc.retry_after_s) == (500, True, None)


def test_a_bad_request_is_not_retryable_and_carries_the_servers_message(server: OpenAIServer) -> None:
    server.script(error(400, "'messages' must not be empty"))
    exc = raised(openai(server))
    assert (exc.status, exc.retryable) == (400, False)
    assert "'messages' must not be empty" in str(exc)


def test_the_key_is_sent_as_a_bearer_token_and_never_shown_in_an_error(server: OpenAIServer) -> None:
    server.script(error(401, f"Incorrect API key provided: {KEY}."))
    exc = raised(openai(server))
    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert exc.status == 401
    assert not exc.retryable
    assert "Incorrect API key provided" in exc.message
    with socket.socket() as spare:  # a port nobody listens on
        spare.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{spare.getsockname()[1]}/v1"
    refused = raised(OpenAICompatibleProvider(base_url=closed, api_key=KEY))
    assert refused.retryable
    assert refused.status is None
    provider = openai(server)
    for shown in (exc, refused, exc.__cause__, exc.__context__, refused.__cause__, refused.__context__, provider):
        assert KEY not in str(shown)
        assert KEY not in repr(shown)


def test_no_key_sends_no_authorization(server: OpenAIServer) -> None:
    server.script(text_stream(["hi"]))
    chat(openai(server, api_key=None))
    assert "authorization" not in server.requests[0].headers


def test_cancelling_a_slow_stream_stops_it_at_once_and_closes_the_connection(server: OpenAIServer) -> None:
    server.script(text_stream(["first", " second", " third"], delay_s=5))
    token, deltas = CancellationToken(), Deltas()
    cancelled_at = cancel_on_first_delta(token, deltas)
    with pytest.raises(ChatCancelled, match="stopped by the user"):
        chat(openai(server), on_delta=deltas, cancellation=token)
    assert time.monotonic() - cancelled_at[0] < 0.5
    assert deltas.seen == ["first"]
    assert server.client_gone.wait(2), "the server should see the client hang up"


def test_cancelling_while_the_server_has_not_answered_yet(server: OpenAIServer) -> None:
    server.script(dataclasses.replace(text_stream(["late"]), headers_delay_s=5))
    token = CancellationToken()
    timer = threading.Timer(0.2, token.cancel, args=("deadline",))
    timer.start()
    started = time.monotonic()
    with pytest.raises(ChatCancelled, match="deadline"):
        chat(openai(server), cancellation=token)
    assert time.monotonic() - started < 0.7
    assert server.client_gone.wait(2)


def test_a_cancelled_token_sends_nothing(server: OpenAIServer) -> None:
    token = CancellationToken()
    token.cancel("too late")
    with pytest.raises(ChatCancelled, match="too late"):
        chat(openai(server), cancellation=token)
    assert server.requests == []


def test_a_malformed_stream_is_not_retryable(server: OpenAIServer) -> None:
    server.script(malformed_stream())
    exc = raised(openai(server))
    assert not exc.retryable
    assert "malformed" in exc.message


def test_a_read_timeout_is_retryable(server: OpenAIServer) -> None:
    server.script(text_stream(["a", "b"], delay_s=2))
    exc = raised(openai(server, timeout_s=0.3))
    assert exc.retryable
    assert "timed out" in exc.message


# --- the demo model --------------------------------------------------------------------------------


def test_the_demo_model_answers_deterministically_in_several_deltas() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Summarize: red fox"}]
    first, second = Deltas(), Deltas()
    one = chat(DemoProvider(delay_s=0), messages, on_delta=first)
    two = chat(DemoProvider(delay_s=0), messages, on_delta=second)
    assert one == two
    assert first.seen == second.seen
    assert one.text == '[demo model] You said: "Summarize: red fox" (3 words, 18 characters).'
    assert "".join(first.seen) == one.text
    assert len(first.seen) > 1
    assert (one.finish_reason, one.tool_calls, one.model) == ("stop", (), "gpt-test")
    assert one.usage.input_tokens >= 1
    assert one.usage.output_tokens == -(-len(one.text) // 4)


def test_the_demo_model_calls_the_first_tool_then_answers_from_its_result() -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Can I get a refund?"}]
    deltas = Deltas()
    asked = chat(DemoProvider(delay_s=0), messages, tools=[LOOKUP], on_delta=deltas)
    [call] = asked.tool_calls
    assert (call.name, asked.finish_reason, asked.text, deltas.seen) == ("lookup", "tool_calls", "", [])
    assert json.loads(call.arguments) == {"query": "Can I get a refund?", "limit": 1, "exact": True}
    messages += [
        {"role": "assistant", "content": "", "tool_calls": [{"id": call.id, "type": "function", "function": {}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "Refunds are paid within 14 days."},
    ]
    answered = chat(DemoProvider(delay_s=0), messages, tools=[LOOKUP])
    assert answered.text == '[demo model] The tool returned: "Refunds are paid within 14 days."'
    assert (answered.tool_calls, answered.finish_reason) == ((), "stop")


def test_the_demo_model_stops_when_cancelled() -> None:
    token, deltas = CancellationToken(), Deltas()
    cancelled_at = cancel_on_first_delta(token, deltas)
    with pytest.raises(ChatCancelled, match="stopped by the user"):
        chat(DemoProvider(delay_s=5), on_delta=deltas, cancellation=token)
    assert time.monotonic() - cancelled_at[0] < 0.5
    assert len(deltas.seen) == 1
    with pytest.raises(ChatCancelled):
        chat(DemoProvider(), on_delta=deltas, cancellation=token)
    assert len(deltas.seen) == 1
