"""The built-in blueprints, written in Python: always present, for demos, tests and benchmarks
(API.md's built-in graphs).

Each input schema lists ``examples``: inputs its normal path runs with (an approval it waits for
approved). The tests run every built-in with each of them (``tests/blueprints/test_builtins.py``)."""

from __future__ import annotations

import re
import time
from typing import Any

from executions.blueprints.functions import blueprint_function
from executions.kernel import (
    ArtifactType,
    Backoff,
    CompiledGraph,
    ExecutionError,
    GraphBuilder,
    NodeContext,
    RetryPolicy,
    StepType,
    WaitReason,
)
from executions.registry import blueprint

# --- demo.pipeline ---------------------------------------------------------------------------


def _normalize(state: Any, ctx: NodeContext) -> Any:
    return {"text": " ".join(state["text"].split())}


def _analyze(state: Any, ctx: NodeContext) -> Any:
    words = re.findall(r"[\w']+", state["text"].lower())
    counts: dict[str, int] = {}
    for word in words:
        counts[word] = counts.get(word, 0) + 1
    top = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:5]
    return {**state, "words": len(words), "top_words": [{"word": w, "count": c} for w, c in top]}


def _report(state: Any, ctx: NodeContext) -> Any:
    summary = f"{state['words']} words; most frequent: " + ", ".join(t["word"] for t in state["top_words"])
    text_id = ctx.store_artifact("summary.txt", ArtifactType.TEXT, summary)
    json_id = ctx.store_artifact(
        "analysis.json", ArtifactType.JSON, {"words": state["words"], "top_words": state["top_words"]}
    )
    return {"summary": summary, "artifacts": [a for a in (text_id, json_id) if a]}


@blueprint(
    "demo.pipeline",
    description="Normalizes text, counts its words, and stores a text and a JSON artifact.",
    input_schema={
        "type": "object",
        "properties": {"text": {"type": "string", "maxLength": 100_000}},
        "required": ["text"],
        "additionalProperties": False,
        "examples": [{"text": "hello hello world"}],
    },
)
def demo_pipeline(input: Any) -> CompiledGraph:
    return (
        GraphBuilder("demo.pipeline")
        .add_node("normalize", _normalize, description="collapse white space")
        .add_node("analyze", _analyze, description="count words")
        .add_node("report", _report, description="store the summary and the analysis")
        .add_edge("normalize", "analyze")
        .add_edge("analyze", "report")
        .set_entry_point("normalize")
        .compile()
    )


# --- demo.slow -------------------------------------------------------------------------------


def _slow_step(state: Any, ctx: NodeContext) -> Any:
    time.sleep(state["seconds"])  # one blocking call on purpose: cancel must not wait for it
    return {**state, "done": state.get("done", 0) + 1}


@blueprint(
    "demo.slow",
    description="`steps` steps that each block for `seconds`; for trying cancel and pause.",
    input_schema={
        "type": "object",
        "properties": {
            "steps": {"type": "integer", "minimum": 1, "maximum": 1000},
            "seconds": {"type": "number", "minimum": 0, "maximum": 3600},
        },
        "required": ["steps", "seconds"],
        "additionalProperties": False,
        "examples": [{"steps": 2, "seconds": 0}],
    },
)
def demo_slow(input: Any) -> CompiledGraph:
    return _chain("demo.slow", int(input["steps"]), _slow_step, "step")


# --- demo.fanout -----------------------------------------------------------------------------


def _fan_start(state: Any, ctx: NodeContext) -> Any:
    return {"branches": state["branches"]}


def _fan_branch(state: Any, ctx: NodeContext) -> Any:
    index = int(ctx.node.rsplit("_", 1)[1])
    return {"branch": index, "square": index * index}


def _fan_join(state: Any, ctx: NodeContext) -> Any:
    return {"branches": len(state), "sum_of_squares": sum(r["square"] for r in state.values())}


@blueprint(
    "demo.fanout",
    description="Fans out into `branches` parallel branches and joins them.",
    input_schema={
        "type": "object",
        "properties": {"branches": {"type": "integer", "minimum": 2, "maximum": 32}},
        "required": ["branches"],
        "additionalProperties": False,
        "examples": [{"branches": 3}],
    },
)
def demo_fanout(input: Any) -> CompiledGraph:
    builder = GraphBuilder("demo.fanout").add_node("start", _fan_start).add_node("join", _fan_join)
    for i in range(1, int(input["branches"]) + 1):
        builder.add_node(f"branch_{i}", _fan_branch).add_edge("start", f"branch_{i}").add_edge(f"branch_{i}", "join")
    return builder.set_entry_point("start").compile()


