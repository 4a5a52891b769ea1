"""What operators watch: readiness checks, the figures of ``/metrics``, and the log context.

Figures about tenants and executions are read from the database at scrape time, so every web
process reports the same; figures about a process (its websocket connections, its relay's lag)
are kept in memory by that process, and each process is scraped on its own.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone

# --- this process's gauges -------------------------------------------------------------------------


class ProcessGauges:
    """Counters of this process, safe to change from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.websocket_connections = 0
        self.relay_lag_seconds: float | None = None  # commit -> relayed, of the last event relayed

    def socket_opened(self) -> None:
        with self._lock:
            self.websocket_connections += 1

    def socket_closed(self) -> None:
        with self._lock:
            self.websocket_connections = max(0, self.websocket_connections - 1)

    def relayed(self, lag_seconds: float) -> None:
        with self._lock:
            self.relay_lag_seconds = lag_seconds


gauges = ProcessGauges()


# --- log context -----------------------------------------------------------------------------------

_log_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("enact_log_context", default=None)


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Within it, every log record of this thread (or task) carries these fields (tenant, execution)."""
    token = _log_context.set({**(_log_context.get() or {}), **{k: str(v) for k, v in fields.items()}})
    try:
        yield
    finally:
        _log_context.reset(token)


class ContextFilter(logging.Filter):
    """Puts the log context on each record: ``tenant_id`` and ``execution_id`` ("-" when none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = _log_context.get() or {}
        record.tenant_id = context.get("tenant_id", "-")
        record.execution_id = context.get("execution_id", "-")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line, for log collectors (``ENACT_LOG_FORMAT=json``)."""

    def format(self, record: logging.LogRecord) -> str:
        import json

        entry = {
            "time": timezone.now().isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "tenant_id": getattr(record, "tenant_id", "-"),
            "execution_id": getattr(record, "execution_id", "-"),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


# --- readiness -------------------------------------------------------------------------------------


def check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def check_channel_layer() -> str | None:
    """A message sent to a channel of our own comes back."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer

    async def round_trip() -> None:
        from executions.streaming import channel_release

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
    from executions.models import WorkerHeartbeat

    window = timedelta(seconds=3 * settings.ENACT_HEARTBEAT_SECONDS)
    if WorkerHeartbeat.objects.filter(last_seen__gte=timezone.now() - window).exists():
        return None
    return f"no worker seen in the last {window.total_seconds():g} s"


def readiness() -> dict[str, str | None]:
    """Each check's problem, or None when it passes."""
    return {"database": check_database(), "channel_layer": check_channel_layer(), "workers": check_workers()}


# --- /metrics --------------------------------------------------------------------------------------


def _line(name: str, value: float, **labels: Any) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}} {value:g}"
    return f"{name} {value:g}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text() -> str:
    """The Prometheus text exposition of the platform's figures."""
    from executions.models import Execution, WorkerHeartbeat
    from tenants.models import Tenant, TenantDailyUsage

    slugs = dict(Tenant.objects.values_list("pk", "slug"))
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])

    family("enact_executions", "gauge", "Executions by tenant and state.")
    rows = Execution.objects.values_list("tenant_id", "state").annotate(n=Count("id")).order_by()
    for tenant_id, state, n in rows:
        out.append(_line("enact_executions", n, tenant=slugs.get(tenant_id, tenant_id), state=state))

    family("enact_queue_depth", "gauge", "Executions queued, waiting for a worker or a free slot of their tenant.")
    out.append(_line("enact_queue_depth", Execution.objects.filter(state=Execution.State.QUEUED).count()))

    today = (
        TenantDailyUsage.objects.filter(day=timezone.now().date())
        .values_list("tenant_id")
        .annotate(executions=Sum("executions"), tokens=Sum("tokens"), cost=Sum("cost_usd"))
    )
    family("enact_executions_today", "gauge", "Executions submitted today (UTC), by tenant.")
    family("enact_tokens_today", "gauge", "Tokens used today (UTC), by tenant.")
    family("enact_cost_usd_today", "gauge", "Cost in US dollars today (UTC), by tenant.")
    for tenant_id, executions, tokens, cost in today:
        tenant = slugs.get(tenant_id, tenant_id)
        out.append(_line("enact_executions_today", executions or 0, tenant=tenant))
        out.append(_line("enact_tokens_today", tokens or 0, tenant=tenant))
        out.append(_line("enact_cost_usd_today", float(cost or 0), tenant=tenant))

    family("enact_steps_running", "gauge", "Steps running now.")
    from executions.models import Step

    out.append(_line("enact_steps_running", Step.objects.filter(state="running").count()))

    family("enact_workers", "gauge", "Worker processes seen in the last three heartbeats.")
    window = timezone.now() - timedelta(seconds=3 * settings.ENACT_HEARTBEAT_SECONDS)
    live = list(WorkerHeartbeat.objects.filter(last_seen__gte=window).values_list("worker", "running"))
    out.append(_line("enact_workers", len(live)))
    family("enact_worker_running", "gauge", "Executions each live worker process runs.")
    for worker, running in live:
        out.append(_line("enact_worker_running", running, worker=worker))

    family("enact_websocket_connections", "gauge", "Websocket connections open on this web process.")
    out.append(_line("enact_websocket_connections", gauges.websocket_connections))
    if gauges.relay_lag_seconds is not None:
        family("enact_event_relay_lag_seconds", "gauge", "Commit to relay of the last event this process relayed.")
        out.append(_line("enact_event_relay_lag_seconds", round(gauges.relay_lag_seconds, 4)))
    family("enact_scrape_timestamp_seconds", "gauge", "When these figures were read.")
    out.append(_line("enact_scrape_timestamp_seconds", round(time.time(), 3)))
    return "\n".join(out) + "\n"
