from __future__ import annotations

import os
import sys

from django.apps import AppConfig
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.db import close_old_connections, connections
from django.utils.module_loading import autodiscover_modules

from executions.kernel.runner import default_pool


class ExecutionsConfig(AppConfig):
    name = "executions"

    def ready(self) -> None:
        # Graphs defined in code: every installed app's graphs.py registers its own.
        autodiscover_modules("graphs")

        # The kernel runs a graph (and its store I/O) on runner threads, which keep their own
        # database connections; drop broken or expired ones before each job.
        default_pool.before_job.append(close_old_connections)

        # Under ASGI every request runs on a thread of its own, so a kept connection would be
        # left behind by each one until PostgreSQL refuses more clients: close at the end.
        request_finished.connect(_close_after_asgi_request, dispatch_uid="enact-close-after-asgi-request")

        # A tenant's usage reports how many of its executions run and wait; tenants never
        # imports executions, so the reader is handed to it. Imported here: it needs the models.
        from executions.selectors import tenant_activity
        from tenants.selectors import tenant_activity_reader_register  # beside the import above

        tenant_activity_reader_register(tenant_activity)
        if sys.argv[1:2] == ["qcluster"] and hasattr(os, "register_at_fork"):
            # django-q2 forks its worker processes; each starts a monitor so every worker
            # delivers cancels, renews leases and reaps, with no extra process to run.
            # Imported here, once the models are loaded, and whole before any fork: a forked
            # worker's monitor thread and its main thread importing it at once would meet a
            # half-initialised module.
            import executions.tasks  # noqa: F401
            from executions.runtime.monitor import monitor  # loaded with the tasks, just above

            os.register_at_fork(after_in_child=monitor.start_after_fork)


def _close_after_asgi_request(sender: type, **kwargs: object) -> None:
    if isinstance(sender, type) and issubclass(sender, ASGIHandler):
        connections.close_all()
