"""django-q2 entry points: thin, by id."""

from __future__ import annotations

from django.utils import timezone
from django_q.tasks import async_task

from executions import services, worker
from executions.models import Execution


def run_execution(execution_id: str) -> str:
    return worker.execution_run(execution_id)


def reap() -> dict[str, int]:
    return services.executions_reap()


def enqueue_run(execution_id: str) -> None:
    Execution.objects.filter(pk=execution_id).update(enqueued_at=timezone.now())
    async_task("executions.tasks.run_execution", execution_id, task_name=f"run {execution_id}"[:100], ack_failure=True)
