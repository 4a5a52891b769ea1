"""Blueprints run by the worker, node kind by node kind, on the real database: success, failure and
the events each kind emits. HTTP tools call a real server on 127.0.0.1 started by the test."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from executions.blueprints.functions import blueprint_function
from executions.models import Execution, ExecutionEvent, ModelPrice, Step
from executions.persistence.kernels import kernel_for
from executions.runtime.run import execution_run
from executions.services.blueprints import blueprint_save, blueprints_install_demo
from executions.services.children import execution_child_ended, execution_spawn_child
from executions.services.controls import execution_cancel, execution_provide_input, execution_resume
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import tenant_secret_set, tenant_set_limits

from ..addresses import connections_to_local, resolving

pytestmark = pytest.mark.django_db(transaction=True)


def save(tenant: Tenant, name: str, nodes: dict[str, Any], edges: list[tuple[str, str]], **extra: Any) -> None:
    definition = {
        "entry": extra.pop("entry", next(iter(nodes))),
        "nodes": nodes,
        "edges": [{"from": a, "to": b} for a, b in edges],
        **extra,
    }
    blueprint_save(tenant=tenant, name=name, definition=definition)


def run(tenant: Tenant, name: str, input: Any = None, **kwargs: Any) -> Execution:
    execution, _ = execution_submit(tenant=tenant, blueprint=name, input={} if input is None else input, **kwargs)
    execution_run(execution.pk)
    execution.refresh_from_db()
    return execution


def resume(execution: Execution) -> Execution:
    execution_run(execution.pk)
    execution.refresh_from_db()
    return execution


def steps(execution: Execution) -> list[tuple[str, str]]:
    return list(Step.objects.filter(execution=execution).order_by("position").values_list("name", "state"))


def events(execution: Execution, type_: str) -> list[dict[str, Any]]:
    rows = ExecutionEvent.objects.filter(execution=execution, type=type_).order_by("seq")
    return [row.data for row in rows]


def gap_free(execution: Execution) -> bool:
    seqs = list(ExecutionEvent.objects.filter(execution=execution).order_by("seq").values_list("seq", flat=True))
    return seqs == list(range(1, len(seqs) + 1))


# --- function, router, template ------------------------------------------------------------------


def test_function_router_and_template(tenant_a: Tenant, enqueued: list[str]) -> None:
    save(
        tenant_a,
        "count",
        {
            "count": {
                "kind": "function",
                "config": {"function": "demo.word_count", "input": {"text": "{{ input.text }}"}},
            },
            "size": {
                "kind": "router",
                "config": {"cases": [{"when": "state.count.words > 3", "to": "long"}], "default": "short"},
            },
            "long": {"kind": "template", "config": {"template": "long: {{ state.count.words }} words"}},
            "short": {"kind": "template", "config": {"template": {"words": "{{ state.count.words }}", "short": True}}},
        },
        [("count", "size"), ("long", "end"), ("short", "end")],
    )
    long = run(tenant_a, "count", {"text": "one two three four five"})
    assert long.state == "completed"
    assert long.output["long"] == "long: 5 words"
    assert long.output["size"] == {"route": "long", "case": 0}
    assert steps(long) == [("count", "completed"), ("size", "completed"), ("long", "completed")]
    assert Step.objects.get(execution=long, name="count").output == {"words": 5}  # the node's own output
    short = run(tenant_a, "count", {"text": "hi"})
    assert short.output["short"] == {"words": 1, "short": True}
    assert gap_free(long)
    assert gap_free(short)


def test_an_expression_that_fails_at_run_time_fails_the_execution_clearly(
    tenant_a: Tenant, enqueued: list[str]
) -> None:
    save(
        tenant_a,
        "broken",
        {"t": {"kind": "template", "config": {"template": "{{ 1 / input.zero }}"}}},
        [("t", "end")],
    )
    execution = run(tenant_a, "broken", {"zero": 0})
    assert execution.state == "failed"
    assert execution.error["category"] == "validation"
    assert execution.error["message"].startswith("template 't': ")
    assert "zero" in execution.error["message"]


# --- wait -----------------------------------------------------------------------------------------


def test_wait_for_input_with_a_schema(tenant_a: Tenant, enqueued: list[str]) -> None:
    schema = {"type": "object", "properties": {"size": {"type": "integer"}}, "required": ["size"]}
    save(
        tenant_a,
        "ask",
        {
            "ask": {
                "kind": "wait",
                "config": {"mode": "input", "prompt": "Size for {{ input.who }}?", "schema": schema},
            },
            "done": {"kind": "template", "config": {"template": "{{ state.ask.size }}"}},
        },
        [("ask", "done"), ("done", "end")],
    )
    execution = run(tenant_a, "ask", {"who": "Ann"})
    assert (execution.state, execution.wait_reason) == ("waiting", "user_input")
    assert execution.wait_detail["prompt"] == "Size for Ann?"
    with pytest.raises(Exception, match=r"input\.size is required"):
        execution_provide_input(tenant=tenant_a, execution_id=execution.pk, input={})
    execution_provide_input(tenant=tenant_a, execution_id=execution.pk, input={"size": 3})
    execution = resume(execution)
    assert (execution.state, execution.output["done"]) == ("completed", 3)


def test_an_approval_that_is_denied_can_be_routed_on(tenant_a: Tenant, enqueued: list[str]) -> None:
    save(
        tenant_a,
        "gate",
        {
            "review": {"kind": "wait", "config": {"mode": "approval", "prompt": "Ship it?"}},
            "decide": {
                "kind": "router",
                "config": {"cases": [{"when": "state.review.approved", "to": "ship"}], "default": "drop"},
            },
            "ship": {"kind": "template", "config": {"template": "shipped"}},
            "drop": {"kind": "template", "config": {"template": "dropped: {{ state.review.note }}"}},
        },
        [("review", "decide"), ("ship", "end"), ("drop", "end")],
    )
    execution = run(tenant_a, "gate")
    assert (execution.state, execution.wait_reason) == ("waiting", "approval")
    execution_provide_input(tenant=tenant_a, execution_id=execution.pk, approve=False, input="too risky", actor="ann")
    execution = resume(execution)
    assert execution.output["drop"] == "dropped: too risky"
    assert execution.output["review"] == {"approved": False, "note": "too risky", "by": "ann"}


# --- map and subgraph -----------------------------------------------------------------------------


def test_map_runs_a_node_per_item_and_keeps_their_order(tenant_a: Tenant, enqueued: list[str]) -> None:
    save(
        tenant_a,
        "shout",
        {
            "each": {
                "kind": "map",
                "config": {
                    "items": "input.words",
                    "node": {"kind": "template", "config": {"template": "{{ upper(state.item) }}#{{ state.index }}"}},
                    "concurrency": 3,
                },
            }
        },
        [("each", "end")],
    )
    execution = run(tenant_a, "shout", {"words": ["a", "b", "c", "d", "e"]})
    assert execution.state == "completed"
    assert execution.output["each"] == ["A#0", "B#1", "C#2", "D#3", "E#4"]


def test_map_over_a_blueprint_and_a_subgraph_with_their_usage(tenant_a: Tenant, enqueued: list[str]) -> None:
    save(
        tenant_a,
        "summarize",
        {"s": {"kind": "llm", "config": {"provider": "demo", "model": "demo", "prompt": "Summarize: {{ input }}"}}},
        [("s", "end")],
        input_schema={"type": "string"},
    )
    save(
        tenant_a,
        "outer",
        {
            "each": {"kind": "map", "config": {"items": "input.texts", "blueprint": "summarize", "concurrency": 2}},
            "one": {"kind": "subgraph", "config": {"blueprint": "summarize", "input": "{{ input.texts[0] }}"}},
        },
        [("each", "one"), ("one", "end")],
    )
    execution = run(tenant_a, "outer", {"texts": ["red fox", "blue sky", "green tree"]})
    assert execution.state == "completed", execution.error
    results = execution.output["each"]
    assert [sorted(r) for r in results] == [["input", "s"]] * 3  # each item's final state
    assert [r["input"] for r in results] == ["red fox", "blue sky", "green tree"]
    assert "red fox" in results[0]["s"]["text"]
    assert "green tree" in results[2]["s"]["text"]
    assert execution.output["one"]["s"]["text"] == results[0]["s"]["text"]  # deterministic demo model
    assert execution.usage["input_tokens"] > 0
    assert execution.usage["output_tokens"] > 0


def test_each_mapped_item_must_fit_the_blueprints_input_schema(tenant_a: Tenant, enqueued: list[str]) -> None:
    save(
        tenant_a,
        "inner",
        {"t": {"kind": "template", "config": {"template": "{{ input }}"}}},
        [("t", "end")],
        input_schema={"type": "string"},
    )
    save(
        tenant_a,
        "outer",
        {"each": {"kind": "map", "config": {"items": "input", "blueprint": "inner"}}},
        [("each", "end")],
        input_schema={"type": "array"},
    )
    execution = run(tenant_a, "outer", ["fine", 7])
    assert execution.state == "failed"
    assert execution.error["message"] == "map 'each', item 1: input must be a string"


def test_a_failing_item_fails_the_map(tenant_a: Tenant, enqueued: list[str]) -> None:
    save(
        tenant_a,
        "divide",
        {
            "each": {
                "kind": "map",
                "config": {
                    "items": "input.n",
                    "node": {"kind": "template", "config": {"template": "{{ 10 / state.item }}"}},
                },
            }
        },
        [("each", "end")],
    )
    execution = run(tenant_a, "divide", {"n": [1, 2, 0, 5]})
    assert execution.state == "failed"
    assert "divi" in execution.error["message"].lower()


# --- http tools, the tool policy and secrets ---------------------------------------------------------


class ToolServer:
    """A real HTTP server on 127.0.0.1 that answers JSON and records what it was sent."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                owner.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.path.startswith("/big"):
                    payload = json.dumps({"blob": "x" * 5000}).encode()
                else:
                    payload = json.dumps({"path": self.path, "echo": body}).encode()
                self.send_response(500 if self.path.startswith("/fail") else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    server = ToolServer()
    yield server
    server.close()


def http_blueprint(tenant: Tenant, host: str, path: str = "/orders/{{ input.id }}", **config: Any) -> None:
    save(
        tenant,
        "fetch",
        {
            "fetch": {
                "kind": "http",
                "config": {"url": f"http://{host}{path}", "method": "POST", "body": {"id": "{{ input.id }}"}, **config},
            }
        },
        [("fetch", "end")],
    )


def policy(tenant: Tenant, *, allowed: list[str], trusted: list[str], **more: Any) -> None:
    tenant_set_limits(tenant=tenant, changes={"tool_allowed_domains": allowed, "tool_trusted_domains": trusted, **more})


def test_a_trusted_host_is_called_at_once(tenant_a: Tenant, tool_server: ToolServer, enqueued: list[str]) -> None:
    policy(tenant_a, allowed=[tool_server.host], trusted=[tool_server.host])
    http_blueprint(tenant_a, tool_server.host)
    execution = run(tenant_a, "fetch", {"id": 7})
    assert execution.state == "completed", execution.error
    assert execution.output["fetch"]["status"] == 200
    assert execution.output["fetch"]["body"] == {"path": "/orders/7", "echo": '{"id":7}'}
    assert [d["decision"] for d in events(execution, "data-policy-decision")] == ["allow"]
    assert events(execution, "data-tool-input-available")[0]["input"]["url"].endswith("/orders/7")
    assert events(execution, "data-tool-output-available")[0]["output"]["status"] == 200


def _wildcard_fetch(tenant: Tenant, tool_server: ToolServer) -> str:
    """The fetch blueprint aimed at ``tools.example.com`` (on the tool server's port), a name the
    policy allows and trusts through ``*.example.com`` only. Returns the port."""
    policy(tenant, allowed=["*.example.com"], trusted=["*.example.com"])
    port = tool_server.host.rsplit(":", 1)[1]
    http_blueprint(tenant, f"tools.example.com:{port}")
    return port


def test_a_trusted_wildcard_name_that_resolves_to_a_private_address_is_not_called(
    tenant_a: Tenant, tool_server: ToolServer, enqueued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tenant that controls a name under an allowed wildcard points it at the platform's network.
    _wildcard_fetch(tenant_a, tool_server)
    resolving(monkeypatch, "tools.example.com", ["127.0.0.1"])
    execution = run(tenant_a, "fetch", {"id": 7})
    assert execution.state == "failed"
    assert execution.error["category"] == "policy_violation"
    assert "tools.example.com is a private or loopback address" in execution.error["message"]
    assert tool_server.requests == []


def test_a_call_connects_to_the_address_it_checked_not_to_a_later_answer_of_the_name(
    tenant_a: Tenant, tool_server: ToolServer, enqueued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _wildcard_fetch(tenant_a, tool_server)
    looked_up = resolving(monkeypatch, "tools.example.com", ["93.184.216.34", "127.0.0.1"])  # DNS rebinding
    connected = connections_to_local(monkeypatch)
    execution = run(tenant_a, "fetch", {"id": 7})
    assert execution.state == "completed", execution.error
    assert looked_up == ["tools.example.com"]  # once, by the check
    assert connected == ["93.184.216.34"]
    assert tool_server.requests[0]["headers"]["Host"] == f"tools.example.com:{port}"
    assert events(execution, "data-tool-input-available")[0]["input"]["url"].startswith("http://tools.example.com:")


def test_an_untrusted_host_waits_for_approval_then_runs(
    tenant_a: Tenant, tool_server: ToolServer, enqueued: list[str]
) -> None:
    policy(tenant_a, allowed=[tool_server.host], trusted=[])
    http_blueprint(tenant_a, tool_server.host)
    execution = run(tenant_a, "fetch", {"id": 1})
    assert (execution.state, execution.wait_reason) == ("waiting", "approval")
    assert tool_server.requests == []  # nothing was sent before the approval
    assert execution.wait_detail["prompt"]["url"].endswith("/orders/1")
    execution_provide_input(tenant=tenant_a, execution_id=execution.pk, approve=True, actor="ops")
    execution = resume(execution)
    assert execution.state == "completed"
    assert len(tool_server.requests) == 1
    decisions = [(d["decision"], d["reason"]) for d in events(execution, "data-policy-decision")]
    assert decisions[0][0] == "approval_required"
    assert decisions[1] == ("approved", "approved by ops")


def test_a_denied_call_is_never_made(tenant_a: Tenant, tool_server: ToolServer, enqueued: list[str]) -> None:
    policy(tenant_a, allowed=[tool_server.host], trusted=[])
    http_blueprint(tenant_a, tool_server.host)
    execution = run(tenant_a, "fetch", {"id": 1})
    execution_provide_input(tenant=tenant_a, execution_id=execution.pk, approve=False, actor="ops")
    execution = resume(execution)
    assert execution.state == "failed"
    assert execution.error["category"] == "policy_violation"
    assert tool_server.requests == []
    assert [d["decision"] for d in events(execution, "data-policy-decision")] == ["approval_required", "denied"]


def test_a_host_outside_the_policy_is_refused(tenant_a: Tenant, tool_server: ToolServer, enqueued: list[str]) -> None:
    policy(tenant_a, allowed=["api.example.com"], trusted=["api.example.com"])
    http_blueprint(tenant_a, tool_server.host)
    execution = run(tenant_a, "fetch", {"id": 1})
    assert execution.state == "failed"
    assert execution.error["message"] == "fetch: host 127.0.0.1 is not in the tenant's allowed domains"
    assert [d["decision"] for d in events(execution, "data-policy-decision")] == ["deny"]
    assert tool_server.requests == []


def test_method_and_response_size_limits(tenant_a: Tenant, tool_server: ToolServer, enqueued: list[str]) -> None:
    policy(tenant_a, allowed=[tool_server.host], trusted=[tool_server.host], tool_allowed_methods=["GET"])
    http_blueprint(tenant_a, tool_server.host)
    assert "method POST is not allowed" in run(tenant_a, "fetch", {"id": 1}).error["message"]
    policy(tenant_a, allowed=[tool_server.host], trusted=[tool_server.host], tool_max_response_bytes=1000)
    http_blueprint_get = {"fetch": {"kind": "http", "config": {"url": f"http://{tool_server.host}/big"}}}
    save(tenant_a, "big", http_blueprint_get, [("fetch", "end")])
    failed = run(tenant_a, "big")
    assert failed.error["message"] == "fetch: the response is larger than 1000 bytes"


def test_secrets_reach_the_request_and_nowhere_else(
    tenant_a: Tenant, tool_server: ToolServer, enqueued: list[str]
) -> None:
    secret = "sk-live-very-secret-value-123"
    tenant_secret_set(tenant=tenant_a, name="ORDERS_KEY", value=secret)
    policy(tenant_a, allowed=[tool_server.host], trusted=[tool_server.host])
    http_blueprint(tenant_a, tool_server.host, auth_secret="ORDERS_KEY")
    execution = run(tenant_a, "fetch", {"id": 2})
    assert execution.state == "completed"
    assert tool_server.requests[0]["headers"]["Authorization"] == f"Bearer {secret}"
    stored = json.dumps(
        [
            list(ExecutionEvent.objects.filter(execution=execution).values()),
            list(Step.objects.filter(execution=execution).values()),
            list(Execution.objects.filter(pk=execution.pk).values()),
        ],
        default=str,
    )
    assert secret not in stored
    from tenants.models import TenantSecret

    assert secret not in TenantSecret.objects.get(tenant=tenant_a).ciphertext


def test_a_missing_secret_fails_clearly(tenant_a: Tenant, tool_server: ToolServer, enqueued: list[str]) -> None:
    policy(tenant_a, allowed=[tool_server.host], trusted=[tool_server.host])
    http_blueprint(tenant_a, tool_server.host, auth_secret="NOPE")
    execution = run(tenant_a, "fetch", {"id": 2})
    assert execution.error["message"] == "fetch: the tenant has no secret named 'NOPE'"
    assert tool_server.requests == []


# --- llm (demo provider) ---------------------------------------------------------------------------


def test_an_llm_node_streams_its_text_and_records_its_usage(tenant_a: Tenant, enqueued: list[str]) -> None:
    ModelPrice.objects.create(
        model="demo", input_usd_per_million=Decimal("1000"), output_usd_per_million=Decimal("2000")
    )
    save(
        tenant_a,
        "chat",
        {"say": {"kind": "llm", "config": {"provider": "demo", "model": "demo", "prompt": "{{ input.q }}"}}},
        [("say", "end")],
    )
    execution = run(tenant_a, "chat", {"q": "hello there"})
    assert execution.state == "completed", execution.error
    text = execution.output["say"]["text"]
    deltas = [d["delta"] for d in events(execution, "data-text-delta")]
    assert len(deltas) > 1
    assert "".join(deltas) == text
    usage = execution.output["say"]["usage"]
    assert execution.usage["input_tokens"] == usage["input_tokens"] > 0
    expected_cost = (usage["input_tokens"] * 1000 + usage["output_tokens"] * 2000) / 1_000_000
    assert execution.usage["cost_usd"] == pytest.approx(expected_cost)
    step_output = Step.objects.get(execution=execution).output
    assert "messages" not in step_output
    assert step_output["text"] == text


def save_agent(tenant: Tenant) -> None:
    """An agent on the demo model with one tool: it calls the tool once, then answers."""
    config = {
        "provider": "demo",
        "model": "demo",
        "prompt": "{{ input.q }}",
        "tools": [{"name": "lookup", "function": "demo.lookup"}],
    }
    save(tenant, "agent", {"agent": {"kind": "llm", "config": config}}, [("agent", "end")])


def test_an_agent_calls_its_tool_and_answers(tenant_a: Tenant, enqueued: list[str]) -> None:
    save_agent(tenant_a)
    execution = run(tenant_a, "agent", {"q": "what about my refund"})
    assert execution.state == "completed", execution.error
    # The model asks for the tool, the tool runs, the model answers: a step each.
    assert steps(execution) == [("agent", "completed")] * 3
    tool_in = events(execution, "data-tool-input-available")
    tool_out = events(execution, "data-tool-output-available")
    assert [e["tool_name"] for e in tool_in] == ["lookup"]
    assert "Refunds are paid" in json.dumps(tool_out[0]["output"])
    assert execution.output["agent"]["pending"] == []
    assert execution.output["agent"]["rounds"] == 2
    assert execution.usage["discovered_steps"] == 1


def test_a_token_limit_stops_an_agent_loop(tenant_a: Tenant, enqueued: list[str]) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_tokens": 5})
    save_agent(tenant_a)
    execution = run(tenant_a, "agent", {"q": "tell me about shipping please, in detail"})
    assert execution.state == "failed"
    assert execution.error["category"] == "quota_exceeded"
    assert steps(execution) == [("agent", "completed")]  # the second round never started


def test_a_cost_limit_stops_an_agent_loop(tenant_a: Tenant, enqueued: list[str]) -> None:
    ModelPrice.objects.create(
        model="demo", input_usd_per_million=Decimal("100000"), output_usd_per_million=Decimal("100000")
    )
    tenant_set_limits(tenant=tenant_a, changes={"max_cost_usd": Decimal("0.0001")})
    save_agent(tenant_a)
    execution = run(tenant_a, "agent", {"q": "warranty"})
    assert execution.state == "failed"
    assert execution.error["category"] == "quota_exceeded"
    assert "cost" in execution.error["message"]


# --- versions and the demo ---------------------------------------------------------------------------


def test_an_execution_runs_the_version_it_was_submitted_with(tenant_a: Tenant, enqueued: list[str]) -> None:
    save(tenant_a, "v", {"t": {"kind": "template", "config": {"template": "one"}}}, [("t", "end")])
    first, _ = execution_submit(tenant=tenant_a, blueprint="v", input={})
    save(tenant_a, "v", {"t": {"kind": "template", "config": {"template": "two"}}}, [("t", "end")])
    execution_run(first.pk)
    first.refresh_from_db()
    assert (first.blueprint_version, first.output["t"]) == (1, "one")
    assert run(tenant_a, "v").output["t"] == "two"


def test_the_demo_blueprint_runs_end_to_end_offline(tenant_a: Tenant, enqueued: list[str]) -> None:
    assert blueprints_install_demo(tenant=tenant_a) == ["demo-summarize", "demo-triage"]
    assert blueprints_install_demo(tenant=tenant_a) == []
    execution = run(
        tenant_a, "demo-triage", {"request": "Please approve my refund", "items": ["late parcel", "broken lid"]}
    )
    assert (execution.state, execution.wait_reason) == ("waiting", "approval"), execution.error
    execution_provide_input(tenant=tenant_a, execution_id=execution.pk, approve=True, actor="ops")
    execution = resume(execution)
    assert execution.state == "completed", execution.error
    published = execution.output["publish"]
    assert "Refunds are paid" in published["answer"] or "[demo model]" in published["answer"]
    assert len(published["summaries"]) == 2
    assert published["approved"] is True
    # The agent (model, tool, model), the map, the route, the approval asked then answered, the answer.
    assert [name for name, _ in steps(execution)] == [
        "research", "research", "research", "summaries", "route", "review", "review", "publish",
    ]  # fmt: skip
    assert gap_free(execution)


# --- child executions ------------------------------------------------------------------------------


def parent_and_child(tenant: Tenant, **child_config: Any) -> None:
    save(
        tenant,
        "child",
        {
            "ask": {"kind": "wait", "config": {"mode": "approval", "prompt": "go on?"}},
            "done": {"kind": "template", "config": {"template": "child saw {{ input.n }}"}},
        },
        [("ask", "done"), ("done", "end")],
    )
    save(
        tenant,
        "parent",
        {
            "spawn": {
                "kind": "subgraph",
                "config": {"blueprint": "child", "mode": "child", "input": {"n": "{{ input.n }}"}, **child_config},
            },
            "after": {"kind": "template", "config": {"template": "{{ state.spawn }}"}},
        },
        [("spawn", "after"), ("after", "end")],
    )


def test_an_awaited_child_runs_as_its_own_execution_and_its_parent_resumes_with_its_output(
    tenant_a: Tenant, enqueued: list[str]
) -> None:
    parent_and_child(tenant_a)
    parent = run(tenant_a, "parent", {"n": 4})
    assert (parent.state, parent.wait_reason) == ("waiting", "sub_agent")
    child = Execution.objects.get(parent=parent)
    assert (child.blueprint, child.input, child.tenant) == ("child", {"n": 4}, tenant_a)
    assert parent.wait_detail["prompt"] == {"child_id": child.pk, "blueprint": "child"}
    with pytest.raises(Exception, match="not waiting for input or approval"):  # nobody answers for the child
        execution_provide_input(tenant=tenant_a, execution_id=parent.pk, input={})

    child = resume(child)  # its worker runs it: it waits for its own approval
    assert (child.state, child.wait_reason) == ("waiting", "approval")
    execution_provide_input(tenant=tenant_a, execution_id=child.pk, approve=True)
    child = resume(child)
    assert child.state == "completed"
    parent.refresh_from_db()
    assert parent.resume_requested  # the child's end answered its parent, and queued it
    assert parent.pk in enqueued
    parent = resume(parent)
    assert parent.state == "completed", parent.error
    assert parent.output["spawn"] == {"child_id": child.pk, "output": child.output}


def test_a_child_that_fails_fails_the_step_that_awaits_it(tenant_a: Tenant, enqueued: list[str]) -> None:
    parent_and_child(tenant_a)
    parent = run(tenant_a, "parent", {"n": 1})
    child = resume(Execution.objects.get(parent=parent))
    execution_cancel(tenant=tenant_a, execution_id=child.pk, reason="not needed")
    parent.refresh_from_db()
    assert parent.resume_requested
    parent = resume(parent)
    assert parent.state == "failed"
    assert parent.error["message"] == "subgraph 'spawn': the child ended cancelled"


def test_cancelling_a_parent_cancels_its_children(tenant_a: Tenant, enqueued: list[str]) -> None:
    parent_and_child(tenant_a)
    parent = run(tenant_a, "parent", {"n": 1})
    child = resume(Execution.objects.get(parent=parent))
    assert child.state == "waiting"
    execution_cancel(tenant=tenant_a, execution_id=parent.pk, reason="stop all")
    child.refresh_from_db()
    assert child.state == "cancelled"
    assert Execution.objects.get(pk=parent.pk).state == "cancelled"


def test_a_background_child_is_left_running(tenant_a: Tenant, enqueued: list[str]) -> None:
    parent_and_child(tenant_a, background=True)
    parent = run(tenant_a, "parent", {"n": 2})
    assert parent.state == "completed", parent.error
    child = Execution.objects.get(parent=parent)
    assert parent.output["spawn"] == {"child_id": child.pk, "background": True}
    assert child.state == "queued"


def test_a_child_that_inherits_the_inbox_reads_its_parents_messages(tenant_a: Tenant, enqueued: list[str]) -> None:

    parent_and_child(tenant_a, inherit_inbox=True)
    parent = run(tenant_a, "parent", {"n": 2})
    child = Execution.objects.get(parent=parent)
    assert child.metadata == {"inherit_inbox": True}
    assert kernel_for(child).get_inbox_execution_ids() == [child.pk, parent.pk]
    plain, _ = execution_submit(tenant=tenant_a, blueprint="child", input={"n": 1}, parent=parent)
    assert kernel_for(plain).get_inbox_execution_ids() == [plain.pk]


# --- failures of function and http nodes; the map's bound ----------------------------------------------

GAUGE = {"now": 0, "peak": 0}
GAUGE_LOCK = threading.Lock()


@blueprint_function("tests.gauged")
def _gauged(value: Any, ctx: Any) -> Any:
    with GAUGE_LOCK:
        GAUGE["now"] += 1
        GAUGE["peak"] = max(GAUGE["peak"], GAUGE["now"])
    ctx.sleep(0.15)
    with GAUGE_LOCK:
        GAUGE["now"] -= 1
    return value


@blueprint_function("tests.broken")
def _broken(value: Any, ctx: Any) -> Any:
    raise RuntimeError("the function broke")


def test_map_runs_at_most_its_concurrency_at_once(tenant_a: Tenant, enqueued: list[str]) -> None:
    GAUGE.update(now=0, peak=0)
    node = {"kind": "function", "config": {"function": "tests.gauged", "input": "{{ state.item }}"}}
    save(tenant_a, "gauged", {"each": {"kind": "map", "config": {"items": "input", "node": node, "concurrency": 2}}},
         [("each", "end")], input_schema={"type": "array"})  # fmt: skip
    execution = run(tenant_a, "gauged", list(range(6)))
    assert execution.output["each"] == list(range(6))
    assert GAUGE["peak"] == 2


def test_a_function_that_raises_fails_the_execution(tenant_a: Tenant, enqueued: list[str]) -> None:
    save(tenant_a, "broken", {"f": {"kind": "function", "config": {"function": "tests.broken"}}}, [("f", "end")])
    execution = run(tenant_a, "broken")
    assert execution.state == "failed"
    assert execution.error["message"] == "RuntimeError: the function broke"


def test_a_server_error_is_retried_by_the_node_policy_then_fails(
    tenant_a: Tenant, tool_server: ToolServer, enqueued: list[str]
) -> None:
    policy(tenant_a, allowed=[tool_server.host], trusted=[tool_server.host])
    retry = {"max_retries": 1, "backoff": "fixed", "base_delay_ms": 10, "max_delay_ms": 10}
    node = {"kind": "http", "config": {"url": f"http://{tool_server.host}/fail"}, "retry": retry}
    save(tenant_a, "flaky", {"call": node}, [("call", "end")])
    execution = run(tenant_a, "flaky")
    assert execution.state == "failed"
    assert (execution.error["category"], execution.error["http_status"]) == ("tool", 500)
    assert len(tool_server.requests) == 2
    assert steps(execution) == [("call", "failed"), ("call", "failed")]


def test_a_state_that_grows_too_large_fails_the_step(tenant_a: Tenant, enqueued: list[str]) -> None:
    # Each node repeats everything before it a hundred times: the second would make ~10 MB.
    grow = {"kind": "template", "config": {"template": "{{ [" + ", ".join(["state"] * 100) + "] }}"}}
    save(tenant_a, "grow", {"a": grow, "b": grow}, [("a", "b"), ("b", "end")], input_schema={"type": "string"})
    execution = run(tenant_a, "grow", "x" * 1000)
    assert execution.state == "failed"
    assert execution.error["message"] == "node 'b': the run's state would be larger than 4194304 bytes"
    assert steps(execution) == [("a", "completed"), ("b", "failed")]


def test_a_wait_for_a_child_is_not_resumed_by_hand_and_a_rerun_spawns_no_second_child(
    tenant_a: Tenant, enqueued: list[str]
) -> None:
    parent_and_child(tenant_a)
    parent = run(tenant_a, "parent", {"n": 1})
    with pytest.raises(Exception, match="cannot resume"):
        execution_resume(tenant=tenant_a, execution_id=parent.pk)
    assert Execution.objects.filter(parent=parent).count() == 1


def test_spawning_is_idempotent_per_visit_of_the_node(tenant_a: Tenant, enqueued: list[str]) -> None:
    parent_and_child(tenant_a)
    parent, _ = execution_submit(tenant=tenant_a, blueprint="parent", input={"n": 1})

    def spawn() -> str:
        child = execution_spawn_child(
            parent=parent, blueprint="child", version=None, input={"n": 1}, inherit_inbox=False, node="spawn"
        )
        return child.pk

    first = spawn()
    assert spawn() == first  # the same visit again (its worker died before the wait was stored)
    Step.objects.create(
        id="step_visit_1", execution=parent, position=0, name="spawn", step_type="graph_node", state="completed"
    )
    assert spawn() != first  # the node's next visit is a new child


def test_a_child_answers_its_parent_once(tenant_a: Tenant, enqueued: list[str]) -> None:
    parent_and_child(tenant_a)
    parent = run(tenant_a, "parent", {"n": 1})
    child = Execution.objects.get(parent=parent)
    execution_cancel(tenant=tenant_a, execution_id=child.pk)
    assert Execution.objects.get(pk=parent.pk).resume_requested
    Execution.objects.filter(pk=parent.pk).update(resume_requested=False)  # as a claim leaves it
    assert execution_child_ended(child_id=child.pk) is False  # that wait was answered


def test_secret_values_must_be_printable(tenant_a: Tenant) -> None:
    from enact_platform.errors import InvalidInput
    from tenants.models import TenantSecret

    with pytest.raises(InvalidInput, match="printable ASCII"):
        tenant_secret_set(tenant=tenant_a, name="K", value="sk-abc\nInjected: 1")
    assert not TenantSecret.objects.exists()
