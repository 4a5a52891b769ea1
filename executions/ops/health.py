"""Readiness: can this process reach its database and channel layer, and is any worker alive."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.utils import timezone

from executions.live.groups import channel_release
from executions.models import WorkerHeartbeat


def check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def check_channel_layer() -> str | None:
    """A message sent to a channel of our own comes back."""

    async def round_trip() -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel("readyz.")
        receiving = asyncio.ensure_future(layer.receive(channel))
        try:
            await layer.send(channel, {"type": "readyz.ping"})
            await asyncio.wait_for(asyncio.shield(receiving), timeout=2)
        finally:
            await channel_release(layer, channel, receiving)

    async def bounded() -> None:
        await asyncio.wait_for(round_trip(), timeout=5)  # a Redis that answers nothing at all

    try:
        async_to_sync(bounded)()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def check_workers() -> str | None:
    window = timedelta(seconds=3 * settings.ENACT_HEARTBEAT_SECONDS)
    if WorkerHeartbeat.objects.filter(last_seen__gte=timezone.now() - window).exists():
        return None
    return f"no worker seen in the last {window.total_seconds():g} s"


def readiness() -> dict[str, str | None]:
    """Each check's problem, or None when it passes."""
    return {"database": check_database(), "channel_layer": check_channel_layer(), "workers": check_workers()}
