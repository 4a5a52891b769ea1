"""Running executions in a worker process.

``execution_run`` is the unit of work: claim, run through the kernel, let go. ``WorkerMonitor`` is
the thin shell around it: one daemon thread per process that turns durable cancel requests into
token cancels, renews leases, and reaps executions whose worker died.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime

from django.conf import settings
from django.db import close_old_connections, connection

from executions import kernel_bridge, observability, services
from executions.kernel import (
    MISSING,
    CancellationToken,
    Checkpoint,
    ExecutionError,
    ExecutionKernel,
    ExecutionState,
)
from executions.kernel import ids as kernel_ids
from executions.kernel.persistence import Lane, Position
from executions.models import Execution, InboxMessage
from executions.stores import DjangoCheckpointStore, last_seq

logger = logging.getLogger(__name__)

# An execution that keeps crashing its worker is failed after this many claims, not retried forever.
MAX_CLAIMS = 5


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LeaseLost(Exception):
    """Another worker took over this execution; this one must stop writing."""


class _Running:
    def __init__(self, token: CancellationToken) -> None:
        self.token = token
        self.fence = threading.Event()
        # Set while the execution may have unread inbox messages; starts set so a run's first
        # look at its inbox really looks.
        self.inbox_pending = threading.Event()
        self.inbox_pending.set()


class WorkerMonitor:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, _Running] = {}
        self._thread: threading.Thread | None = None
        self._permanent = False
        self._last_heartbeat = 0.0
        self._last_presence = 0.0
        # Not at start-up: many workers starting at once need not all sweep straight away.
        self._last_sweep = time.monotonic()
        self._last_reap = 0.0

    def register(self, execution_id: str, token: CancellationToken) -> _Running:
        entry = _Running(token)
        with self._lock:
            self._running[execution_id] = entry
            self._ensure_thread()
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
        self.start()

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="enact-monitor", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            time.sleep(settings.ENACT_CONTROL_POLL_SECONDS)
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

    def tick(self) -> None:
        with self._lock:
            running = dict(self._running)
        if running:
            self._deliver_cancels(running)
            self._flag_inbox(running)
        now = time.monotonic()
        if now - self._last_presence >= settings.ENACT_HEARTBEAT_SECONDS:
            self._last_presence = now
            services.worker_seen(worker=worker_id(), running=len(running))
        if running and now - self._last_heartbeat >= settings.ENACT_HEARTBEAT_SECONDS:
            self._last_heartbeat = now
            for lost in services.execution_heartbeat(execution_ids=list(running), worker=worker_id()):
                logger.warning("lease on %s lost; stopping it here", lost)
                running[lost].fence.set()
                running[lost].token.cancel("lease lost")
        if settings.ENACT_SWEEP_SECONDS and now - self._last_sweep >= settings.ENACT_SWEEP_SECONDS:
            self._last_sweep = now
            from executions.retention import executions_sweep

            executions_sweep(seconds=10.0)  # a bounded slice: the monitor also delivers cancels
        if now - self._last_reap >= settings.ENACT_REAP_SECONDS:
            self._last_reap = now
            found = services.executions_reap()
            if any(found.values()):
                logger.info("reaper: %s", found)

    @staticmethod
    def _flag_inbox(running: dict[str, _Running]) -> None:
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
    def _deliver_cancels(running: dict[str, _Running]) -> None:
        requested = Execution.objects.filter(pk__in=list(running), cancel_requested_at__isnull=False)
        for execution_id, reason in requested.values_list("pk", "cancel_reason"):
            running[execution_id].token.cancel(reason or "cancelled")


monitor = WorkerMonitor()


def execution_run(execution_id: str) -> str:
    """Claim the execution, run it until it ends or lets go, release it. Returns what happened."""
    worker = worker_id()
    execution = services.execution_claim(execution_id=execution_id, worker=worker)
    if execution is None:
        return "not claimed"
    token = CancellationToken()
    entry = monitor.register(execution.pk, token)
    context = observability.log_context(tenant_id=execution.tenant_id, execution_id=execution.pk)
    context.__enter__()
    try:
        if execution.claims > MAX_CLAIMS:
            return _give_up(execution, f"the execution stopped its worker {MAX_CLAIMS} times")
        if execution.cancel_requested_at:
            token.cancel(execution.cancel_reason or "cancelled")
        return _run(execution, token, entry)
    except LeaseLost:
        return "lease lost"
    finally:
        monitor.unregister(execution.pk)
        services.execution_release(execution_id=execution.pk, worker=worker)
        context.__exit__(None, None, None)


def _run(execution: Execution, token: CancellationToken, entry: _Running) -> str:
    try:
        runnable = kernel_bridge.runnable_for(execution)
    except Exception as exc:  # e.g. a graph no longer registered: fail clearly, do not retry
        return _give_up(execution, f"cannot build graph {execution.graph!r}: {exc}")
    kernel = kernel_bridge.kernel_for(
        execution,
        token,
        entry.inbox_pending,
        fence=entry.fence,
        limits=execution.tenant.limits,
        background_commits=True,
    )
    try:
        outcome = _drive(kernel, execution, runnable)
    except BaseException:
        try:
            kernel_bridge.kernel_close(kernel)
        except Exception:  # the error being raised says more than what closing found after it
            logger.exception("closing the run of %s after its failure", execution.pk)
        raise
    kernel_bridge.kernel_close(kernel)
    return outcome


def _drive(kernel: ExecutionKernel, execution: Execution, runnable: kernel_bridge.Runnable) -> str:
    # A run's start commits with its first step, and the first checkpoint with it: an execution
    # still queued has none, and needs no look.
    fresh = execution.state in (Execution.State.QUEUED, Execution.State.CREATED)
    checkpoint = None if fresh else DjangoCheckpointStore().load_checkpoint(execution.pk)
    if fresh:
        result = kernel.execute_graph(runnable.graph, runnable.initial_state)
    else:
        if checkpoint is None:  # the worker died before the first step finished
            checkpoint = _entry_checkpoint(execution, runnable)
        answer = execution.resume_input["value"] if execution.resume_input else MISSING
        result = kernel.resume_graph(runnable.graph, checkpoint, input=answer)
    return result.state.value


def _entry_checkpoint(execution: Execution, runnable: kernel_bridge.Runnable) -> Checkpoint:
    return Checkpoint(
        id=kernel_ids.new_checkpoint_id(),
        execution_id=execution.pk,
        graph=runnable.graph.name,
        seq=last_seq(execution.pk),
        position=Position((Lane("main", runnable.graph.entry_point, runnable.initial_state),)),
        usage={},
        created_at=datetime.now(UTC),
    )


def _give_up(execution: Execution, message: str) -> str:
    kernel = kernel_bridge.kernel_for(execution)
    if not kernel.state.is_terminal:
        kernel.fail(ExecutionError.kernel_internal(message, code="unrunnable"))
    return ExecutionState.FAILED.value
