"""The demo tenant's blueprints: they run offline, on the demo model provider.

``demo-triage`` shows every part a tenant typically combines: an agent (``llm`` with a tool) that
researches the request, a ``map`` that runs the ``demo-summarize`` blueprint for each item, a
``router``, an approval (``wait``) and a ``template`` that assembles the answer.
Their input schemas list ``examples``, inputs they run with; the tests run each of them
(``tests/blueprints/test_builtins.py``).
"""

from __future__ import annotations

from typing import Any

DEMO_SUMMARIZE: dict[str, Any] = {
    "description": "Summarize one piece of text with the demo model.",
    "input_schema": {"type": "string", "maxLength": 2000, "examples": ["The parcel came two days late."]},
    "entry": "summarize",
    "nodes": {
        "summarize": {
            "kind": "llm",
            "config": {"provider": "demo", "model": "demo", "prompt": "Summarize: {{ input }}"},
        },
    },
    "edges": [{"from": "summarize", "to": "end"}],
}

DEMO_TRIAGE: dict[str, Any] = {
    "description": "An agent researches a request with a tool, each item is summarized, then an answer "
    "is published (after approval when asked for, or when there is much to read).",
    "input_schema": {
        "type": "object",
        "properties": {
            "request": {"type": "string", "minLength": 1, "maxLength": 500},
            "items": {"type": "array", "maxItems": 20, "items": {"type": "string", "maxLength": 2000}},
        },
        "required": ["request"],
        "additionalProperties": False,
        # The normal path (published at once), and one that asks for approval first.
        "examples": [
            {"request": "When is my refund paid?", "items": ["late parcel", "broken lid"]},
            {"request": "Please approve my refund"},
        ],
    },
    "entry": "research",
    "nodes": {
        "research": {
            "kind": "llm",
            "description": "An agent that may look things up",
            "config": {
                "provider": "demo",
                "model": "demo",
                "system": "You answer support requests. Look facts up before answering.",
                "prompt": "{{ input.request }}",
                "tools": [{"name": "lookup", "function": "demo.lookup"}],
                "max_rounds": 4,
            },
        },
        "summaries": {
            "kind": "map",
            "config": {"items": "default(input.items, [])", "blueprint": "demo-summarize", "concurrency": 3},
        },
        "route": {
            "kind": "router",
            "config": {
                "cases": [
                    {"when": "contains(lower(input.request), 'approve') or len(state.summaries) > 2", "to": "review"}
                ],
                "default": "publish",
            },
        },
        "review": {
            "kind": "wait",
            "config": {"mode": "approval", "prompt": "Publish the answer to: {{ input.request }}?"},
        },
        "publish": {
            "kind": "template",
            "config": {
                "template": {
                    "answer": "{{ state.research.text }}",
                    "summaries": "{{ state.summaries }}",
                    "approved": "{{ default(state.review.approved, true) }}",
                }
            },
        },
    },
    "edges": [
        {"from": "research", "to": "summaries"},
        {"from": "summaries", "to": "route"},
        {"from": "review", "to": "publish"},
        {"from": "publish", "to": "end"},
    ],
}

DEMO_BLUEPRINTS = {"demo-summarize": DEMO_SUMMARIZE, "demo-triage": DEMO_TRIAGE}  # in the order they are saved
