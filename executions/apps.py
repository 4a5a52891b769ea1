from __future__ import annotations

import os

from django.apps import AppConfig
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.db import close_old_connections, connections
from django.utils.module_loading import autodiscover_modules

from executions.kernel.runner import default_pool
from executions.persistence.connections import forget_after_fork, give_back


class ExecutionsConfig(AppConfig):
    name = "executions"

    def ready(self) -> None:
        # Graphs defined in code: every installed app's graphs.py registers its own.
        autodiscover_modules("graphs")

        # The kernel runs a graph (and its store I/O) on runner threads, which keep their own
        # database connections; drop broken or expired ones before each job, and give a pooled
        # one back after it.
        default_pool.before_job.append(close_old_connections)
        default_pool.after_job.append(give_back)
        # A forked process must not use its parent's connections (django-q2 forks its workers).
        os.register_at_fork(after_in_child=forget_after_fork)

        # Under ASGI every request runs on a thread of its own, so a kept connection would be
        # left behind by each one until PostgreSQL refuses more clients: close at the end.
        request_finished.connect(_close_after_asgi_request, dispatch_uid="enact-close-after-asgi-request")

        # A tenant's usage reports how many of its executions run and wait; tenants never
        # imports executions, so the reader is handed to it. Imported here: it needs the models.
        from executions.selectors import tenant_activity
        from tenants.selectors import tenant_activity_reader_register  # beside the import above

        tenant_activity_reader_register(tenant_activity)

        # django-q2's worker processes run executions in slots (runtime/slots.py); its other
        # processes (the sentinel, the pusher, the monitor) run none.
        from django_q.signals import post_spawn  # here: django_q's signals module loads its models

        post_spawn.connect(_worker_process_started, dispatch_uid="enact-worker-process-started")

        # Traces, when OTEL_EXPORTER_OTLP_ENDPOINT is set; worker processes set theirs up again
        # after the fork. Imported here: it needs the models.
        from executions.ops import tracing

        tracing.setup()


def _worker_process_started(sender: object, proc_name: str = "", **kwargs: object) -> None:
    """In each django-q2 worker process, as it starts: its monitor (cancels, leases, reaping) and
    its slots, and a graceful stop on SIGTERM (``runtime/slots.py``).

    Not in a process that runs a task inline (``ENACT_QUEUE_SYNC``): django-q2 sends the signal
    there too, and slots started in a script would race its inline run for the execution and go
    on running it in the background after the script thought it done."""
    if settings.Q_CLUSTER.get("sync"):
        return
    # Imported here, in the worker process only: web processes never load the runtime.
    from executions.ops import tracing  # beside the import above
    from executions.runtime.scheduler import ticker  # beside the import above
    from executions.runtime.slots import start_worker_process
    from executions.runtime.webhooks import sender  # beside the import above

    tracing.setup_after_fork()  # before the slots start: a batch processor's thread of its own
    start_worker_process()
    ticker.start()  # fires the tenants' schedules (runtime/scheduler.py)
    sender.start()  # sends the tenants' webhooks (runtime/webhooks.py)


def _close_after_asgi_request(sender: type, **kwargs: object) -> None:
    if isinstance(sender, type) and issubclass(sender, ASGIHandler):
        connections.close_all()
