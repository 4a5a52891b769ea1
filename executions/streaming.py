"""Getting committed events to live listeners.

Two ways, one per deployment:
- scaled (``REDIS_URL`` set): whichever process commits an event publishes it to the channel
  layer groups of its execution and its tenant, from a background thread, after commit;
- embedded default (in-memory channel layer, so nothing crosses processes): nobody publishes
  directly; the web process relays new rows of the event log to its own groups.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import threading
import time
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)


# An execution's state after each event that changes it: what live pages and feeds show.
STATE_AFTER_EVENT = {
    "data-execution-start": "running",
    "data-execution-resumed": "running",
    "data-execution-input-received": "running",
    "data-execution-paused": "paused",
    "data-execution-waiting": "waiting",
    "data-execution-end": "completed",
    "data-execution-failed": "failed",
    "data-execution-cancelled": "cancelled",
}


def execution_group(execution_id: str) -> str:
    return f"execution.{execution_id}"


def tenant_group(tenant_id: int | str) -> str:
    return f"tenant.{tenant_id}"


def publishes_directly() -> bool:
    """Whether committed events go to the channel layer from the process that wrote them.

    Otherwise (the embedded default) the relay in the web process reads them from the log.
    """
    return bool(settings.ENACT_PUBLISH_DIRECT)


def publish_events(tenant_id: int, wires: list[dict[str, Any]]) -> None:
    """Hand committed events to the publisher. Call only after commit (``transaction.on_commit``)."""
    if publishes_directly():
        for wire in wires:
            publisher().submit(tenant_id, wire)


def event_message(wire: dict[str, Any]) -> dict[str, Any]:
    """What the groups get for one event: its seq and type to act on, and the event as JSON text,
    encoded once here rather than once per listener (and small, so that the in-memory layer's
    copy for each listener is cheap)."""
    return {
        "type": "execution.event",
        "execution_id": wire["execution_id"],
        "seq": wire["seq"],
        "event_type": wire["type"],
        "json": json.dumps(wire, separators=(",", ":")),
    }


def publish_created(tenant_id: int, execution_id: str) -> None:
    """Tell the tenant's live lists about a new execution. Call only after commit.

    A new execution has no event yet (its first comes when a worker starts it); without Redis,
    the relay finds new rows itself."""
    if publishes_directly():
        publisher().submit_created(tenant_id, execution_id)


def created_message(execution_id: str) -> dict[str, Any]:
    return {"type": "execution.created", "execution_id": execution_id}


RELEASE_TRIES = 1000  # receives at most to let go of a channel that still gets messages


async def channel_release(layer: Any, channel: str, pending: asyncio.Future[Any] | None = None) -> None:
    """Let go of ``channel``, a channel this process made with ``new_channel``; ``pending`` is a
    receive on it that may still be waiting.

    The pub/sub layer keeps a channel's queue and its Redis subscription until a receive on it
    is cancelled while it waits (which is how a consumer's end frees its channel). So: cancel
    the pending receive; if there was none, or it had a message already, receive again until a
    receive waits, and cancel that one. Messages still queued are dropped."""
    if pending is not None and not pending.done():
        pending.cancel()
        await asyncio.wait([pending])  # what it ended with is of no interest, only that it ended
        if pending.cancelled():
            return
    for _ in range(RELEASE_TRIES):
        if not _holds(layer, channel):
            return  # let go of already (a receive on it was cancelled): a receive would take it again
        receiving = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0)  # it returns at once if a message is queued, else it waits
        if receiving.done():
            if receiving.exception() is not None:
                return  # the layer is failing; there is nothing of ours to let go of
            continue  # a message was queued: dropped, try again
        receiving.cancel()
        await asyncio.wait([receiving])
        if receiving.cancelled():
            return
    logger.warning("channel %s kept receiving messages; it was not let go of", channel)


def _holds(layer: Any, channel: str) -> bool:
    """Whether ``layer`` still keeps ``channel``. Only the pub/sub layer keeps channels until
    they are let go of, in the part of it that belongs to this event loop (``_get_layer``; the
    leak test in tests/api/test_stream.py notices if that changes); for other layers a receive
    and its cancel leave nothing behind, so the answer does not matter."""
    per_loop = getattr(layer, "_get_layer", None)
    return per_loop is None or channel in per_loop().channels


async def _send_both(layer: Any, tenant_id: int | str, execution_id: str, message: dict[str, Any]) -> None:
    await layer.group_send(execution_group(execution_id), message)
    await layer.group_send(tenant_group(tenant_id), message)


class Publisher:
    """A daemon thread that sends events in commit order, so the committing thread never waits.

    It keeps one event loop, so the channel layer's connection to Redis is made once rather
    than for every event, and it sends whatever has queued up meanwhile in one go. A send that
    fails is tried again for a few seconds, each time on a new loop (a new connection: Redis may
    have restarted), before anything queued after it; then the events are dropped, and listeners
    find them in the log (by their seq gap, or when they have been quiet a while)."""

    BATCH = 200  # items sent in one go at most
    RETRY_PAUSES = (0.1, 0.25, 0.5, 1.0, 2.0)  # about 4 s in all
    SEND_TIMEOUT = 10.0

    def __init__(self) -> None:
        # (tenant id, wire event) for an event; (tenant id, execution id) for a new execution.
        self._queue: queue.SimpleQueue[tuple[int, dict[str, Any] | str]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="enact-publisher", daemon=True)
        self._thread.start()

    def submit(self, tenant_id: int, wire: dict[str, Any]) -> None:
        self._queue.put((tenant_id, wire))

    def submit_created(self, tenant_id: int, execution_id: str) -> None:
        self._queue.put((tenant_id, execution_id))

    def _take(self) -> list[tuple[int, dict[str, Any] | str]]:
        items = [self._queue.get()]
        while len(items) < self.BATCH:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        while True:
            items = self._take()
            loop = self._send(loop, items)

    def _send(
        self, loop: asyncio.AbstractEventLoop, items: list[tuple[int, dict[str, Any] | str]]
    ) -> asyncio.AbstractEventLoop:
        """Send ``items``, retrying for a few seconds (Redis may be restarting) before the next
        ones, so the order holds; each retry is on a new loop, so a new connection. Returns the
        loop to go on with. Events that could not be sent are dropped: listeners find them in
        the log by their seq."""
        pauses = iter(self.RETRY_PAUSES)
        while True:
            try:
                loop.run_until_complete(asyncio.wait_for(_send_items(items), self.SEND_TIMEOUT))
                return loop
            except Exception as exc:
                loop = _renewed(loop)
                pause = next(pauses, None)
                if pause is None:
                    logger.exception("publishing %d event(s) to the groups failed; dropped", len(items))
                    return loop
                if pause == self.RETRY_PAUSES[0]:
                    logger.warning("publishing %d event(s) failed (%s); retrying", len(items), exc)
                time.sleep(pause)


def _renewed(loop: asyncio.AbstractEventLoop) -> asyncio.AbstractEventLoop:
    """A new event loop for ``loop``: closing it lets go of the channel layer's connections."""
    try:
        loop.close()
    except Exception:
        logger.debug("closing the publisher's event loop failed", exc_info=True)
    if not loop.is_closed():  # the layer's clean-up failed before the loop itself was closed
        with contextlib.suppress(Exception):
            loop.close()
    return asyncio.new_event_loop()


async def _send_items(items: list[tuple[int, dict[str, Any] | str]]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    for tenant_id, item in items:
        if isinstance(item, str):
            await layer.group_send(tenant_group(tenant_id), created_message(item))
        else:
            await _send_both(layer, tenant_id, item["execution_id"], event_message(item))


_publisher: Publisher | None = None
_publisher_lock = threading.Lock()


def publisher() -> Publisher:
    global _publisher
    with _publisher_lock:
        if _publisher is None:
            _publisher = Publisher()
        return _publisher


def _forget_publisher_after_fork() -> None:
    """A forked child has none of its parent's threads: it starts a publisher of its own."""
    global _publisher, _publisher_lock
    _publisher, _publisher_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_publisher_after_fork)


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
        self._polls = 0
        self._created_sent: dict[str, None] = {}
        self.last_timestamp = 0.0  # of the last event relayed: what the lag gauge is measured from

    def fetch_created(self) -> list[tuple[int, str]]:
        """New executions to announce, as (tenant id, execution id). Sync: call from a thread.

        Rows commit out of creation order too; a window of a few seconds back covers that."""
        from datetime import timedelta

        from django.utils import timezone

        from executions.models import Execution

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
        from django.db.models import Max

        from executions.models import ExecutionEvent

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
        """New executions (every few polls: they are rarer, and less urgent) and new events."""
        self._polls += 1
        created = self.fetch_created() if self._polls % 5 == 1 else []
        return created, self.fetch()

    async def run_once(self) -> int:
        from channels.db import database_sync_to_async

        layer = get_channel_layer()
        # One hop to the database thread a poll: the poll runs a hundred times a second.
        created, fresh = await database_sync_to_async(self.fetch_all)()
        for tenant_id, execution_id in created:
            await layer.group_send(tenant_group(tenant_id), created_message(execution_id))
        for _, tenant_id, wire in fresh:
            await _send_both(layer, tenant_id, wire["execution_id"], event_message(wire))
        if fresh:
            from executions.observability import gauges

            gauges.relayed(time.time() - self.last_timestamp)
        return len(fresh)

    async def run(self) -> None:
        import asyncio

        while True:
            try:
                await self.run_once()
            except Exception:
                logger.exception("event relay poll failed")
            await asyncio.sleep(self.poll_seconds)


_relay_task: Any = None


def ensure_relay() -> None:
    """Start the relay on the running event loop, once per process, when nobody publishes directly."""
    import asyncio

    global _relay_task
    if settings.ENACT_PUBLISH_DIRECT or (_relay_task is not None and not _relay_task.done()):
        return
    _relay_task = asyncio.get_running_loop().create_task(Relay(poll_seconds=settings.ENACT_RELAY_POLL_SECONDS).run())
