"""Slots: one worker process runs many executions at once, each on a thread of its own.

An execution waiting on a model, a tool, a backoff or a sleep costs a thread, not a process. The
slots of a process are the shell around ``execution_claim_batch`` (the fair pick, in ``leases.py``)
and ``execution_run_claimed`` (in ``run.py``), which tests call directly:

- a dispatcher thread claims ready executions while the process has free slots, when woken
  (``wakeups``: work is ready, or one of its own slots freed) and every
  ``ENACT_DISPATCH_POLL_SECONDS`` in case a wake-up was lost;
- each claimed execution runs on a slot thread, which gives its database connection back when the
  run ends (with PostgreSQL's pool, to the pool);
- ``stop`` stops claiming, asks each running execution to hand itself back at its next step
  boundary (``monitor.hand_back``), waits a few seconds for them, and hands back at once what is
  still running, so another worker takes it over without waiting for a lease to expire.
"""

from __future__ import annotations

import logging
import multiprocessing.util
import signal
import threading
import time
from collections.abc import Iterable
from types import FrameType

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from executions import wakeups
from executions.models import Execution
from executions.ops import tracing
from executions.ops.metrics import PICKUP_SECONDS, RUNS_ENDED, SLOTS_BUSY, process_exiting
from executions.persistence.connections import give_back
from executions.runtime.leases import execution_claim_batch, execution_release, worker_id
from executions.runtime.monitor import monitor
from executions.runtime.run import execution_run_claimed

logger = logging.getLogger(__name__)


# Executions claimed at most in one go: enough that a worker with free slots fills them in a
# few round trips (on SQLite, a few turns of its one write lock rather than one per execution),
# few enough that one tenant's batch keeps another's first execution waiting only for one claim.
# Measured on SQLite, 200 executions of one 2 s step, with other work on the machine: a batch of
# 1 ran them in 26-28 s (35-39 at once at most), a batch of 10 in 13-17 s (95 at once).
CLAIM_BATCH = 10


class Slots:
    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._running: dict[str, threading.Thread] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._dispatcher: threading.Thread | None = None
        self._stop_listening = lambda: None

    @property
    def busy(self) -> int:
        with self._lock:
            return len(self._running)

    def start(self) -> None:
        """Start claiming (and listening for wake-ups) in this process."""
        self._stop_listening = wakeups.listen(on_work=self.wake, on_execution=monitor.news)
        self._dispatcher = threading.Thread(target=self._dispatch_forever, name="enact-dispatch", daemon=True)
        self._dispatcher.start()
        self.wake()  # work may be waiting already

    def start_after_fork(self) -> None:
        """In a freshly forked worker process: slots of its own (a fork copies no threads)."""
        self.__init__(self.size)  # type: ignore[misc]
        self.start()

    def wake(self) -> None:
        self._wake.set()

    def _dispatch_forever(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(settings.ENACT_DISPATCH_POLL_SECONDS)
            self._wake.clear()
            try:
                close_old_connections()
                self.fill()
            except Exception:
                logger.exception("dispatching failed")
            finally:
                give_back()  # idle: hold no connection while waiting to be woken

    def fill(self) -> int:
        """Claim ready executions into the free slots; returns how many were started."""
        started = 0
        while not self._stopping.is_set() and self.busy < self.size:
            batch = execution_claim_batch(worker=worker_id(), limit=min(CLAIM_BATCH, self.size - self.busy))
            if not batch:
                break
            if self._stopping.is_set():  # stopped while claiming: hand them back at once, unrun
                for execution in batch:
                    execution_release(execution_id=execution.pk, worker=execution.lease_owner)
                break
            for execution in batch:
                self._start(execution)
            started += len(batch)
        return started

    def _start(self, execution: Execution) -> None:
        if execution.claims == 1:  # its first claim: how long it waited to be picked up
            PICKUP_SECONDS.observe(max(0.0, (timezone.now() - execution.created_at).total_seconds()))
        thread = threading.Thread(target=self._run, args=(execution,), name=f"enact-slot-{execution.pk}", daemon=True)
        with self._lock:
            self._running[execution.pk] = thread
        thread.start()

    def _run(self, execution: Execution) -> None:
        SLOTS_BUSY.inc()
        try:
            RUNS_ENDED.labels(execution_run_claimed(execution)).inc()
        except Exception:
            logger.exception("running %s failed", execution.pk)
        finally:
            SLOTS_BUSY.dec()
            with self._lock:
                self._running.pop(execution.pk, None)
            give_back()
            self.wake()  # a slot is free: the next execution, chosen fairly

    def stop(self, timeout: float | None = None) -> list[str]:
        """Stop claiming; let running executions reach a step boundary and hand themselves back,
        for up to ``timeout`` seconds (``ENACT_STOP_SECONDS``); hand back at once what is still
        running after that. Returns the ids that were running when asked to stop."""
        timeout = settings.ENACT_STOP_SECONDS if timeout is None else timeout
        self._stopping.set()
        self._wake.set()
        self._stop_listening()
        with self._lock:
            running = dict(self._running)
        for execution_id in running:
            monitor.hand_back(execution_id)
        _join_all(running.values(), timeout)
        monitor.abandon_all()
        _join_all(running.values(), 1.0)  # each lets go of its lease as it ends
        return list(running)


def _join_all(threads: Iterable[threading.Thread], timeout: float) -> None:
    """Wait for the threads to end, ``timeout`` seconds in all (not each)."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


slots = Slots(settings.ENACT_SLOTS)


def start_worker_process() -> None:
    """In a django-q2 worker process as it starts: its monitor and its slots. SIGTERM (a
    supervisor, a rolling restart, Ctrl-C on ``up``) and the cluster's own stop both end the
    process through ``slots.stop``: nothing is killed mid-write, and what ran is handed back."""
    monitor.start_after_fork()
    slots.start_after_fork()
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    # Run as the process exits, however its main loop ended (a SIGTERM, the cluster's stop).
    multiprocessing.util.Finalize(None, _stop_slots, exitpriority=100)


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _stop_slots() -> None:
    handed = slots.stop()
    if handed:
        logger.info("stopped; handed back %d execution(s): %s", len(handed), ", ".join(handed))
    tracing.shutdown()  # the spans of what ran, sent before the process ends
    process_exiting()
