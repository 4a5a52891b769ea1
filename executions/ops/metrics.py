"""The figures of ``/metrics``, in the Prometheus text format.

Figures about tenants and executions are read from the database at scrape time, so every web
process reports the same; figures about a process (its websocket connections, its relay's lag)
are kept in memory by that process, and each process is scraped on its own.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone

from executions.models import Execution, Step, WorkerHeartbeat
from tenants.models import Tenant, TenantDailyUsage


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


def _line(name: str, value: float, **labels: Any) -> str:
    if labels:
        inner = ",".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}} {value:g}"
    return f"{name} {value:g}"


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def metrics_text() -> str:
    """The Prometheus text exposition of the platform's figures."""
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
