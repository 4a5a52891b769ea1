"""``/ws/executions/``: the tenant's feed of its executions, as they are created or change state."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from executions import selectors
from executions.kernel.state import TERMINAL_EXECUTION_STATES
from executions.live.groups import STATE_AFTER_EVENT, tenant_group
from executions.live.sockets import Socket
from executions.serializers import ExecutionSummarySerializer

TERMINAL_STATES = frozenset(s.value for s in TERMINAL_EXECUTION_STATES)
# Events after which an execution's state differs (the feed sends its new summary).
STATE_CHANGING_TYPES = frozenset(STATE_AFTER_EVENT)


class TenantFeed(Socket):
    """``/ws/executions/``: ``{"type": "execution", "execution": summary}`` whenever one of the
    tenant's executions is created or changes state."""

    SHOWN = 200  # unfinished executions whose state the feed checks again now and then

    async def opened(self) -> None:
        self.group = tenant_group(self.caller.tenant.pk)
        # The unfinished executions the client was told about, with what it was told (newest last).
        self.shown: dict[str, tuple[Any, Any]] = {}
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.start_resync()

    async def execution_created(self, message: dict[str, Any]) -> None:
        await self._send_summaries([message["execution_id"]])

    async def execution_event(self, message: dict[str, Any]) -> None:
        if message.get("event_type") in STATE_CHANGING_TYPES:
            await self._send_summaries([message["execution_id"]])

    async def resync(self) -> bool:
        """A state change that never came live: the shown executions' states, read again."""
        if self.shown:
            await self._send_summaries(list(self.shown), only_changed=True)
        return True

    async def _send_summaries(self, execution_ids: list[str], *, only_changed: bool = False) -> None:
        async with self.in_order:
            summaries = await database_sync_to_async(_summaries)(self.caller.tenant, execution_ids)
            for summary in summaries:
                told = (summary["state"], summary["wait_reason"])
                if only_changed and self.shown.get(summary["id"]) == told:
                    continue
                self.shown.pop(summary["id"], None)
                if summary["state"] not in TERMINAL_STATES:
                    self.shown[summary["id"]] = told
                await self.send_json({"type": "execution", "execution": summary})
            while len(self.shown) > self.SHOWN:
                self.shown.pop(next(iter(self.shown)))


# Events after which an execution's state differs (the feed sends its new summary).


def _summaries(tenant: Any, execution_ids: list[str]) -> list[dict[str, Any]]:
    executions = selectors.execution_list(tenant=tenant).filter(pk__in=execution_ids)
    return [dict(row) for row in ExecutionSummarySerializer(executions, many=True).data]
