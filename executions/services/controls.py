"""What a tenant does to its executions once they run: cancel, pause, resume, answer a wait,
post to the inbox, cancel many at once. Each takes the tenant explicitly."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from django.db import transaction
from django.utils import timezone

from enact_platform.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from enact_platform.locks import locked
from executions import queue, wakeups
from executions.kernel.inbox import message_from_dict, message_to_dict
from executions.models import Execution
from executions.persistence.kernels import kernel_for
from executions.persistence.stores import DjangoInboxStore
from executions.registry import validate_input
from executions.selectors import execution_get, waiting_event_seq
from executions.services.children import execution_child_ended
from tenants.models import Tenant

S = Execution.State
# A wait for a child is answered by the child's end, not by an operator's resume.
RESUMABLE_WAITS = {"rate_limit", "external", "checkpoint", "cost_threshold", "memory_pressure"}
INPUT_WAITS = {"approval", "user_input"}


def execution_cancel(*, tenant: Tenant, execution_id: str, reason: str = "", actor: str = "") -> Execution:
    """Cancel at once if no worker holds the execution; otherwise record the request durably and
    let the worker's watcher cancel the running step. Cancelling a terminal execution changes
    nothing and returns it. The returned execution's ``had_ended`` says which it was, as seen
    under the row's lock."""
    reason = _text(reason, "reason") or (f"cancelled by {actor}" if actor else "cancelled")
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    with transaction.atomic():
        execution = locked(Execution.objects.filter(pk=execution.pk), no_key=True).get()
        if execution.is_terminal:
            execution.had_ended = True  # type: ignore[attr-defined]
            return execution
        if execution.has_live_lease:
            Execution.objects.filter(pk=execution.pk, cancel_requested_at__isnull=True).update(
                cancel_requested_at=timezone.now(), cancel_reason=reason
            )
            wakeups.execution_news_after_commit(execution.pk)  # its worker cancels the running step
        else:
            kernel_for(execution).cancel_execution(reason)
            Execution.objects.filter(pk=execution.pk).update(cancel_requested_at=timezone.now(), cancel_reason=reason)
            if execution.parent_id:
                transaction.on_commit(partial(_tell_parent, execution.pk))
        cancel_children = list(
            Execution.objects.filter(parent=execution)
            .exclude(state__in=Execution.TERMINAL)
            .values_list("pk", flat=True)
        )
    for child_id in cancel_children:
        execution_cancel(tenant=tenant, execution_id=child_id, reason=f"parent cancelled: {reason}", actor=actor)
    if not execution.has_live_lease:
        queue.dispatch_after_commit(tenant.pk)
    execution.refresh_from_db()
    execution.had_ended = False  # type: ignore[attr-defined]
    return execution


def execution_pause(*, tenant: Tenant, execution_id: str, reason: str = "", actor: str = "") -> Execution:
    """Ask a running execution to pause at its next step boundary."""
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    if execution.state != S.RUNNING:
        raise Conflict(f"cannot pause an execution that is {execution.state}", details={"state": execution.state})
    message = {
        "kind": "control",
        "action": "pause",
        "actor": actor or "unknown",
        "reason": _text(reason, "reason") or None,
    }
    DjangoInboxStore(tenant.pk).push(execution.pk, message_from_dict(message))
    wakeups.execution_news(execution.pk)
    return execution


def execution_resume(*, tenant: Tenant, execution_id: str, actor: str = "") -> Execution:
    """Resume a paused execution, or one waiting on something an operator can wave through
    (a cost alert, a rate limit); it continues from its checkpoint on a worker."""
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    with transaction.atomic():
        execution = locked(Execution.objects.filter(pk=execution.pk), no_key=True).get()
        if execution.state == S.WAITING and execution.wait_reason in INPUT_WAITS:
            raise Conflict(
                f"execution is waiting for {execution.wait_reason}; answer it with input",
                details={"state": execution.state, "wait_reason": execution.wait_reason},
            )
        if execution.state not in (S.PAUSED, S.WAITING):
            raise Conflict(f"cannot resume an execution that is {execution.state}", details={"state": execution.state})
        if execution.state == S.WAITING and execution.wait_reason not in RESUMABLE_WAITS:
            raise Conflict(
                f"cannot resume an execution waiting for {execution.wait_reason}: it goes on when that ends",
                details={"state": execution.state, "wait_reason": execution.wait_reason},
            )
        if not execution.resume_requested:
            Execution.objects.filter(pk=execution.pk).update(resume_requested=True, resume_input=None)
            queue.enqueue_after_commit(execution.pk)
    execution.refresh_from_db()
    return execution


