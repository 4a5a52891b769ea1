"""What leaves the kernel as it should: JSON artifacts that are JSON, PII masked wherever content goes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from executions.kernel import (
    ArtifactType,
    ControlAction,
    ControlMessage,
    ExecutionError,
    ExecutionKernel,
    ExecutionState,
    GraphBuilder,
    InMemoryArtifactStore,
    StepType,
    TenantContext,
    WaitReason,
)
from executions.kernel.events import (
    EventEmitter,
    EventType,
    PiiMaskingProcessor,
    ProtectedEventEmitter,
    StreamEvent,
)
from executions.kernel.memory import InMemoryEventSink

Build = Callable[..., ExecutionKernel]
MAIL = "ann@example.com"


def _events(kernel: ExecutionKernel) -> InMemoryEventSink:
    sink = kernel.sink
    assert isinstance(sink, InMemoryEventSink)
    return sink


def _artifacts(kernel: ExecutionKernel) -> InMemoryArtifactStore:
    store = kernel.artifact_store()
    assert isinstance(store, InMemoryArtifactStore)
    return store


# --- item: a JSON artifact is JSON ----------------------------------------------------------------


def test_store_json_artifact_stores_a_string_as_a_json_string(make_kernel: Build) -> None:
    kernel = make_kernel()
    kernel.start()
    step = kernel.begin_step(StepType.FUNCTION_NODE, "write")
    artifact_id = kernel.store_json_artifact(step, "greeting", "hello")
    assert artifact_id is not None
    info, content = _artifacts(kernel).get(artifact_id)
    assert info.content_type == "application/json"
    assert json.loads(content) == "hello"
    assert content == b'"hello"'


def test_node_json_artifacts_are_json(make_kernel: Build) -> None:
    ids: dict[str, Any] = {}

    def write(state: Any, ctx: Any) -> Any:
        ids["value"] = ctx.store_json_artifact("value.json", "hello")
        ids["text"] = ctx.store_artifact("text.json", ArtifactType.JSON, '{"a": 1}')
        ids["not_json"] = ctx.store_artifact("bad.json", ArtifactType.JSON, "hello")
        ids["plain"] = ctx.store_artifact("notes.txt", ArtifactType.TEXT, "hello")
        return state

    kernel = make_kernel()
    result = kernel.execute_graph(GraphBuilder("a").add_node("w", write).set_entry_point("w").compile(), None)
    assert result.state is ExecutionState.COMPLETED
    store = _artifacts(kernel)
    assert store.get(ids["value"])[1] == b'"hello"'
    assert json.loads(store.get(ids["text"])[1]) == {"a": 1}
    assert ids["not_json"] is None  # text that is not JSON is not stored as JSON
    assert store.get(ids["plain"])[1] == b"hello"
    names = [e.data["name"] for e in _events(kernel).of_type(EventType.ARTIFACT_CREATED)]
    assert names == ["value.json", "text.json", "notes.txt"]


def test_a_value_json_cannot_hold_is_not_stored_as_json(make_kernel: Build) -> None:
    # NaN and the infinities are not JSON: a reader other than Python's refuses the document.
    ids: dict[str, Any] = {}

    def write(state: Any, ctx: Any) -> Any:
        ids["nan"] = ctx.store_json_artifact("nan.json", float("nan"))
        ids["inside"] = ctx.store_json_artifact("inside.json", {"ratio": float("inf")})
        ids["value"] = ctx.store_artifact("value.json", ArtifactType.JSON, {"ratio": float("-inf")})
        ids["text"] = ctx.store_artifact("text.json", ArtifactType.JSON, '{"ratio": NaN}')
        ids["fine"] = ctx.store_json_artifact("fine.json", {"ratio": 0.5})
        return state

    kernel = make_kernel()
    result = kernel.execute_graph(GraphBuilder("a").add_node("w", write).set_entry_point("w").compile(), None)
    assert result.state is ExecutionState.COMPLETED
    assert ids == {"nan": None, "inside": None, "value": None, "text": None, "fine": ids["fine"]}
    assert [info.name for info, _ in (_artifacts(kernel).get(a) for a in _artifacts(kernel).items)] == ["fine.json"]
    assert [e.data["name"] for e in _events(kernel).of_type(EventType.ARTIFACT_CREATED)] == ["fine.json"]


# --- item: PII masking covers errors, prompts and reasons -----------------------------------------


def _masked(tenant_id: str = "t") -> TenantContext:
    return TenantContext(tenant_id, pii_masking=True)


def test_an_email_in_an_error_is_masked_in_both_failure_events(make_kernel: Build) -> None:
    def node(state: Any, ctx: Any) -> Any:
        raise ExecutionError.validation(f"no account for {MAIL}", details={"who": MAIL})

    kernel = make_kernel(_masked())
    result = kernel.execute_graph(GraphBuilder("e").add_node("n", node).set_entry_point("n").compile(), None)
    assert result.state is ExecutionState.FAILED
    step_failed = _events(kernel).of_type(EventType.STEP_FAILED)[0].data["error"]
    execution_failed = _events(kernel).of_type(EventType.EXECUTION_FAILED)[0].data["error"]
    for error in (step_failed, execution_failed):
        assert error["message"] == "no account for [email]"
        assert error["details"] == {"who": "[email]"}
        assert error["category"] == "validation"  # what is not content stays as it is
    assert MAIL not in json.dumps([e.to_wire() for e in _events(kernel).events])


def test_an_email_in_a_crash_traceback_is_masked(make_kernel: Build) -> None:
    def node(state: Any, ctx: Any) -> Any:
        raise KeyError(MAIL)

    kernel = make_kernel(_masked())
    kernel.execute_graph(GraphBuilder("e").add_node("n", node).set_entry_point("n").compile(), None)
    assert MAIL not in json.dumps([e.to_wire() for e in _events(kernel).events])


def test_an_email_in_a_wait_prompt_is_masked(make_kernel: Build) -> None:
    def node(state: Any, ctx: Any) -> Any:
        return ctx.interrupt(WaitReason.APPROVAL, prompt=f"send the report to {MAIL}?")

    kernel = make_kernel(_masked())
    result = kernel.execute_graph(GraphBuilder("w").add_node("n", node).set_entry_point("n").compile(), None)
    assert result.state is ExecutionState.WAITING
    waiting = _events(kernel).of_type(EventType.EXECUTION_WAITING)[0].data
    assert waiting["reason"] == "approval"
    assert waiting["detail"]["prompt"] == "send the report to [email]?"
    assert result.prompt["prompt"] == f"send the report to {MAIL}?"  # the caller gets the real one


def test_a_wait_schema_is_not_masked_so_the_answer_it_allows_is_accepted(make_kernel: Build) -> None:
    # The platform checks an answer against the schema of the stored wait (the event's detail):
    # masked, the enum would hold "[email]" and refuse the real answer.
    schema = {"type": "string", "enum": [MAIL, "+44 20 7946 0958"], "description": f"or ask {MAIL}"}

    def node(state: Any, ctx: Any) -> Any:
        return ctx.interrupt(WaitReason.USER_INPUT, prompt=f"which queue, {MAIL}?", schema=schema)

    kernel = make_kernel(_masked())
    result = kernel.execute_graph(GraphBuilder("w").add_node("n", node).set_entry_point("n").compile(), None)
    assert result.state is ExecutionState.WAITING
    detail = _events(kernel).of_type(EventType.EXECUTION_WAITING)[0].data["detail"]
    assert detail["schema"] == schema
    assert detail["prompt"] == "which queue, [email]?"


def test_an_email_in_a_pause_or_cancel_reason_is_masked(make_kernel: Build) -> None:
    def node(state: Any, ctx: Any) -> Any:
        kernel.inbox().push(kernel.execution_id, ControlMessage(ControlAction.PAUSE, "ops", f"asked by {MAIL}"))  # type: ignore[union-attr]
        return state

    kernel = make_kernel(_masked())
    result = kernel.execute_graph(GraphBuilder("p").add_node("n", node).set_entry_point("n").compile(), None)
    assert result.state is ExecutionState.PAUSED
    assert _events(kernel).of_type(EventType.EXECUTION_PAUSED)[0].data["reason"] == "asked by [email]"

    kernel.cancel_execution(f"cancelled for {MAIL}")
    assert _events(kernel).of_type(EventType.EXECUTION_CANCELLED)[0].data["reason"] == "cancelled for [email]"
    assert MAIL not in json.dumps([e.to_wire() for e in _events(kernel).events])


def test_an_email_in_a_policy_decision_is_masked_in_every_detail(make_kernel: Build) -> None:
    # The http node adds the call it decided on (method, url, body) to its policy decisions.
    def node(state: Any, ctx: Any) -> Any:
        ctx.policy_decision(
            "allow",
            "http",
            f"allowed for {MAIL}",
            method="POST",
            url=f"https://api.example.org/users?email={MAIL}",
            body={"to": [MAIL], "note": f"call +44 20 7946 0958 or {MAIL}"},
            limit="max_steps",
        )
        return state

    kernel = make_kernel(_masked())
    kernel.execute_graph(GraphBuilder("p").add_node("n", node).set_entry_point("n").compile(), None)
    data = _events(kernel).of_type(EventType.POLICY_DECISION)[0].data
    assert data == {
        "decision": "allow",
        "tool_name": "http",
        "reason": "allowed for [email]",
        "method": "POST",
        "url": "https://api.example.org/users?email=[email]",
        "body": {"to": ["[email]"], "note": "call [phone] or [email]"},
        "limit": "max_steps",
    }
    assert MAIL not in json.dumps([e.to_wire() for e in _events(kernel).events])


def test_without_masking_errors_and_reasons_are_left_alone(make_kernel: Build) -> None:
    def node(state: Any, ctx: Any) -> Any:
        raise ExecutionError.validation(f"no account for {MAIL}")

    kernel = make_kernel(TenantContext("t"))
    kernel.execute_graph(GraphBuilder("e").add_node("n", node).set_entry_point("n").compile(), None)
    assert _events(kernel).of_type(EventType.EXECUTION_FAILED)[0].data["error"]["message"] == f"no account for {MAIL}"


def test_a_broken_processor_redacts_only_the_content_of_a_lifecycle_event() -> None:
    class Broken:
        name = "broken"

        def process(self, event: StreamEvent) -> StreamEvent:
            raise ValueError("boom")

    sink = InMemoryEventSink()
    protected = ProtectedEventEmitter(EventEmitter(sink), [PiiMaskingProcessor(), Broken()])
    error = ExecutionError.validation(f"no account for {MAIL}", details={"who": MAIL, "n": 3}).to_dict()
    protected.emit(StreamEvent(EventType.EXECUTION_FAILED, "exec_x", _now(), {"error": error}))
    data = sink.events[0].data
    assert data["error"]["message"] == "[redacted]"
    assert data["error"]["details"] == {"who": "[redacted]", "n": 3}
    assert data["error"]["category"] == "validation"
    assert ExecutionError.from_dict(data["error"]).message == "[redacted]"  # still a readable error
    assert error["message"] == f"no account for {MAIL}"  # the event's own data is not changed


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
