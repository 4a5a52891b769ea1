"""The embedded default's relay: committed events from the log to this web process's groups.

Without Redis nothing crosses processes, so the web process reads new rows of the event log and
sends them to its own (in-memory) channel layer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from executions import wakeups
from executions.live.groups import created_message, event_message, send_both, tenant_group
from executions.models import Execution, ExecutionEvent
from executions.ops.metrics import gauges

logger = logging.getLogger(__name__)


class Relay:
    """Carries committed events from the log to this process's channel layer (embedded default).

    Runs as a task on the web server's event loop, where the in-memory layer lives. Rows of
    concurrent transactions can commit out of key order, so each poll looks back over the last
    ``lookback`` keys and skips events it already sent; listeners resume by ``seq`` and ignore
    repeats anyway.
    """

    def __init__(self, *, poll_seconds: float = 0.05, lookback: int = 500, batch: int = 500) -> None:
        self.poll_seconds = poll_seconds
        self.lookback = lookback
        self.batch = batch
        self.high_water: int | None = None
        self._sent: dict[int, None] = {}
        self.created_since: Any = None  # the relay's clock for new executions
        self._created_sent: dict[str, None] = {}
        self.last_timestamp = 0.0  # of the last event relayed: what the lag gauge is measured from

    def fetch_created(self) -> list[tuple[int, str]]:
        """New executions to announce, as (tenant id, execution id). Sync: call from a thread.

        Rows commit out of creation order too; a window of a few seconds back covers that."""
        now = timezone.now()
        if self.created_since is None:
            self.created_since = now
            return []
        rows = Execution.objects.filter(created_at__gt=self.created_since - timedelta(seconds=5)).values_list(
            "tenant_id", "id"
        )[: self.batch]
        fresh = [
            (tenant_id, execution_id) for tenant_id, execution_id in rows if execution_id not in self._created_sent
        ]
        for _, execution_id in fresh:
            self._created_sent[execution_id] = None
        self.created_since = now
        while len(self._created_sent) > 4 * self.batch:
            self._created_sent.pop(next(iter(self._created_sent)))
        return fresh

    def fetch(self) -> list[tuple[int, int, dict[str, Any]]]:
        """Rows to send now, as (key, tenant id, wire event). Sync: call from a thread."""
        if self.high_water is None:  # start from now: listeners replay history from the log
            self.high_water = ExecutionEvent.objects.aggregate(n=Max("pk_id"))["n"] or 0
            return []
        rows = (
            ExecutionEvent.objects.filter(pk_id__gt=max(0, self.high_water - self.lookback))
            .order_by("pk_id")
            .values_list("pk_id", "tenant_id", "id", "seq", "type", "execution_id", "step_id", "timestamp", "data")[
                : self.batch + self.lookback
            ]
        )
        fresh = []
        for pk_id, tenant_id, event_id, seq, type_, execution_id, step_id, timestamp, data in rows:
            if pk_id in self._sent:
                continue
            self._sent[pk_id] = None
            self.high_water = max(self.high_water, pk_id)
            wire = {
                "id": event_id,
                "seq": seq,
                "type": type_,
                "execution_id": execution_id,
                "step_id": step_id or None,
                "timestamp": timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "data": data,
            }
            fresh.append((pk_id, tenant_id, wire))
            self.last_timestamp = timestamp.timestamp()
        while len(self._sent) > 4 * (self.batch + self.lookback):
            self._sent.pop(next(iter(self._sent)))
        return fresh

    def fetch_all(self) -> tuple[list[tuple[int, str]], list[tuple[int, int, dict[str, Any]]]]:
        """New executions and new events."""
        return self.fetch_created(), self.fetch()

    async def run_once(self) -> int:
        layer = get_channel_layer()
        # One hop to the database thread a look.
        created, fresh = await database_sync_to_async(self.fetch_all)()
        for tenant_id, execution_id in created:
            await layer.group_send(tenant_group(tenant_id), created_message(execution_id))
        for _, tenant_id, wire in fresh:
            await send_both(layer, tenant_id, wire["execution_id"], event_message(wire))
        if fresh:
            gauges.relayed(time.time() - self.last_timestamp)
        return len(fresh)

    async def run(self) -> None:
        """Read the log when a worker says it committed events (or a new execution came), and
        every ``poll_seconds`` in case that news was lost: idle, the relay costs nothing."""
        woken = asyncio.Event()
        target = (asyncio.get_running_loop(), woken)
        _wake_targets.append(target)
        _ensure_listening()
        try:
            while True:
                try:
                    sent = await self.run_once()
                except Exception:
                    logger.exception("event relay poll failed")
                    sent = 0
                if sent >= self.batch:
                    continue  # more may be waiting already
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), self.poll_seconds)
                woken.clear()
        finally:
            _wake_targets.remove(target)


# The relays of this process (one per event loop: a server has one, tests many) and the one
# listener thread that wakes them.
_wake_targets: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
_listening_pid = 0


def _ensure_listening() -> None:
    global _listening_pid
    if _listening_pid != os.getpid():
        _listening_pid = os.getpid()
        wakeups.listen(on_work=_wake_relays, on_events=_wake_relays)


def _wake_relays() -> None:
    for loop, woken in list(_wake_targets):
        with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
            loop.call_soon_threadsafe(woken.set)


_relay_task: Any = None


def ensure_relay() -> None:
    """Start the relay on the running event loop, once per process, when nobody publishes directly."""
    global _relay_task
    if settings.ENACT_PUBLISH_DIRECT or (_relay_task is not None and not _relay_task.done()):
        return
    _relay_task = asyncio.get_running_loop().create_task(Relay(poll_seconds=settings.ENACT_RELAY_POLL_SECONDS).run())