# --- demo.approval ---------------------------------------------------------------------------


def _draft(state: Any, ctx: NodeContext) -> Any:
    return {"draft": "Quarterly report, ready for review."}


def _approve(state: Any, ctx: NodeContext) -> Any:
    answer = ctx.interrupt(WaitReason.APPROVAL, prompt=f"Approve publishing: {state['draft']!r}?")
    approved = bool(answer.get("approved")) if isinstance(answer, dict) else bool(answer)
    note = answer.get("input") if isinstance(answer, dict) else None
    return {**state, "approved": approved, "note": note}


def _finish(state: Any, ctx: NodeContext) -> Any:
    return {"published": state["approved"], "note": state["note"]}


@blueprint(
    "demo.approval",
    description="A step, then waits for approval, then a final step.",
    input_schema={"type": "object", "additionalProperties": False, "examples": [{}]},
)
def demo_approval(input: Any) -> CompiledGraph:
    return (
        GraphBuilder("demo.approval")
        .add_node("draft", _draft)
        .add_node("approve", _approve, step_type=StepType.WAIT_NODE)
        .add_node("finish", _finish)
        .add_edge("draft", "approve")
        .add_edge("approve", "finish")
        .set_entry_point("draft")
        .compile()
    )


# --- demo.flaky ------------------------------------------------------------------------------

FLAKY_RETRY = RetryPolicy(max_retries=10, backoff=Backoff.FIXED, base_delay_ms=50, max_delay_ms=50)


def _flaky(state: Any, ctx: NodeContext) -> Any:
    # The attempt number, not a counter in memory, decides: it survives a worker restart.
    if ctx.attempt <= state["failures"]:
        raise ExecutionError.network(
            f"simulated failure {ctx.attempt} of {state['failures']}", retry_policy=FLAKY_RETRY
        )
    return {"succeeded_on_attempt": ctx.attempt}


@blueprint(
    "demo.flaky",
    description="A step that fails `failures` times with a retryable error, then succeeds.",
    input_schema={
        "type": "object",
        "properties": {"failures": {"type": "integer", "minimum": 0, "maximum": 10}},
        "required": ["failures"],
        "additionalProperties": False,
        "examples": [{"failures": 1}],
    },
)
def demo_flaky(input: Any) -> CompiledGraph:
    return GraphBuilder("demo.flaky").add_node("call", _flaky).set_entry_point("call").compile()


# --- demo.chain ------------------------------------------------------------------------------


def _increment(state: Any, ctx: NodeContext) -> Any:
    return state + 1 if isinstance(state, int) else 1


@blueprint(
    "demo.chain",
    description="`n` trivial steps in a chain; for benchmarks.",
    input_schema={
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 10_000}},
        "required": ["n"],
        "additionalProperties": False,
        "examples": [{"n": 3}],
    },
)
def demo_chain(input: Any) -> CompiledGraph:
    return _chain("demo.chain", int(input["n"]), _increment, "n")


def _chain(name: str, n: int, fn: Any, prefix: str) -> CompiledGraph:
    builder = GraphBuilder(name)
    for i in range(1, n + 1):
        builder.add_node(f"{prefix}_{i}", fn)
        if i > 1:
            builder.add_edge(f"{prefix}_{i - 1}", f"{prefix}_{i}")
    return builder.set_entry_point(f"{prefix}_1").set_finish_point(f"{prefix}_{n}").compile()


# --- functions that blueprints call (function nodes, agent tools) ------------------------------

DEMO_FACTS = {
    "refund": "Refunds are paid within 5 working days to the card used for the purchase.",
    "shipping": "Orders ship within 24 hours; delivery takes 2 to 4 days.",
    "warranty": "Every product has a 2-year warranty; repairs are free within it.",
}


@blueprint_function(
    "demo.lookup",
    description="Look up a fact in the demo knowledge base (refunds, shipping, warranty).",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string", "description": "what to look up"}},
        "required": ["query"],
    },
)
def demo_lookup(value: Any, ctx: NodeContext) -> Any:
    query = str(value.get("query", "") if isinstance(value, dict) else value).lower()
    found = [fact for topic, fact in DEMO_FACTS.items() if topic in query]
    return {"query": query, "facts": found or ["No fact found; topics: " + ", ".join(DEMO_FACTS) + "."]}


@blueprint_function(
    "demo.word_count",
    description="Count the words of a text.",
    parameters={"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
)
def demo_word_count(value: Any, ctx: NodeContext) -> Any:
    text = value.get("text", "") if isinstance(value, dict) else str(value)
    return {"words": len(text.split())}
