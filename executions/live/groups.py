"""Channel groups and the messages sent to them: what every live part of the platform agrees on.

Who gets what: each execution has a group (its sockets and streams), each tenant a group (its
feeds and live lists). A message carries one committed event, encoded once for every listener,
or the news of a new execution. Which events change an execution's state is the kernel's
``EXECUTION_STATE_AFTER``; ``STATE_AFTER_EVENT`` is the same table by type name, for pages.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from executions.kernel.events import EXECUTION_STATE_AFTER

logger = logging.getLogger(__name__)

# An execution's state after each event that changes it, by the events' wire names.
STATE_AFTER_EVENT = {event.value: state.value for event, state in EXECUTION_STATE_AFTER.items()}


def execution_group(execution_id: str) -> str:
    return f"execution.{execution_id}"


def tenant_group(tenant_id: int | str) -> str:
    return f"tenant.{tenant_id}"


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


async def send_both(layer: Any, tenant_id: int | str, execution_id: str, message: dict[str, Any]) -> None:
    await layer.group_send(execution_group(execution_id), message)
    await layer.group_send(tenant_group(tenant_id), message)
