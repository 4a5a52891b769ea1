"""The figures of ``/metrics``, through ``prometheus_client``.

Two kinds of figures:

- **Of the platform** (executions by tenant and state, the queue, today's usage, live workers):
  read from the database at scrape time by ``PlatformFigures``, so every web process reports the
  same and none of them needs to have seen the work.
- **Of processes** (executions each worker process ran and how long they waited to be picked up,
  slots in use, websocket connections, the relay's lag): counted where they happen, in
  ``prometheus_client`` metrics. With ``PROMETHEUS_MULTIPROC_DIR`` set (``up`` sets it for its web
  and worker processes; a scaled deployment sets one directory per host, emptied at boot), each
  process writes its figures there and ``/metrics`` on any web process of the host adds them up:
  the worker processes' counters are seen on the web. Without it, each process reports its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from executions.models import Execution, Step, WorkerHeartbeat
from tenants.models import Tenant, TenantDailyUsage

# Of worker processes -----------------------------------------------------------------------------

RUNS_ENDED = Counter(
    "enact_runs_ended",
    "Runs of executions that ended in a worker process's slots, by how: an execution's end "
    "(completed, failed, cancelled), a stop to wait (paused, waiting), or a hand-over (lease lost).",
    ["outcome"],
)
PICKUP_SECONDS = Histogram(
    "enact_pickup_seconds",
    "From submission to the first claim by a worker.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
SLOTS_BUSY = Gauge("enact_slots_busy", "Slots running an execution now.", multiprocess_mode="livesum")

# Of web processes ------------------------------------------------------------------------------

_SOCKETS = Gauge(
    "enact_websocket_connections", "Websocket connections open on the web processes.", multiprocess_mode="livesum"
)
_RELAY_LAG = Gauge(
    "enact_event_relay_lag_seconds", "Commit to relay of the last event a web process relayed.", multiprocess_mode="max"
)


class ProcessGauges:
    """What this process counts of its sockets and its relay, safe to change from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.websocket_connections = 0
        self.relay_lag_seconds: float | None = None  # commit -> relayed, of the last event relayed

    def socket_opened(self) -> None:
        with self._lock:
            self.websocket_connections += 1
            _SOCKETS.set(self.websocket_connections)

    def socket_closed(self) -> None:
        with self._lock:
            self.websocket_connections = max(0, self.websocket_connections - 1)
            _SOCKETS.set(self.websocket_connections)

    def relayed(self, lag_seconds: float) -> None:
        with self._lock:
            self.relay_lag_seconds = lag_seconds
            _RELAY_LAG.set(lag_seconds)


gauges = ProcessGauges()


def process_exiting() -> None:
    """Called as a process that counted figures exits: its live gauges stop counting."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(os.getpid())


def multiprocess_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


# Of the platform -----------------------------------------------------------------------------------


class PlatformFigures(Collector):
    """The figures read from the database at scrape time."""

    def collect(self) -> Iterator[Metric]:
        slugs = dict(Tenant.objects.values_list("pk", "slug"))

        def tenant(pk: int) -> str:
            return slugs.get(pk, str(pk))

        executions = GaugeMetricFamily(
            "enact_executions", "Executions by tenant and state.", labels=["tenant", "state"]
        )
        rows = Execution.objects.values_list("tenant_id", "state").annotate(n=Count("id")).order_by()
        for tenant_id, state, n in rows:
            executions.add_metric([tenant(tenant_id), state], n)
        yield executions

        yield GaugeMetricFamily(
            "enact_queue_depth",
            "Executions queued, waiting for a worker or a free slot of their tenant.",
            value=Execution.objects.filter(state=Execution.State.QUEUED).count(),
        )

        today = (
            TenantDailyUsage.objects.filter(day=timezone.now().date())
            .values_list("tenant_id")
            .annotate(executions=Sum("executions"), tokens=Sum("tokens"), cost=Sum("cost_usd"))
        )
        submitted = GaugeMetricFamily(
            "enact_executions_today", "Executions submitted today (UTC), by tenant.", labels=["tenant"]
        )
        tokens = GaugeMetricFamily("enact_tokens_today", "Tokens used today (UTC), by tenant.", labels=["tenant"])
        cost = GaugeMetricFamily(
            "enact_cost_usd_today", "Cost in US dollars today (UTC), by tenant.", labels=["tenant"]
        )
        for tenant_id, n, used, spent in today:
            submitted.add_metric([tenant(tenant_id)], n or 0)
            tokens.add_metric([tenant(tenant_id)], used or 0)
            cost.add_metric([tenant(tenant_id)], float(spent or 0))
        yield from (submitted, tokens, cost)

        yield GaugeMetricFamily(
            "enact_steps_running", "Steps running now.", value=Step.objects.filter(state="running").count()
        )

        window = timezone.now() - timedelta(seconds=3 * settings.ENACT_HEARTBEAT_SECONDS)
        live = list(WorkerHeartbeat.objects.filter(last_seen__gte=window).values_list("worker", "running"))
        yield GaugeMetricFamily("enact_workers", "Worker processes seen in the last three heartbeats.", value=len(live))
        running = GaugeMetricFamily(
            "enact_worker_running", "Executions each live worker process runs.", labels=["worker"]
        )
        for worker, n in live:
            running.add_metric([worker], n)
        yield running
        yield GaugeMetricFamily("enact_scrape_timestamp_seconds", "When these figures were read.", value=time.time())


class _ThisProcess(Collector):
    """This process's own figures (and the client's process and GC figures), without a
    multiprocess directory to add up."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def metrics_text() -> bytes:
    """The Prometheus text exposition of the platform's figures."""
    registry = CollectorRegistry()
    registry.register(PlatformFigures())
    if multiprocess_dir():
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ThisProcess())
    return generate_latest(registry)
