"""Traces (executions/ops/tracing.py) against a real OTLP receiver on 127.0.0.1: a submission
through the API with a W3C traceparent, run by worker slots in this process, arrives as one trace
under the caller's span, with a span per attempt of each step, a model call with the GenAI
attributes and an http call as a CLIENT span; a paused and resumed execution stays one trace;
with no endpoint set, nothing of it is built."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from opentelemetry.sdk.trace import Tracer

from executions.models import Execution, Step
from executions.ops import tracing
from executions.persistence.kernels import kernel_for
from executions.runtime.run import execution_run
from executions.runtime.slots import Slots
from executions.services.blueprints import blueprint_save
from executions.services.controls import execution_pause, execution_resume
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import tenant_set_limits

from ..conftest import wait_until
from ..executions.test_processes import Cluster
from ..otlp_receiver import ReceivedSpan, Receiver, otlp_receiver
from ..webhook_receiver import Receiver as ToolServer
from ..webhook_receiver import receiver as tool_server
from .conftest import Api

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
SERVER, CLIENT = 2, 3  # the proto's SpanKind
ERROR = 2  # the proto's status code


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    with otlp_receiver() as found:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", found.endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-collector-key=abc")
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        tracing.shutdown()
        assert tracing.setup()
        try:
            yield found
        finally:
            tracing.shutdown()


@pytest.fixture
def slots(settings: Any) -> Iterator[Slots]:
    settings.ENACT_DISPATCH_POLL_SECONDS = 0.05
    runner = Slots(size=5)
    runner.start()
    yield runner
    runner.stop(timeout=5)


@pytest.fixture
def tools() -> Iterator[ToolServer]:
    with tool_server([(503, {})]) as server:  # the first call fails (retryable), the next succeeds
        yield server


def traced_blueprint(tenant: Tenant, tools: ToolServer) -> None:
    tenant_set_limits(
        tenant=tenant, changes={"tool_allowed_domains": [tools.host], "tool_trusted_domains": [tools.host]}
    )
    retry = {"max_retries": 2, "backoff": "fixed", "base_delay_ms": 50, "max_delay_ms": 50}
    url = f"http://{tools.host}/hooks?api_key=not-for-traces&page=2"
    blueprint_save(
        tenant=tenant,
        name="traced",
        definition={
            "entry": "fetch",
            "nodes": {
                "fetch": {
                    "kind": "http",
                    "config": {"url": url, "method": "POST", "body": {"q": "{{ input.q }}"}},
                    "retry": retry,
                },
                "ask": {
                    "kind": "llm",
                    "config": {"provider": "demo", "model": "demo-model", "prompt": "{{ input.q }}"},
                },
            },
            "edges": [{"from": "fetch", "to": "ask"}, {"from": "ask", "to": "end"}],
        },
    )


def one(spans: list[ReceivedSpan], **where: Any) -> ReceivedSpan:
    found = [
        s for s in spans if all((s.attributes.get(k) if "." in k else getattr(s, k)) == v for k, v in where.items())
    ]
    assert len(found) == 1, (where, spans)
    return found[0]


def root_of(execution_id: str) -> Any:
    return lambda spans: any(
        s.name.startswith("execution ") and s.attributes.get("enact.execution.id") == execution_id for s in spans
    )


def test_a_submission_with_a_traceparent_is_one_trace_under_the_callers_span(
    api_a: Api, receiver: Receiver, tools: ToolServer, slots: Slots
) -> None:
    traced_blueprint(api_a.tenant, tools)
    response = api_a.post(
        "executions",
        {"blueprint": "traced", "input": {"q": "how are you"}},
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
    )
    assert response.status_code == 201, response.content
    execution_id = response.json()["id"]
    assert wait_until(lambda: Execution.objects.get(pk=execution_id).state == "completed", timeout=20)
    spans = receiver.wait_for(root_of(execution_id))
    mine = [s for s in spans if s.attributes.get("enact.execution.id") == execution_id]
    assert {s.trace_id for s in mine} == {CALLER_TRACE}  # every span of the execution joined the caller's trace
    trace = receiver.of_trace(CALLER_TRACE)
    assert {s.service for s in trace} == {"enact"}
    assert receiver.requests[0]["x-collector-key"] == "abc"  # OTEL_EXPORTER_OTLP_HEADERS

    api = one(trace, name="POST /api/v1/executions")
    assert (api.kind, api.parent_span_id, api.attributes["http.response.status_code"]) == (SERVER, CALLER_SPAN, 201)
    root = one(trace, name="execution traced")
    assert root.parent_span_id == api.span_id
    assert root.attributes["enact.execution.state"] == "end"

    # The http step: its first attempt failed on a 503, the retry succeeded; one span each.
    first = one(trace, name="fetch", **{"enact.step.attempt": 1})
    second = one(trace, name="fetch", **{"enact.step.attempt": 2})
    assert (first.parent_span_id, second.parent_span_id) == (root.span_id, root.span_id)
    assert first.status_code == ERROR
    assert second.status_code != ERROR
    assert first.end_ns <= second.start_ns
    assert first.attributes["enact.step.type"] == "tool_node"
    steps = {row.pk: row for row in Step.objects.filter(execution_id=execution_id)}
    assert first.attributes["enact.step.id"] in steps
    assert second.attributes["enact.step.id"] in steps
    calls = [s for s in trace if s.kind == CLIENT and s.name == "POST"]
    assert sorted((c.parent_span_id, c.attributes["http.response.status_code"]) for c in calls) == sorted(
        [(first.span_id, 503), (second.span_id, 200)]
    )
    for call in calls:
        assert call.attributes["http.request.method"] == "POST"
        assert call.attributes["url.full"] == f"http://{tools.host}/hooks?api_key=REDACTED&page=2"
        assert "not-for-traces" not in repr(call.attributes)

    # The llm step: a chat span under it with the GenAI attributes, the tokens as the step counted.
    ask = one(trace, name="ask")
    assert ask.parent_span_id == root.span_id
    assert ask.attributes["enact.step.type"] == "llm_node"
    chat = one(trace, name="chat demo-model")
    assert (chat.parent_span_id, chat.kind) == (ask.span_id, CLIENT)
    output = Step.objects.get(pk=ask.attributes["enact.step.id"]).output
    assert isinstance(output, dict)
    usage = output["usage"]
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == chat.attributes["gen_ai.system"] == "demo"
    assert chat.attributes["gen_ai.request.model"] == "demo-model"
    assert chat.attributes["gen_ai.usage.input_tokens"] == usage["input_tokens"] > 0
    assert chat.attributes["gen_ai.usage.output_tokens"] == usage["output_tokens"] > 0
    # Nothing else in the trace: the API span, the root, three attempts, two http calls, a model call.
    assert len(trace) == 8, trace


@pytest.mark.parametrize(
    "header", ["00-nothex-00f067aa0ba902b7-01", "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01"]
)
def test_a_malformed_traceparent_is_ignored(api_a: Api, receiver: Receiver, slots: Slots, header: str) -> None:
    response = api_a.post("executions", {"blueprint": "demo.chain", "input": {"n": 2}}, headers={"traceparent": header})
    assert response.status_code == 201, response.content
    execution_id = response.json()["id"]
    spans = receiver.wait_for(root_of(execution_id))
    root = one(spans, name="execution demo.chain", **{"enact.execution.id": execution_id})
    api = one(spans, name="POST /api/v1/executions")
    assert api.parent_span_id == ""
    assert api.trace_id == root.trace_id
    assert root.parent_span_id == api.span_id
    assert len([s for s in receiver.of_trace(root.trace_id) if s.attributes.get("enact.step.id")]) == 2


def test_a_paused_and_resumed_execution_stays_one_trace(tenant_a: Tenant, receiver: Receiver, slots: Slots) -> None:
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 4, "seconds": 0.3})
    assert wait_until(lambda: Step.objects.filter(execution=execution, state="completed").exists(), timeout=10)
    execution_pause(tenant=tenant_a, execution_id=execution.pk, reason="lunch")
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).state == "paused", timeout=10)
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).lease_owner == "", timeout=10)  # the run let go
    execution_resume(tenant=tenant_a, execution_id=execution.pk)
    assert wait_until(lambda: Execution.objects.get(pk=execution.pk).state == "completed", timeout=20)
    spans = receiver.wait_for(root_of(execution.pk))
    root = one(spans, name="execution demo.slow")
    mine = [s for s in spans if s.attributes.get("enact.execution.id") == execution.pk]
    assert {s.trace_id for s in mine} == {root.trace_id}
    steps = [s for s in mine if s.attributes.get("enact.step.id")]
    assert len(steps) == Step.objects.filter(execution=execution).count() == 4
    assert {s.parent_span_id for s in steps} == {root.span_id}
    assert root.parent_span_id == ""  # not submitted through the API: the execution's own trace
    names = [name for name, _ in root.events]
    assert names[:1] == ["execution-start"]
    assert "execution-paused" in names
    assert "execution-resumed" in names
    assert dict(root.events)["execution-paused"] == {"reason": "lunch"}
    assert root.start_ns <= min(s.start_ns for s in steps)
    assert root.end_ns >= max(s.end_ns for s in steps)


def test_with_no_endpoint_no_tracer_and_no_span_is_made(
    api_a: Api, monkeypatch: pytest.MonkeyPatch, tools: ToolServer
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    tracing.shutdown()
    assert not tracing.setup()
    traced_blueprint(api_a.tenant, tools)
    with (
        mock.patch("opentelemetry.sdk.trace.TracerProvider.get_tracer", autospec=True) as get_tracer,
        mock.patch.object(Tracer, "start_span", autospec=True) as start_span,
        mock.patch("opentelemetry.trace.get_tracer", autospec=True) as api_get_tracer,
        mock.patch.object(tracing.TracingSink, "__init__", autospec=True) as sink,
    ):
        response = api_a.post(
            "executions",
            {"blueprint": "traced", "input": {"q": "hi"}},
            headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        execution_id = response.json()["id"]
        execution_run(execution_id)
        assert Execution.objects.get(pk=execution_id).state == "completed"
    assert (get_tracer.call_count, start_span.call_count, api_get_tracer.call_count, sink.call_count) == (0, 0, 0, 0)
    assert "traceparent" not in response.json()["metadata"]
    assert kernel_for(Execution.objects.get(pk=execution_id)).sink.__class__.__name__ == "DjangoEventSink"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://api.example.com/v1/x?page=2", "https://api.example.com/v1/x?page=2"),
        ("https://bob:hunter22@api.example.com/x", "https://REDACTED:REDACTED@api.example.com/x"),
        (
            "https://h.example/x?access_token=t0k&X-Amz-Signature=abc&sig=1&q=ok&apiKey=zz",
            "https://h.example/x?access_token=REDACTED&X-Amz-Signature=REDACTED&sig=REDACTED&q=ok&apiKey=REDACTED",
        ),
    ],
)
def test_urls_in_spans_carry_no_credentials(url: str, shown: str) -> None:
    from executions.blueprints.spans import redact_url

    assert redact_url(url) == shown


def test_a_real_worker_process_sends_its_spans_into_the_callers_trace_and_flushes_them_as_it_stops(
    api_a: Api, receiver: Receiver, tmp_path: Path
) -> None:
    # Spans leave a worker process in batches every minute at most here: those of this run arrive
    # only because the worker's graceful stop flushes them. Set up after django-q2's fork.
    workers = Cluster(tmp_path / "cluster.log", extra={"OTEL_BSP_SCHEDULE_DELAY": "60000"})
    try:
        response = api_a.post(
            "executions",
            {"blueprint": "demo.slow", "input": {"steps": 3, "seconds": 0.2}},
            headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        execution_id = response.json()["id"]
        ended = lambda: Execution.objects.get(pk=execution_id).state == "completed"  # noqa: E731
        assert wait_until(ended, timeout=60), workers.log.read_text()[-3000:]
        assert wait_until(lambda: Execution.objects.get(pk=execution_id).lease_owner == "", timeout=10)
        time.sleep(0.5)
        assert not root_of(execution_id)(receiver.spans)  # not sent yet: the batch waits
        workers.stop_gracefully(timeout=30)
    finally:
        workers.stop()
    spans = receiver.wait_for(root_of(execution_id), timeout=5)
    trace = receiver.of_trace(CALLER_TRACE)
    api = one(trace, name="POST /api/v1/executions")
    root = one(trace, name="execution demo.slow")
    assert root.parent_span_id == api.span_id
    steps = [s for s in trace if s.attributes.get("enact.step.id")]
    assert len(steps) == 3
    assert {s.parent_span_id for s in steps} == {root.span_id}
    assert {s.service for s in spans if s.trace_id == CALLER_TRACE} == {"enact"}


def test_a_child_execution_joins_its_parents_trace_and_a_rerun_links_to_its_source(
    api_a: Api, receiver: Receiver, slots: Slots
) -> None:
    tenant = api_a.tenant
    child = {"done": {"kind": "template", "config": {"template": "child saw {{ input.n }}"}}}
    blueprint_save(
        tenant=tenant,
        name="child",
        definition={"entry": "done", "nodes": child, "edges": [{"from": "done", "to": "end"}]},
    )
    spawn = {"kind": "subgraph", "config": {"blueprint": "child", "mode": "child", "input": {"n": "{{ input.n }}"}}}
    parent_nodes = {"spawn": spawn, "after": {"kind": "template", "config": {"template": "{{ state.spawn }}"}}}
    edges = [{"from": "spawn", "to": "after"}, {"from": "after", "to": "end"}]
    blueprint_save(tenant=tenant, name="parent", definition={"entry": "spawn", "nodes": parent_nodes, "edges": edges})
    response = api_a.post(
        "executions",
        {"blueprint": "parent", "input": {"n": 4}},
        headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
    )
    parent_id = response.json()["id"]
    assert wait_until(lambda: Execution.objects.get(pk=parent_id).state == "completed", timeout=20)
    child_id = Execution.objects.get(parent_id=parent_id).pk
    spans = receiver.wait_for(lambda found: root_of(parent_id)(found) and root_of(child_id)(found))
    trace = receiver.of_trace(CALLER_TRACE)
    parent_root = one(trace, name="execution parent")
    child_root = one(trace, name="execution child")
    assert child_root.parent_span_id == parent_root.span_id
    assert one(trace, name="done").parent_span_id == child_root.span_id
    # The parent's node ran twice, in two runs: it spawned the child and waited, then took its output.
    spawned, took = sorted((s for s in trace if s.name == "spawn"), key=lambda s: s.start_ns)
    assert {spawned.parent_span_id, took.parent_span_id} == {parent_root.span_id}
    assert spawned.start_ns <= child_root.start_ns <= child_root.end_ns <= took.start_ns

    rerun = api_a.post(f"executions/{parent_id}/rerun", {})
    assert rerun.status_code == 201, rerun.content
    rerun_id = rerun.json()["id"]
    spans = receiver.wait_for(root_of(rerun_id), timeout=20)
    again = one(spans, name="execution parent", **{"enact.execution.id": rerun_id})
    assert again.trace_id != CALLER_TRACE  # a trace of its own, linked to its source
    assert again.links == [(CALLER_TRACE, parent_root.span_id)]


def test_a_worker_killed_mid_run_leaves_one_trace_whose_lost_attempt_shows(
    tenant_a: Tenant, receiver: Receiver, tmp_path: Path
) -> None:
    workers = Cluster(tmp_path / "cluster.log", extra={"OTEL_BSP_SCHEDULE_DELAY": "50"})
    try:
        execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 4, "seconds": 0.6})
        one_done = lambda: Step.objects.filter(execution=execution, state="completed").count() >= 1  # noqa: E731
        assert wait_until(one_done, timeout=60), workers.log.read_text()[-3000:]
        time.sleep(0.2)  # the step's span leaves its batch
        owner = Execution.objects.values_list("lease_owner", flat=True).get(pk=execution.pk)
        os.kill(int(owner.rsplit(":", 1)[1]), signal.SIGKILL)
        ended = lambda: Execution.objects.get(pk=execution.pk).state == "completed"  # noqa: E731
        assert wait_until(ended, timeout=60), workers.log.read_text()[-3000:]
        spans = receiver.wait_for(root_of(execution.pk), timeout=10)  # sent every 50 ms
    finally:
        workers.stop()
    root = one(spans, name="execution demo.slow")
    mine = [s for s in spans if s.attributes.get("enact.execution.id") == execution.pk]
    assert {s.trace_id for s in mine} == {root.trace_id}  # both workers' spans: one trace
    steps = [s for s in mine if s.attributes.get("enact.step.id")]
    assert {s.parent_span_id for s in steps} == {root.span_id}
    rows = dict(Step.objects.filter(execution=execution).values_list("pk", "state"))
    assert rows.keys() == {s.attributes["enact.step.id"] for s in steps}  # every attempt, the lost one too
    lost = [s for s in steps if rows[s.attributes["enact.step.id"]] == "failed"]
    assert [(s.status_code, s.attributes["error.type"]) for s in lost] == [(ERROR, "worker_lost")] * len(lost)
