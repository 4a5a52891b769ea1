"""The reaper: hands on work whose worker died (an expired lease, an execution running with no
lease, a task lost on its way) so it resumes from its last checkpoint on another worker."""

from __future__ import annotations

from django.db.models import Q
from django.utils import timezone

from executions import queue
from executions.models import Execution
from executions.services.children import execution_child_ended

S = Execution.State


def executions_reap() -> dict[str, int]:
    """Hand on work whose worker died: clear expired leases (whatever the state: a worker can
    die between pausing an execution and letting it go), then enqueue what can run."""
    now = timezone.now()
    expired = list(
        Execution.objects.exclude(lease_owner="").filter(lease_expires_at__lt=now).values_list("pk", flat=True)[:500]
    )
    # Clear the dead leases only where nobody re-claimed the execution meanwhile.
    Execution.objects.filter(pk__in=expired, lease_expires_at__lt=now).update(lease_owner="", lease_expires_at=None)
    # A child whose worker died after it ended, before it let go, still owes its parent an answer.
    for child_id in (
        Execution.objects.filter(pk__in=expired, state__in=Execution.TERMINAL)
        .exclude(parent=None)
        .values_list("pk", flat=True)
    ):
        execution_child_ended(child_id=child_id)
    # Running with no lease at all: its worker was fenced off or died between run and release.
    unowned = Execution.objects.filter(state=S.RUNNING, lease_owner="")
    orphaned = set(
        Execution.objects.filter(pk__in=expired)
        .filter(Q(state__in=(S.RUNNING, S.QUEUED)) | Q(resume_requested=True, state__in=(S.PAUSED, S.WAITING)))
        .values_list("pk", flat=True)
    ) | set(unowned.values_list("pk", flat=True)[:500])
    queue.enqueue_runs(sorted(orphaned))
    resumable = list(
        Execution.objects.filter(lease_owner="", resume_requested=True, state__in=(S.PAUSED, S.WAITING))
        .exclude(pk__in=orphaned)
        .values_list("pk", flat=True)[:500]
    )
    queue.enqueue_runs(resumable)
    # Queued work needs no re-enqueueing (the execution table is the queue), only workers that
    # know of it: one wake-up, in case theirs was lost.
    requeued = Execution.objects.filter(lease_owner="", state=S.QUEUED).count()
    if requeued:
        queue.work_ready()
    return {"orphaned": len(orphaned), "expired_leases": len(expired), "requeued": requeued, "resumed": len(resumable)}
