"""The worker's monitor: one daemon thread per worker process that turns durable cancel requests
into token cancels, flags executions with unread inbox messages, renews leases, records that the
process is alive, sweeps old executions and reaps those whose worker died.

It is the thin shell around units that tests call directly (``tick``); sleeping and threads
live here only.
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings
from django.db import close_old_connections, connection

from executions.kernel import CancellationToken
from executions.kernel.inbox import message_from_dict
from executions.models import Execution, InboxMessage
from executions.ops.retention import executions_sweep
from executions.persistence.connections import give_back
from executions.persistence.stores import DjangoInboxStore
from executions.runtime.leases import execution_heartbeat, worker_id, worker_seen
from executions.runtime.reaper import executions_reap

logger = logging.getLogger(__name__)

HAND_BACK = "the worker is stopping; another worker goes on with it"


class Running:
    def __init__(self, token: CancellationToken, tenant_id: int) -> None:
        self.token = token
        self.tenant_id = tenant_id
        # The pause this worker, stopping, asked of the execution so another goes on with it.
        self.hand_back_message: str | None = None
        self.fence = threading.Event()
        # Set while the execution may have unread inbox messages; starts set so a run's first
        # look at its inbox really looks.
        self.inbox_pending = threading.Event()
        self.inbox_pending.set()


class WorkerMonitor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, Running] = {}
        self._thread: threading.Thread | None = None
        self._permanent = False
        self._last_heartbeat = 0.0
        self._last_presence = 0.0
        # Not at start-up: many workers starting at once need not all sweep straight away.
        self._last_sweep = time.monotonic()
        self._last_reap = 0.0
        # Set by news pushed to this process (a cancel, a pause, a message): look now, not at the
        # next poll.
        self._poke = threading.Event()

    def register(self, execution_id: str, token: CancellationToken, tenant_id: int) -> Running:
        entry = Running(token, tenant_id)
        with self._lock:
            self._running[execution_id] = entry
            self._ensure_thread()
        self._poke.set()  # out of its idle wait: a running execution is looked after every poll
        return entry

    def unregister(self, execution_id: str) -> None:
        with self._lock:
            self._running.pop(execution_id, None)

    def start(self) -> None:
        """Run the monitor for good, even with nothing registered, so this process reaps.

        Without this (a process that only runs executions now and then), the monitor runs while
        something is registered and then exits, closing its database connection."""
        with self._lock:
            self._permanent = True
            self._ensure_thread()

    def start_after_fork(self) -> None:
        """In a freshly forked process: start this process's own monitor.

        A fork copies the parent's monitor object but not its thread; django-q2 forks twice (the
        cluster's sentinel, then each worker from the sentinel), so without a reset a worker
        would believe its parent's thread was its own, and nothing would deliver its cancels or
        renew its leases. The lock is new too: the parent's may have been held at the fork."""
        self._lock = threading.Lock()
        self._running = {}
        self._thread = None
        self._poke = threading.Event()
        self.start()

    def news(self, execution_id: str) -> None:
        """Something was asked of ``execution_id`` (pushed by ``wakeups``): look at once if it runs here."""
        with self._lock:
            if execution_id in self._running:
                self._poke.set()

    def hand_back(self, execution_id: str) -> None:
        """This worker is stopping: ask the execution to pause at its next step boundary (and so
        checkpoint), so that another worker goes on with it at once."""
        with self._lock:
            entry = self._running.get(execution_id)
        if entry is None:
            return
        message = message_from_dict(
            {"kind": "control", "action": "pause", "actor": f"worker {worker_id()}", "reason": HAND_BACK}
        )
        DjangoInboxStore(entry.tenant_id).push(execution_id, message)
        entry.hand_back_message = message.id
        entry.inbox_pending.set()

    def abandon_all(self) -> None:
        """This worker stops now: what still runs writes nothing more (its fence), and its step,
        never completed, runs again on the worker that takes the execution over."""
        with self._lock:
            running = dict(self._running)
        for entry in running.values():
            entry.fence.set()
            entry.token.cancel("the worker stopped")

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="enact-monitor", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            # Idle, only the heartbeat and the reaper have anything to do, and they run seconds
            # apart: an idle worker wakes a few times a minute, not twenty times a second.
            with self._lock:
                busy = bool(self._running)
            idle_wait = min(settings.ENACT_HEARTBEAT_SECONDS, settings.ENACT_REAP_SECONDS)
            self._poke.wait(settings.ENACT_CONTROL_POLL_SECONDS if busy else idle_wait)
            self._poke.clear()
            with self._lock:
                if not self._running and not self._permanent:
                    self._thread = None  # under the lock, so register() starts a new one
                    connection.close()
                    return
            try:
                close_old_connections()  # recover from a dropped database connection
                self.tick()
            except Exception:
                logger.exception("worker monitor tick failed")
            finally:
                give_back()

    def tick(self) -> None:
        with self._lock:
            running = dict(self._running)
        if running:
            self._deliver_cancels(running)
            self._flag_inbox(running)
        now = time.monotonic()
        if now - self._last_presence >= settings.ENACT_HEARTBEAT_SECONDS:
            self._last_presence = now
            worker_seen(worker=worker_id(), running=len(running))
        if running and now - self._last_heartbeat >= settings.ENACT_HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            for lost in execution_heartbeat(execution_ids=list(running), worker=worker_id()):
                with self._lock:
                    if self._running.get(lost) is not running[lost]:
                        continue  # its run ended and let go meanwhile: nothing was lost
                logger.warning("lease on %s lost; stopping it here", lost)
                running[lost].fence.set()
                running[lost].token.cancel("lease lost")
        if settings.ENACT_SWEEP_SECONDS and now - self._last_sweep >= settings.ENACT_SWEEP_SECONDS:
            self._last_sweep = now
            executions_sweep(seconds=10.0)  # a bounded slice: the monitor also delivers cancels
        if now - self._last_reap >= settings.ENACT_REAP_SECONDS:
            self._last_reap = now
            found = executions_reap()
            if any(found.values()):
                logger.info("reaper: %s", found)

    @staticmethod
    def _flag_inbox(running: dict[str, Running]) -> None:
        # A child that inherits its parent's inbox is flagged by its parent's messages too.
        readers: dict[str, list[str]] = {execution_id: [execution_id] for execution_id in running}
        inheriting = Execution.objects.filter(pk__in=list(running), metadata__inherit_inbox=True)
        for child_id, parent_id in inheriting.exclude(parent=None).values_list("pk", "parent_id"):
            readers.setdefault(parent_id, []).append(child_id)
        pending = InboxMessage.objects.filter(execution_id__in=list(readers), consumed_at__isnull=True)
        for execution_id in set(pending.values_list("execution_id", flat=True)):
            for reader in readers[execution_id]:
                running[reader].inbox_pending.set()

    @staticmethod
    def _deliver_cancels(running: dict[str, Running]) -> None:
        requested = Execution.objects.filter(pk__in=list(running), cancel_requested_at__isnull=False)
        for execution_id, reason in requested.values_list("pk", "cancel_reason"):
            running[execution_id].token.cancel(reason or "cancelled")


monitor = WorkerMonitor()
