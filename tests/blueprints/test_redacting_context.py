"""A blueprint node's context redacts the run's secrets from everything it hands to the kernel:
every way a node can store or emit content goes through the redaction, none around it."""

from __future__ import annotations

import inspect
import json
from typing import Any

from executions.blueprints.redaction import RedactingContext, Redactor
from executions.kernel import (
    ExecutionKernel,
    ExecutionState,
    GraphBuilder,
    InMemoryArtifactStore,
    TenantContext,
)
from executions.kernel.memory import InMemoryEventSink
from executions.kernel.node import NodeContext

SECRET = "s3cr3t-token-value"


def test_a_json_artifact_is_redacted() -> None:
    store = InMemoryArtifactStore()
    sink = InMemoryEventSink()

    def node(state: Any, ctx: Any) -> Any:
        redacting = RedactingContext(ctx, Redactor([SECRET]))
        redacting.store_json_artifact(
            "echo.json", {"header": SECRET, SECRET: [f"Bearer {SECRET}"]}, metadata={"k": SECRET}
        )
        redacting.store_json_artifact("plain.json", f"token={SECRET}")
        return state

    kernel = ExecutionKernel.new(TenantContext("t")).with_event_sink(sink).with_artifact_store(store)
    result = kernel.execute_graph(GraphBuilder("g").add_node("n", node).set_entry_point("n").compile(), None)
    assert result.state is ExecutionState.COMPLETED
    stored = {info.name: (info, content) for info, content in (store.get(a) for a in store.items)}
    info, content = stored["echo.json"]
    assert json.loads(content) == {"header": "[redacted]", "[redacted]": ["Bearer [redacted]"]}
    assert info.metadata == {"k": "[redacted]"}
    assert json.loads(stored["plain.json"][1]) == "token=[redacted]"
    assert SECRET not in json.dumps([e.to_wire() for e in sink.events])


# What a node's context offers that carries no content of the node's: these need no redaction.
_NO_CONTENT = {
    "cancellation",
    "has_answer",
    "is_cancelled",
    "record_discovered_step",
    "record_steps",
    "record_usage",
    "sleep",
    "steps_used",
}


def test_every_way_of_handing_content_to_the_kernel_is_redacted() -> None:
    # A method added to NodeContext would reach node code through __getattr__, unredacted.
    public = {name for name in dir(NodeContext) if not name.startswith("_")}
    public -= set(NodeContext.__slots__)  # plain attributes: ids, the node's name, its messages
    handed_over = {name for name in public - _NO_CONTENT if callable(getattr(NodeContext, name))}
    assert handed_over, "NodeContext has no method that hands content over?"
    redacted = {name for name, _ in inspect.getmembers(RedactingContext, inspect.isfunction)}
    assert handed_over <= redacted, f"not redacted: {sorted(handed_over - redacted)}"
