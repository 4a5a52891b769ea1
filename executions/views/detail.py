"""One execution's page, and the JSON its script asks for about one step (the state a fork from
that step starts from, and for a model's step the conversation it sent)."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from enact_platform.errors import InvalidInput, NotFound
from executions import selectors
from executions.catalog import blueprint_lookup
from executions.kernel.events import EventType
from executions.kernel.ids import IdKind, is_valid_id
from executions.live.groups import STATE_AFTER_EVENT
from executions.models import Execution, Step
from executions.services.derive import FORKABLE_STATES, lane_before
from executions.views.common import Seat, no_tenant, render_page, seat_for

# How an execution came to be, said as a person would.
STEP_END, STEP_FAILED = EventType.STEP_END.value, EventType.STEP_FAILED.value
LLM_EVENTS = (
    EventType.STEP_END,
    EventType.STEP_FAILED,
    EventType.TEXT_DELTA,
    EventType.TOOL_INPUT_AVAILABLE,
    EventType.TOOL_OUTPUT_AVAILABLE,
    EventType.USAGE,
)

ORIGIN_WORDS = {
    Execution.Origin.SUBMIT: "Submitted",
    Execution.Origin.CHILD: "Started by a step of its parent",
    Execution.Origin.SCHEDULE: "Started by a schedule",
    Execution.Origin.RERUN: "A rerun",
    Execution.Origin.FORK: "A fork",
}


@login_required
def execution_page(request: HttpRequest, execution_id: str) -> HttpResponse:
    seat = seat_for(request)
    if seat is None:
        return no_tenant(request)
    if not is_valid_id(execution_id, IdKind.EXECUTION):  # before any query: a NUL is refused by PostgreSQL
        raise Http404("execution not found")
    # The seq first, then what is stored: the page follows the events after that seq, so anything
    # that happens while the page is put together arrives again over the socket, never goes missing.
    last_seq = selectors.last_event_seq(execution_id=execution_id)
    try:
        execution = selectors.execution_get(tenant=seat.tenant, execution_id=execution_id)
    except NotFound:
        raise Http404("execution not found") from None
    steps = list(selectors.execution_steps(tenant=seat.tenant, execution_id=execution.pk))
    limits = seat.tenant.limits
    related = _related(execution)
    failed_step = _failed_step(execution, steps)
    page = {
        "execution": {
            "id": execution.pk,
            "blueprint": execution.blueprint,
            "version": execution.blueprint_version,
            "state": execution.state,
            "wait_reason": execution.wait_reason,
            "wait_detail": execution.wait_detail,
            "usage": execution.usage,
            "input": execution.input,
            "output": execution.output,
            "error": execution.error,
            "created_at": execution.created_at,
            "started_at": execution.started_at,
            "ended_at": execution.ended_at,
            "origin": execution.origin,
        },
        "last_seq": last_seq,
        "steps": [_step_outline(step) for step in steps],
        "child_runs": [_child_run(child) for child in related["children"]],
        "graph": selectors.execution_graph_outline(execution=execution),
        # Where the run goes on from (its latest checkpoint): a paused run's next node.
        "next_nodes": selectors.execution_next_nodes(execution=execution),
        "limits": {
            "steps": limits.max_steps,
            "tokens": limits.max_tokens,
            "cost_usd": float(limits.max_cost_usd) if limits.max_cost_usd is not None else None,
            "wall_time_s": limits.max_wall_time_s,
        },
        "can_operate": seat.can_operate,
        "forkable_states": [str(state) for state in FORKABLE_STATES],
        "tenant": seat.tenant.slug,
        "states": STATE_AFTER_EVENT,
    }
    return render_page(
        request,
        "dashboard/execution.html",
        seat,
        execution=execution,
        origin_words=ORIGIN_WORDS.get(execution.origin, execution.origin),
        failed_step=failed_step,
        steps=steps,
        artifacts=list(selectors.execution_artifacts(tenant=seat.tenant, execution_id=execution.pk)),
        page=page,
        **related,
    )


@login_required
@require_GET
def execution_step_detail(request: HttpRequest, execution_id: str, step_id: str) -> JsonResponse:
    """One step, as the page's fork form and model view need it: the state the step was given
    (what a fork from it starts from, or why it cannot be forked from) and, for a model's step,
    the messages it sent and the reply. The tenant's own executions only: 404 for any other.

    With ``?llm=1`` (the model view's request) only the step and its model exchange: the fork
    state needs the blueprint compiled and the checkpoints read, which that view does not show."""
    seat = seat_for(request)
    if seat is None:
        raise Http404("execution not found")
    execution, step = _tenant_step(seat, execution_id, step_id)
    if request.GET.get("llm") == "1":
        llm = _llm_exchange(execution, step) if step.step_type == "llm_node" else None
        return JsonResponse({"step": _step(step), "llm": llm}, json_dumps_params={"default": str})
    body: dict[str, Any] = {"step": _step(step), "forkable": False, "reason": "", "state": None}
    if step.parent_step_id:
        body["reason"] = (
            f"{step.name} ran inside a parallel branch, a map or a subgraph; fork from the step that started it."
        )
    elif execution.state not in FORKABLE_STATES:
        body["reason"] = f"The execution is {execution.state}; fork it once it has ended, paused or waits."
    try:
        entry = blueprint_lookup(tenant=execution.tenant, name=execution.blueprint, version=execution.blueprint_version)
        lane = lane_before(execution, step, entry, entry.build(execution.input))
    except (InvalidInput, NotFound) as refused:
        body["reason"] = body["reason"] or refused.message
    except (KeyError, TypeError, ValueError):
        body["reason"] = body["reason"] or "No checkpoint of this execution was kept from before that step."
    else:
        body["state"] = lane.state
        body["forkable"] = not body["reason"]
    if step.step_type == "llm_node":
        body["llm"] = _llm_exchange(execution, step)
    return JsonResponse(body, json_dumps_params={"default": str})


def _tenant_step(seat: Seat, execution_id: str, step_id: str) -> tuple[Execution, Step]:
    try:
        return selectors.execution_step(tenant=seat.tenant, execution_id=execution_id, step_id=step_id)
    except NotFound as missing:
        raise Http404(missing.message) from None


def _llm_exchange(execution: Execution, step: Step) -> dict[str, Any]:
    """What a model's step sent and what came back, its tool calls and its tokens and cost. The
    run's state after the step holds the node's conversation; the step's events hold the tool
    calls, their results and the usage."""
    events = selectors.step_events(execution=execution, step=step, types=[t.value for t in LLM_EVENTS])
    ended = next((e["seq"] for e in events if e["type"] in (STEP_END, STEP_FAILED)), None)
    state: Any = None
    if ended is not None:
        after = selectors.checkpoint_after(execution=execution, seq=ended)
        if after is not None:
            state = after.lanes[0].state if len(after.lanes) == 1 else None
        elif execution.is_terminal:
            state = execution.output
    mine = state.get(step.name) if isinstance(state, dict) else None
    messages = mine.get("messages") if isinstance(mine, dict) else None
    output = step.output if isinstance(step.output, dict) else {}
    ran_tools = bool(output.get("awaiting_model"))
    sent, reply = None, None
    if isinstance(messages, list) and messages:
        if ran_tools:  # the tools' results go to the model in the next round
            sent = messages
        else:
            sent, reply = messages[:-1], messages[-1]
    calls: dict[str, dict[str, Any]] = {}
    usage = {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
    text = []
    for event in events:
        data = event["data"] or {}
        if event["type"] == EventType.TOOL_INPUT_AVAILABLE.value:
            calls.setdefault(data.get("tool_call_id", ""), {}).update(
                {"id": data.get("tool_call_id"), "tool": data.get("tool_name"), "input": data.get("input")}
            )
        elif event["type"] == EventType.TOOL_OUTPUT_AVAILABLE.value:
            calls.setdefault(data.get("tool_call_id", ""), {"id": data.get("tool_call_id")}).update(
                {"tool": data.get("tool_name"), "output": data.get("output")}
            )
        elif event["type"] == EventType.USAGE.value:
            delta = data.get("delta") or {}
            for key in usage:
                usage[key] += delta.get(key) or 0
        elif event["type"] == EventType.TEXT_DELTA.value:
            text.append(str(data.get("delta", "")))
    return {
        "sent": sent,
        "reply": reply,
        "text": output.get("text") if isinstance(output.get("text"), str) else "".join(text),
        "requested_tools": output.get("pending") or [],
        "tool_calls": list(calls.values()),
        "usage": usage,
        "model": output.get("model"),
        "last_seq": events[-1]["seq"] if events else 0,
    }


# Children listed and drawn on the page; the list at ?parent= has them all. Reruns and forks of
# it: as many listed, and how many there are in all.
CHILDREN_SHOWN = 200
DERIVED_SHOWN = CHILDREN_SHOWN


def _child_run(child: Execution) -> dict[str, Any]:
    """A child execution as the timeline draws it, under the step of the node that started it
    (the node's name is the last part of the child's idempotency key: ``child:<parent>:<visit>:<node>``)."""
    key = child.idempotency_key or ""
    return {
        "id": child.pk,
        "blueprint": child.blueprint,
        "state": child.state,
        "created_at": child.created_at,
        "started_at": child.started_at,
        "ended_at": child.ended_at,
        "node": key.split(":", 3)[3] if key.startswith("child:") and key.count(":") >= 3 else "",
    }


def _related(execution: Execution) -> dict[str, Any]:
    """Where it came from and what came of it: parent, children, reruns and forks."""
    return {
        "parent": execution.parent,
        "source": execution.source,
        "schedule": execution.schedule,
        "started_by": execution.created_by.get_username() if execution.created_by else "",
        "started_by_key": execution.created_by_key,
        "children": list(
            execution.children.order_by("created_at").only(
                "id", "state", "blueprint", "created_at", "started_at", "ended_at", "idempotency_key"
            )[:CHILDREN_SHOWN]
        ),
        "children_count": execution.children.count(),
        "derived": list(
            execution.derived.order_by("created_at").only("id", "state", "origin", "blueprint", "created_at")[
                :DERIVED_SHOWN
            ]
        ),
        "derived_count": execution.derived.count(),
    }


def _failed_step(execution: Execution, steps: list[Step]) -> Step | None:
    error = execution.error if isinstance(execution.error, dict) else {}
    step_id = error.get("step_id")
    if step_id:
        found = next((s for s in steps if s.pk == step_id), None)
        if found is not None:
            return found
    if execution.state == Execution.State.FAILED:
        return next((s for s in reversed(steps) if s.state == "failed"), None)
    return None


# A step's output is put in the page up to this many bytes of JSON; a bigger one is shown by its
# start and read whole when the reader opens it (a run of thousands of model steps would
# otherwise put megabytes of replies into the page before anything is drawn).
PAGE_OUTPUT_BYTES = 2000


def _step_outline(step: Step) -> dict[str, Any]:
    """A step as the page starts from: everything but an output too big to send up front."""
    outline = _step(step)
    if step.output is None:
        return outline
    text = json.dumps(step.output, default=str, separators=(",", ":"))
    if len(text.encode()) > PAGE_OUTPUT_BYTES:
        outline["output"] = None
        outline["output_cut"] = True
        outline["output_preview"] = text[:200]
        outline["interrupted"] = isinstance(step.output, dict) and bool(step.output.get("interrupted"))
    return outline


def _step(step: Step) -> dict[str, Any]:
    return {
        "id": step.pk,
        "name": step.name,
        "step_type": step.step_type,
        "state": step.state,
        "attempt": step.attempt,
        "parent_step_id": step.parent_step_id,
        "started_at": step.started_at,
        "ended_at": step.ended_at,
        "duration_ms": step.duration_ms,
        "output": step.output,
        "error": step.error,
    }
