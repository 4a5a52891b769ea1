from __future__ import annotations

import os
import sys

from django.apps import AppConfig


class ExecutionsConfig(AppConfig):
    name = "executions"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        # Graphs defined in code: every installed app's graphs.py registers its own.
        autodiscover_modules("graphs")

        from django.db import close_old_connections

        from executions.kernel.runner import default_pool

        # The kernel runs a graph (and its store I/O) on runner threads, which keep their own
        # database connections; drop broken or expired ones before each job.
        default_pool.before_job.append(close_old_connections)

        # Under ASGI every request runs on a thread of its own, so a kept connection would be
        # left behind by each one until PostgreSQL refuses more clients: close at the end.
        from django.core.signals import request_finished

        request_finished.connect(_close_after_asgi_request, dispatch_uid="enact-close-after-asgi-request")
        if sys.argv[1:2] == ["qcluster"] and hasattr(os, "register_at_fork"):
            # django-q2 forks its worker processes; each starts a monitor so every worker
            # delivers cancels, renews leases and reaps, with no extra process to run.
            # Imported whole before any fork: a forked worker's monitor thread and its main thread
            # importing it at once would meet a half-initialised module.
            import executions.tasks  # noqa: F401
            from executions.worker import monitor

            os.register_at_fork(after_in_child=monitor.start_after_fork)


def _close_after_asgi_request(sender: type, **kwargs: object) -> None:
    from django.core.handlers.asgi import ASGIHandler
    from django.db import connections

    if isinstance(sender, type) and issubclass(sender, ASGIHandler):
        connections.close_all()
