"""Child executions: a blueprint node starts one, and its end answers the parent that waits."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from enact_platform.locks import locked
from executions import queue
from executions.models import Execution, Step
from executions.selectors import waiting_event_seq
from executions.services.submit import execution_submit


def execution_spawn_child(
    *, parent: Execution, blueprint: str, version: int | None, input: Any, inherit_inbox: bool, node: str
) -> Execution:
    """Submit a child of ``parent`` (same tenant, its quotas) for its node ``node``: linked to it,
    cancelled with it, and, with ``inherit_inbox``, reading its parent's inbox as well as its own.

    Idempotent per visit of the node: the key counts the node's completed steps so far, which a
    rerun of the same visit (a worker that died before the wait was stored) finds unchanged."""
    visits = Step.objects.filter(execution=parent, name=node, state="completed").count()
    child, _ = execution_submit(
        tenant=parent.tenant,
        blueprint=blueprint,
        version=version,
        input=input,
        idempotency_key=f"child:{parent.pk}:{visits}:{node}"[:200],
        metadata={"inherit_inbox": bool(inherit_inbox)},
        parent=parent,
    )
    return child


def execution_child_ended(*, child_id: str) -> bool:
    """Answer the parent that waits for this (ended) child with how it ended; it resumes. Returns
    whether a parent was answered. Called when a child ends and when a parent starts to wait, so
    whichever comes second answers."""
    child = Execution.objects.filter(pk=child_id).first()
    if child is None or child.parent_id is None or not child.is_terminal:
        return False
    with transaction.atomic():
        parent = locked(Execution.objects.filter(pk=child.parent_id), no_key=True).get()
        if parent.child_waited_for != child.pk:
            return False
        # The wait's seq is the question's identity: a second delivery (the child's release and the
        # parent's both found it ended) must not answer it again, nor a later wait of the parent.
        waiting_seq = waiting_event_seq(execution_id=parent.pk)
        if parent.resume_requested or parent.answered_wait_seq == waiting_seq:
            return False
        answer = {"child_id": child.pk, "state": child.state, "output": child.output, "error": child.error}
        Execution.objects.filter(pk=parent.pk).update(
            resume_requested=True, resume_input={"value": answer}, answered_wait_seq=waiting_seq
        )
        queue.enqueue_after_commit(parent.pk)
    return True
