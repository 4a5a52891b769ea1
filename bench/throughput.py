"""Throughput: executions of a 10-step graph per second, against the number of worker processes.

Worker clusters (django-q2) on PostgreSQL (the Redis broker when Redis answers, else the ORM
broker) run N executions of ``demo.chain`` with n=10, all submitted at once by one tenant allowed
to run them all. A figure is N over the time from the first submission to the last execution
completed; steps/s is ten times that. Each configuration (C clusters of W worker processes) is
measured ``--repeats`` times (median shown): one cluster of 1, 2 and 4 workers, and the scaled
deployment's two clusters of 1 and 2. The plot of the medians goes to ``docs/throughput.png``.

    .venv/bin/python -m bench.throughput                  # the five configurations; N = 200; 3 repeats
    .venv/bin/python -m bench.throughput --configurations 2x2 1x4
    .venv/bin/python -m bench.throughput --tiny           # 2 clusters of 1, N = 10, 1 run: a CI smoke check
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from typing import Any

from bench import plots
from bench._common import RESULTS_DIR, machine_info, markdown_table, write_json
from bench.deployment import cluster, cluster_env, create_database, database_url, redis_url, wait_for_workers

STEPS = 10


def _configuration(text: str) -> tuple[int, int]:
    """``CxW``: C clusters of W worker processes."""
    try:
        clusters, workers = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not CxW (clusters x workers), such as 2x2") from None
    if clusters < 1 or workers < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least one cluster of one worker")
    return clusters, workers


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configurations", type=_configuration, nargs="+",
                        default=[(1, 1), (1, 2), (1, 4), (2, 1), (2, 2)], help="CxW: C clusters of W workers")  # fmt: skip
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database", default="enact_bench_throughput")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    if args.tiny:
        args.configurations, args.executions, args.repeats = [(2, 1)], 10, 1
    return args


def _setup(url: str, redis_url: str | None, queue: str) -> None:
    os.environ.update(DATABASE_URL=url, ENACT_QUEUE_NAME=queue, ENACT_PUBLISH_DIRECT="0")
    os.environ.pop("REDIS_URL", None)
    if redis_url:
        os.environ["REDIS_URL"] = redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "enact_platform.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _tenant() -> Any:
    from tenants.models import Tenant
    from tenants.services import tenant_create, tenant_set_limits

    tenant = Tenant.objects.filter(slug="throughput").first() or tenant_create(slug="throughput")
    tenant_set_limits(
        tenant=tenant,
        changes={"max_concurrent_executions": 1000, "executions_per_day": None, "max_steps": None},
    )
    return tenant


def _one_run(tenant: Any, count: int, timeout: float = 600) -> float:
    """Executions per second for one batch of ``count``."""
    from executions.models import Execution
    from executions.services.submit import execution_submit

    started = time.perf_counter()
    ids = [execution_submit(tenant=tenant, blueprint="demo.chain", input={"n": STEPS})[0].pk for _ in range(count)]
    deadline = time.monotonic() + timeout
    while Execution.objects.filter(pk__in=ids, state="completed").count() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} executions did not complete in {timeout} s")
        time.sleep(0.02)
    return count / (time.perf_counter() - started)


def _wait_warm(tenant: Any) -> None:
    _one_run(tenant, 2, timeout=120)  # the cluster is up and its workers have connected


def main() -> None:
    args = _parse()
    url = create_database(database_url(args.database))
    redis = redis_url()
    broker = "Redis" if redis else "ORM"
    _setup(url, redis, f"throughput-{uuid.uuid4().hex[:8]}")
    tenant = _tenant()
    env = cluster_env(url, redis, os.environ["ENACT_QUEUE_NAME"], ENACT_PUBLISH_DIRECT="0")
    from django.utils import timezone

    configurations = []
    for clusters, workers in args.configurations:
        since = timezone.now()
        running = [cluster(env, workers=workers) for _ in range(clusters)]
        try:
            wait_for_workers(clusters * workers, since)
            _wait_warm(tenant)
            samples = [_one_run(tenant, args.executions) for _ in range(args.repeats)]
        finally:
            for process in running:
                process.stop()
        configurations.append(
            {"clusters": clusters, "workers": workers, "executions_per_s": [round(v, 2) for v in samples],
             "median": round(statistics.median(samples), 2)}
        )  # fmt: skip
    rows = [
        [f"{c['clusters']} x {c['workers']}", str(c["clusters"] * c["workers"]), f"{c['median']:.1f}",
         f"{c['median'] * STEPS:.0f}", f"{max(c['executions_per_s']):.1f}"]
        for c in configurations
    ]  # fmt: skip
    print(f"\nThroughput, {args.executions} executions of {STEPS} steps, {broker} broker, median of {args.repeats}:\n")
    print(
        markdown_table(["clusters x workers", "workers in all", "executions/s", "steps/s", "best executions/s"], rows)
    )
    if args.tiny:
        return
    payload = {
        "benchmark": "throughput",
        "machine": machine_info(),
        "broker": broker,
        "executions": args.executions,
        "steps_each": STEPS,
        "configurations": configurations,
    }
    write_json(RESULTS_DIR / "throughput.json", payload)
    for path in plots.plot_throughput(payload, plots.DOCS):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
