"""Load on the scaled deployment: many executions across ten tenants with different concurrency
limits, submitted through the API at once. Sampled all along: no tenant ever runs more than its
limit, and no tenant with a backlog and a free slot waits long while others run. At the end
nothing is lost: every execution completed, its events gap-free with one terminal event.

CI runs ENACT_LOAD_EXECUTIONS (300 by default); ``ENACT_LOAD_EXECUTIONS=1000`` is the full size.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.db import close_old_connections
from django.db.models import Count, Max, Q

from executions.models import Execution, ExecutionEvent
from tenants.models import Tenant
from tenants.services import api_key_create, tenant_create, tenant_set_limits

from .executions.test_processes import Cluster
from .test_scaled import Web, api, pytestmark  # noqa: F401  (the same marks: PostgreSQL and Redis)

EXECUTIONS = int(os.environ.get("ENACT_LOAD_EXECUTIONS", "300"))
LIMITS = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]  # max concurrent executions of the ten tenants
STARVED_SECONDS = 5.0


class Sampler:
    """Every 50 ms: how many executions each tenant runs and has queued."""

    def __init__(self, tenants: dict[int, int]) -> None:
        self.limits = tenants
        self.samples: list[tuple[float, dict[int, int], dict[int, int]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stop.wait(0.05):
                rows = (
                    Execution.objects.filter(tenant_id__in=list(self.limits))
                    .values("tenant_id")
                    .annotate(
                        running=Count("id", filter=Q(pk__in=Execution.objects.active().values("pk"))),
                        queued=Count("id", filter=Q(state="queued")),
                    )
                )
                running = {r["tenant_id"]: r["running"] for r in rows}
                queued = {r["tenant_id"]: r["queued"] for r in rows}
                self.samples.append((time.monotonic(), running, queued))
        finally:
            close_old_connections()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(10)

    def over_limit(self) -> list[tuple[int, int, int]]:
        return [
            (t, n, self.limits[t]) for _, running, _ in self.samples for t, n in running.items() if n > self.limits[t]
        ]

    def longest_starvation(self) -> float:
        """The longest a tenant had queued work, nothing running, while another tenant ran."""
        longest, since = 0.0, {}
        for at, running, queued in self.samples:
            others_run = sum(running.values()) > 0
            for tenant in self.limits:
                starved = queued.get(tenant, 0) > 0 and running.get(tenant, 0) == 0 and others_run
                if starved:
                    since.setdefault(tenant, at)
                    longest = max(longest, at - since[tenant])
                else:
                    since.pop(tenant, None)
        return longest


@pytest.mark.timeout(1200)
def test_many_executions_across_tenants_keep_their_limits_and_are_all_done(tmp_path: Path) -> None:
    tenants, keys = [], {}
    for i, limit in enumerate(LIMITS):
        tenant = tenant_create(slug=f"load-{i}")
        tenant_set_limits(tenant=tenant, changes={"max_concurrent_executions": limit, "requests_per_minute": None})
        tenants.append(tenant)
        keys[tenant.pk] = api_key_create(tenant=tenant, scope="write")[1]
    queue = f"load-{uuid.uuid4().hex[:12]}"  # its own task queue, as a deployment has
    web = Web(tmp_path / "web.log", queue)
    clusters = [Cluster(tmp_path / f"cluster-{n}.log", lease_seconds=10, queue=queue) for n in (1, 2)]
    sampler = Sampler({t.pk: limit for t, limit in zip(tenants, LIMITS, strict=True)})
    try:
        plan: list[Tenant] = [tenants[i % len(tenants)] for i in range(EXECUTIONS)]

        def submit(tenant: Tenant) -> str:
            body = {"blueprint": "demo.slow", "input": {"steps": 1, "seconds": 0.05}}
            return str(api(web, keys[tenant.pk], "POST", "executions", body)["id"])

        with ThreadPoolExecutor(max_workers=8) as pool:
            ids = list(pool.map(submit, plan))
        assert len(set(ids)) == EXECUTIONS

        def all_done() -> bool:
            return Execution.objects.filter(pk__in=ids, state="completed").count() == EXECUTIONS

        deadline = time.monotonic() + 600
        while not all_done():
            assert time.monotonic() < deadline, _states(ids)
            time.sleep(0.5)
    finally:
        sampler.finish()
        web.stop()
        for cluster in clusters:
            cluster.stop()

    assert sampler.samples, "the sampler saw nothing"
    assert sampler.over_limit() == []
    assert sampler.longest_starvation() < STARVED_SECONDS
    events = (
        ExecutionEvent.objects.filter(execution_id__in=ids)
        .values("execution_id")
        .annotate(n=Count("id"), last=Max("seq"), ends=Count("id", filter=Q(type="data-execution-end")))
    )
    per_execution = {row["execution_id"]: row for row in events}
    assert len(per_execution) == EXECUTIONS
    assert all(row["n"] == row["last"] and row["ends"] == 1 for row in per_execution.values())
    done_by_tenant: dict[int, int] = defaultdict(int)
    for tenant_id in Execution.objects.filter(pk__in=ids).values_list("tenant_id", flat=True):
        done_by_tenant[tenant_id] += 1
    assert sorted(done_by_tenant.values()) == sorted(plan.count(t) for t in tenants)


def _states(ids: list[str]) -> Any:
    return dict(Execution.objects.filter(pk__in=ids).values_list("state").annotate(n=Count("id")))
