"""Threads that run node code, so the kernel's own thread can stop waiting for a step at once.

A step blocked in a long call keeps its thread; the kernel abandons it on cancel and the thread
finishes (or not) on its own, its result ignored. Idle threads exit after a minute.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

_IDLE_EXIT_S = 60.0


class StepRunnerPool:
    def __init__(self, name: str = "enact-step") -> None:
        self._name = name
        # Called on the runner thread before and after each job: the platform refreshes stale
        # database connections before, and gives a pooled one back after (a runner thread lives
        # long and mostly waits, and must not hold a connection meanwhile).
        self.before_job: list[Callable[[], None]] = []
        self.after_job: list[Callable[[], None]] = []
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0

    @property
    def threads(self) -> int:
        return self._threads

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._idle:
                self._idle -= 1
            else:
                self._threads += 1
                threading.Thread(target=self._work, name=f"{self._name}-{self._threads}", daemon=True).start()
        self._jobs.put(job)

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=_IDLE_EXIT_S)
            except queue.Empty:
                with self._lock:
                    # Exit only if no submitter counted on this thread being idle.
                    if self._idle:
                        self._idle -= 1
                        self._threads -= 1
                        return
                continue
            for hook in self.before_job:
                try:
                    hook()
                except Exception:  # a hook must never cost the job its run
                    logger.exception("step runner hook %r failed", hook)
            try:
                job()
            except BaseException:  # a job reports its own errors; this is a last resort
                logger.exception("step runner job crashed")
            for hook in self.after_job:
                try:
                    hook()
                except Exception:  # as above: the job is done, whatever its hooks find
                    logger.exception("step runner hook %r failed", hook)
            with self._lock:
                self._idle += 1


default_pool = StepRunnerPool()
