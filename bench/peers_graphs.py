"""The LangGraph graphs of ``bench.peers``: what LangGraph's Agent Server serves and what the library runs.

Every node stamps the wall clock (``time.time()``, the machine's one clock, which the client
reads too) when it starts and ends, so pickup, start delay and peak running come from the
node's own stamps, not from the server's bookkeeping.

- ``slow``: one node that waits ``seconds`` with ``asyncio.sleep`` (the Agent Server's idiom for
  a node that waits on I/O; a sync node would hold one of its few executor threads);
- ``blocked``: one node that waits 60 s, the cancel workload's long call;
- ``chain``: ``CHAIN_STEPS`` trivial nodes, each adding one; the first stamps ``started`` and the
  last ``ended``.
"""

from __future__ import annotations

import asyncio
import time
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

CHAIN_STEPS = 10
BLOCKED_SECONDS = 60.0


class Slow(TypedDict, total=False):
    seconds: float
    started: float
    ended: float


class Chain(TypedDict, total=False):
    n: int
    started: float
    ended: float


async def _wait(state: Slow) -> Slow:
    started = time.time()
    await asyncio.sleep(state.get("seconds", 0.0))
    return {"started": started, "ended": time.time()}


async def _block(state: Slow) -> Slow:
    started = time.time()
    await asyncio.sleep(BLOCKED_SECONDS)
    return {"started": started, "ended": time.time()}


def _slow_graph(node: object) -> StateGraph:
    builder = StateGraph(Slow)
    builder.add_node("wait", node)  # type: ignore[call-overload]
    builder.add_edge(START, "wait")
    builder.add_edge("wait", END)
    return builder


def chain_builder(steps: int = CHAIN_STEPS) -> StateGraph:
    """``steps`` nodes in a row, each ``n + 1``; stamps at the first and the last."""

    def step(i: int):  # type: ignore[no-untyped-def]
        def run(state: Chain) -> Chain:
            out: Chain = {"n": state.get("n", 0) + 1}
            if i == 0:
                out["started"] = time.time()
            if i == steps - 1:
                out["ended"] = time.time()
            return out

        return run

    builder = StateGraph(Chain)
    for i in range(steps):
        builder.add_node(f"s{i}", step(i))
    builder.add_edge(START, "s0")
    for i in range(steps - 1):
        builder.add_edge(f"s{i}", f"s{i + 1}")
    builder.add_edge(f"s{steps - 1}", END)
    return builder


# What the Agent Server's langgraph.json names (it compiles them itself, with its own checkpointer).
slow = _slow_graph(_wait).compile()
blocked = _slow_graph(_block).compile()
chain = chain_builder().compile()
