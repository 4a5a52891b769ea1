"""Getting committed events to live listeners.

Two ways, one per deployment:
- scaled (``REDIS_URL`` set): whichever process commits an event publishes it to the channel
  layer groups of its execution and its tenant, from a background thread, after commit;
- embedded default (in-memory channel layer, so nothing crosses processes): nobody publishes
  directly; the web process relays new rows of the event log to its own groups.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

logger = logging.getLogger(__name__)


def execution_group(execution_id: str) -> str:
    return f"execution.{execution_id}"


def tenant_group(tenant_id: int | str) -> str:
    return f"tenant.{tenant_id}"


def publish_event(tenant_id: int, wire: dict[str, Any]) -> None:
    """Hand a committed event to the publisher. Call only after commit (``transaction.on_commit``)."""
    if settings.ENACT_PUBLISH_DIRECT:
        publisher().submit(tenant_id, wire)


def send_event(tenant_id: int | str, wire: dict[str, Any]) -> None:
    """Send one event to its groups now (from a thread with no running event loop)."""
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "execution.event", "event": wire}
    async_to_sync(_send_both)(layer, tenant_id, wire["execution_id"], message)


async def _send_both(layer: Any, tenant_id: int | str, execution_id: str, message: dict[str, Any]) -> None:
    await layer.group_send(execution_group(execution_id), message)
    await layer.group_send(tenant_group(tenant_id), message)


class Publisher:
    """A daemon thread that sends events in commit order, so the committing thread never waits."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[int, dict[str, Any]]] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="enact-publisher", daemon=True)
        self._thread.start()

    def submit(self, tenant_id: int, wire: dict[str, Any]) -> None:
        self._queue.put((tenant_id, wire))

    def _run(self) -> None:
        while True:
            tenant_id, wire = self._queue.get()
            try:
                send_event(tenant_id, wire)
            except Exception:
                # Listeners recover from the log (they resume after their last seq); keep going.
                logger.exception("publishing event %s of %s failed", wire.get("seq"), wire.get("execution_id"))


_publisher: Publisher | None = None
_publisher_lock = threading.Lock()


def publisher() -> Publisher:
    global _publisher
    with _publisher_lock:
        if _publisher is None:
            _publisher = Publisher()
        return _publisher
