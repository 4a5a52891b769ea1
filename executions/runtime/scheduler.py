"""The schedule ticker: a thread in each worker process that fires due schedules
(``services.schedules.schedules_fire_due``) and then sleeps until the next one is due, or
``ENACT_SCHEDULE_POLL_SECONDS`` at most (a schedule created or changed meanwhile is seen then).
Idle, it costs one small query per poll. Every worker process of every cluster runs one; the
claim on each schedule row makes sure each time fires once however many there are."""

from __future__ import annotations

import logging
import threading

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from executions.persistence.connections import give_back
from executions.services.schedules import schedules_fire_due, schedules_next_due

logger = logging.getLogger(__name__)

# A due schedule another worker is firing is skipped, not waited for: look again this soon.
MIN_SLEEP = 0.05


class Ticker:
    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.__init__()  # type: ignore[misc]  # in a forked process: a thread of its own
        self._thread = threading.Thread(target=self._run, name="enact-schedules", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def tick(self) -> float:
        """Fire what is due; returns how long to sleep before the next look."""
        cap = settings.ENACT_SCHEDULE_POLL_SECONDS
        try:
            close_old_connections()
            for firing in schedules_fire_due():
                logger.info("schedule %s fired for %s: %s", firing.schedule_id, firing.scheduled_at, firing.outcome)
            due = schedules_next_due()
        except Exception:
            logger.exception("firing schedules failed")
            return cap
        finally:
            give_back()  # idle: hold no connection while asleep
        if due is None:
            return cap
        return min(cap, max(MIN_SLEEP, (due - timezone.now()).total_seconds() + 0.002))

    def _run(self) -> None:
        while not self._stopping.is_set():
            wait = self.tick()
            self._wake.wait(wait)
            self._wake.clear()


ticker = Ticker()
