"""Getting committed events to live listeners, from the process that committed them.

Two ways, one per deployment:
- scaled (``REDIS_URL`` set): whichever process commits an event publishes it to the channel
  layer groups of its execution and its tenant, from a background thread, after commit;
- embedded default (in-memory channel layer, so nothing crosses processes): nobody publishes
  directly; the web process relays new rows of the event log to its own groups (``relay.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings

from executions.live.groups import created_message, event_message, send_both, tenant_group

logger = logging.getLogger(__name__)


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


def publish_created(tenant_id: int, execution_id: str) -> None:
    """Tell the tenant's live lists about a new execution. Call only after commit.

    A new execution has no event yet (its first comes when a worker starts it); without Redis,
    the relay finds new rows itself."""
    if publishes_directly():
        publisher().submit_created(tenant_id, execution_id)


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
            await send_both(layer, tenant_id, item["execution_id"], event_message(item))


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
