"""The llm node against a real OpenAI-compatible server on 127.0.0.1: streaming, usage, tool
calls, a rate limit then success, and a slow stream that a cancel stops."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from executions.blueprints.functions import blueprint_function
from executions.models import Execution, ExecutionEvent, ModelPrice, Step
from executions.runtime.run import execution_run
from executions.services.blueprints import blueprint_save
from executions.services.controls import execution_cancel
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import tenant_secret_set, tenant_set_limits

from ..addresses import connections_to_local, resolving
from ..conftest import wait_until
from .openai_server import OpenAIServer, error, text_stream, tool_call_stream

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "sk-test-abcdef0123456789"


@pytest.fixture
def chat() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


def agent(tenant: Tenant, url: str, **config: Any) -> None:
    tenant_secret_set(tenant=tenant, name="MODEL_KEY", value=KEY)
    host = url.split("/")[2]
    tenant_set_limits(tenant=tenant, changes={"tool_allowed_domains": [host]})  # the model server is a host too
    node = {
        "provider": "openai",
        "base_url": url,
        "model": "test-model",
        "api_key_secret": "MODEL_KEY",
        "system": "Be brief.",
        "prompt": "{{ input.q }}",
        **config,
    }
    blueprint_save(
        tenant=tenant,
        name="ask",
        definition={
            "entry": "ask",
            "nodes": {"ask": {"kind": "llm", "config": node}},
            "edges": [{"from": "ask", "to": "end"}],
        },
    )


def run(tenant: Tenant, input: Any) -> Execution:
    execution, _ = execution_submit(tenant=tenant, blueprint="ask", input=input)
    execution_run(execution.pk)
    execution.refresh_from_db()
    return execution


def of_type(execution: Execution, type_: str) -> list[dict[str, Any]]:
    return [e.data for e in ExecutionEvent.objects.filter(execution=execution, type=type_).order_by("seq")]


def test_a_streamed_reply_with_its_usage_and_cost(tenant_a: Tenant, chat: OpenAIServer, enqueued: list[str]) -> None:
    ModelPrice.objects.create(
        model="test-model", input_usd_per_million=Decimal("2"), output_usd_per_million=Decimal("8")
    )
    agent(tenant_a, chat.url, temperature=0.2, max_tokens=50)
    chat.script(text_stream(["Hel", "lo, ", "Ann."], usage=(12, 3)))
    execution = run(tenant_a, {"q": "Greet Ann"})

    assert execution.state == "completed", execution.error
    assert execution.output["ask"]["text"] == "Hello, Ann."
    assert [d["delta"] for d in of_type(execution, "data-text-delta")] == ["Hel", "lo, ", "Ann."]
    assert (execution.usage["input_tokens"], execution.usage["output_tokens"]) == (12, 3)
    assert execution.usage["cost_usd"] == pytest.approx((12 * 2 + 3 * 8) / 1_000_000)
    sent = chat.requests[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Greet Ann"},
    ]
    assert (sent.body["stream"], sent.body["temperature"], sent.body["max_tokens"]) == (True, 0.2, 50)
    stored = json.dumps(list(ExecutionEvent.objects.filter(execution=execution).values("data")), default=str)
    assert KEY not in stored
    assert KEY not in json.dumps(list(Step.objects.filter(execution=execution).values("output", "error")), default=str)


def test_a_model_server_named_under_a_wildcard_is_called_only_at_a_public_address(
    tenant_a: Tenant, chat: OpenAIServer, enqueued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = chat.url.split("/")[2].rsplit(":", 1)[1]
    agent(tenant_a, f"http://models.example.com:{port}/v1")
    tenant_set_limits(tenant=tenant_a, changes={"tool_allowed_domains": ["*.example.com"]})
    resolving(monkeypatch, "models.example.com", ["127.0.0.1"])  # the platform's own machine
    chat.script(text_stream(["never"], usage=(1, 1)))
    refused = run(tenant_a, {"q": "hi"})
    assert refused.state == "failed"
    assert refused.error["category"] == "policy_violation"
    assert "models.example.com is a private or loopback address" in refused.error["message"]
    assert chat.requests == []

    # A public answer is called, at that address, with the name as its Host.
    resolving(monkeypatch, "models.example.com", ["93.184.216.34"])
    connected = connections_to_local(monkeypatch)
    done = run(tenant_a, {"q": "hi"})
    assert done.state == "completed", done.error
    assert connected == ["93.184.216.34"]
    assert chat.requests[0].headers["host"] == f"models.example.com:{port}"


def test_a_tool_call_in_fragments_runs_the_tool_and_goes_back_to_the_model(
    tenant_a: Tenant, chat: OpenAIServer, enqueued: list[str]
) -> None:
    agent(tenant_a, chat.url, tools=[{"name": "lookup", "function": "demo.lookup"}])
    chat.script(
        tool_call_stream(
            call_id="call_1", name="lookup", argument_parts=['{"que', 'ry": "ship', 'ping"}'], usage=(20, 5)
        ),
        text_stream(["Ships in 24h."], usage=(40, 4)),
    )
    execution = run(tenant_a, {"q": "When do you ship?"})

    assert execution.state == "completed", execution.error
    assert execution.output["ask"]["text"] == "Ships in 24h."
    assert of_type(execution, "data-tool-input-available")[0]["input"] == {"query": "shipping"}
    second = chat.requests[1].body["messages"]
    assert second[2]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"query": "shipping"}'}
    assert second[3]["role"] == "tool"
    assert second[3]["tool_call_id"] == "call_1"
    assert "Orders ship within 24 hours" in second[3]["content"]
    assert chat.requests[0].body["tools"][0]["function"]["name"] == "lookup"
    assert (execution.usage["input_tokens"], execution.usage["output_tokens"]) == (60, 9)


def test_a_rate_limit_is_retried_then_succeeds(tenant_a: Tenant, chat: OpenAIServer, enqueued: list[str]) -> None:
    agent(tenant_a, chat.url)
    chat.script(error(429, "slow down", retry_after="1"), text_stream(["ok"], usage=(5, 1)))
    execution = run(tenant_a, {"q": "hi"})

    assert execution.state == "completed", execution.error
    attempts = list(Step.objects.filter(execution=execution).order_by("position").values_list("state", "attempt"))
    assert attempts == [("failed", 1), ("completed", 2)]
    failure = Step.objects.filter(execution=execution, state="failed").get().error
    assert (failure["category"], failure["http_status"]) == ("llm", 429)
    assert "slow down" in failure["message"]
    assert len(chat.requests) == 2


def test_a_client_error_is_not_retried(tenant_a: Tenant, chat: OpenAIServer, enqueued: list[str]) -> None:
    agent(tenant_a, chat.url)
    chat.script(error(400, "model not found"))
    execution = run(tenant_a, {"q": "hi"})
    assert execution.state == "failed"
    assert execution.error["message"] == "llm 'ask': the model server answered HTTP 400: model not found"
    assert len(chat.requests) == 1


def test_cancel_stops_a_slow_stream_at_once(tenant_a: Tenant, chat: OpenAIServer, enqueued: list[str]) -> None:
    agent(tenant_a, chat.url)
    chat.script(text_stream([f"w{i} " for i in range(100)], delay_s=0.5))
    execution, _ = execution_submit(tenant=tenant_a, blueprint="ask", input={"q": "tell me a long story"})
    thread = threading.Thread(target=execution_run, args=(execution.pk,), daemon=True)
    thread.start()
    assert wait_until(lambda: ExecutionEvent.objects.filter(execution=execution, type="data-text-delta").exists())
    asked = time.monotonic()
    execution_cancel(tenant=tenant_a, execution_id=execution.pk, reason="enough")
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).state == "cancelled", timeout=5)
    assert time.monotonic() - asked < 1.0
    thread.join(5)
    assert not thread.is_alive()
    assert chat.client_gone.wait(5)  # the server saw the client go away mid-stream
    deltas = ExecutionEvent.objects.filter(execution=execution, type="data-text-delta").count()
    assert deltas < 10


def test_a_model_server_outside_the_tool_policy_is_refused(
    tenant_a: Tenant, chat: OpenAIServer, enqueued: list[str]
) -> None:
    agent(tenant_a, chat.url)
    tenant_set_limits(tenant=tenant_a, changes={"tool_allowed_domains": ["api.openai.com"]})
    execution = run(tenant_a, {"q": "hi"})
    assert execution.state == "failed"
    assert (
        execution.error["message"]
        == "llm 'ask': model server refused: host 127.0.0.1 is not in the tenant's allowed domains"
    )
    assert chat.requests == []


CALLS: list[Any] = []


@blueprint_function("tests.counted")
def _counted(value: Any, ctx: Any) -> Any:
    CALLS.append(value)
    return {"ok": True}


def test_a_retried_model_call_does_not_run_the_tools_again(
    tenant_a: Tenant, chat: OpenAIServer, enqueued: list[str]
) -> None:
    CALLS.clear()
    agent(tenant_a, chat.url, tools=[{"name": "act", "function": "tests.counted"}])
    chat.script(
        tool_call_stream(call_id="c1", name="act", argument_parts=['{"x": 1}']),
        error(503, "busy"),
        text_stream(["done"]),
    )
    execution = run(tenant_a, {"q": "act once"})
    assert execution.state == "completed", execution.error
    assert CALLS == [{"x": 1}]
    names = list(Step.objects.filter(execution=execution).order_by("position").values_list("state", "attempt"))
    assert names == [("completed", 1), ("completed", 1), ("failed", 1), ("completed", 2)]
