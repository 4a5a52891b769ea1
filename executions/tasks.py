"""django-q2 entry points, by dotted name (``executions.queue`` enqueues them): thin, by id."""

from __future__ import annotations

from executions.runtime.run import execution_run


def run_execution(execution_id: str) -> str:
    return execution_run(execution_id)