def execution_provide_input(
    *, tenant: Tenant, execution_id: str, input: Any = None, approve: bool | None = None, actor: str = ""
) -> Execution:
    """Answer an execution waiting for user input or approval; it resumes with the answer."""
    if approve is not None and not isinstance(approve, bool):
        raise InvalidInput("approve must be true or false")
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    with transaction.atomic():
        execution = locked(Execution.objects.filter(pk=execution.pk), no_key=True).get()
        if execution.state != S.WAITING or execution.wait_reason not in INPUT_WAITS:
            raise Conflict(
                "execution is not waiting for input or approval",
                details={"state": execution.state, "wait_reason": execution.wait_reason},
            )
        waiting_seq = waiting_event_seq(execution_id=execution.pk)
        if execution.resume_requested or execution.answered_wait_seq == waiting_seq:
            raise Conflict("execution was already answered and is resuming")
        if execution.wait_reason == "approval":
            if approve is None:
                raise InvalidInput("an approval needs approve: true or false")
            answer: Any = {"approved": approve, "input": input, "actor": actor}
        else:
            schema = (execution.wait_detail or {}).get("schema")
            if schema:
                validate_input(schema, input)
            answer = input
        Execution.objects.filter(pk=execution.pk).update(
            resume_requested=True, resume_input={"value": answer}, answered_wait_seq=waiting_seq
        )
        queue.enqueue_after_commit(execution.pk)
    execution.refresh_from_db()
    return execution


def execution_post_inbox(*, tenant: Tenant, execution_id: str, message: dict[str, Any], actor: str = "") -> str:
    """Post guidance, evidence or an agent message for the execution's next step boundary.

    The message records who posted it (``actor``), whatever names it carries inside."""
    if not isinstance(message, dict) or message.get("kind") not in ("guidance", "evidence", "a2a"):
        raise InvalidInput("kind must be one of guidance, evidence, a2a")
    data = {k: v for k, v in message.items() if k != "id"}
    if data["kind"] == "guidance" and actor:
        data["sender"] = actor
    for name in _INBOX_SHORT_FIELDS:
        if name in data and not (isinstance(data[name], str) and 0 < len(data[name]) <= 200):
            raise InvalidInput(f"{name} must be a string of 1 to 200 characters")
    try:
        parsed = message_from_dict(data)
        stored = json.dumps(message_to_dict(parsed), allow_nan=False)  # NaN and infinity are not JSON
    except (KeyError, ValueError, TypeError) as exc:
        missing = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise InvalidInput(f"invalid {data['kind']} message: {missing}") from None
    if len(stored.encode()) > 64 * 1024:
        raise PayloadTooLarge("inbox messages are limited to 64 KiB")
    execution = execution_get(tenant=tenant, execution_id=execution_id)
    if execution.is_terminal:
        raise Conflict(f"execution is {execution.state}; it reads no more messages", details={"state": execution.state})
    DjangoInboxStore(tenant.pk).push(execution.pk, parsed, actor=actor)
    wakeups.execution_news(execution.pk)
    return parsed.id


# Names and labels inside inbox messages; longer ones are refused, not truncated.
_INBOX_SHORT_FIELDS = ("sender", "source", "title", "from_agent", "message_type", "priority", "impact")


def executions_bulk_cancel(
    *,
    tenant: Tenant,
    ids: list[str] | None = None,
    filter: dict[str, Any] | None = None,
    reason: str = "",
    actor: str = "",
) -> dict[str, int]:
    """Cancel many executions of one tenant, by ids or by a filter; returns counts."""
    if (ids is None) == (filter is None):
        raise InvalidInput("give either ids or filter")
    counts = {"cancelled": 0, "cancel_requested": 0, "already_terminal": 0, "not_found": 0}
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 1000:
            raise InvalidInput("ids must be a list of up to 1000 execution ids")
        targets = ids
    else:
        targets = _ids_matching(tenant, filter)
    for execution_id in dict.fromkeys(targets):
        try:
            before = execution_get(tenant=tenant, execution_id=execution_id)
        except NotFound:
            counts["not_found"] += 1
            continue
        if before.is_terminal:
            counts["already_terminal"] += 1
            continue
        after = execution_cancel(tenant=tenant, execution_id=execution_id, reason=reason, actor=actor)
        counts["cancelled" if after.state == S.CANCELLED else "cancel_requested"] += 1
    return counts


def _ids_matching(tenant: Tenant, filter: dict[str, Any] | None) -> list[str]:
    if not isinstance(filter, dict) or not filter or set(filter) - {"state", "graph", "blueprint"}:
        raise InvalidInput("filter takes state and/or blueprint")
    rows = Execution.objects.filter(tenant=tenant).exclude(state__in=Execution.TERMINAL)
    if "state" in filter:
        if filter["state"] not in S.values:
            raise InvalidInput(f"unknown state {filter['state']!r}")
        rows = rows.filter(state=filter["state"])
    blueprint = filter.get("blueprint", filter.get("graph"))  # "graph": the name it had first
    if blueprint is not None:
        rows = rows.filter(blueprint=blueprint)
    return list(rows.values_list("pk", flat=True)[:1000])


def _text(value: Any, name: str, maximum: int = 500) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string")
    if len(value) > maximum:
        raise InvalidInput(f"{name} must be at most {maximum} characters")
    return value.strip()


def _tell_parent(child_id: str) -> None:
    execution_child_ended(child_id=child_id)
