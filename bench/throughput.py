"""Throughput: executions of a 10-step graph per second, against the number of worker processes.

One django-q2 cluster with W worker processes on PostgreSQL (the Redis broker when Redis answers,
else the ORM broker) runs N executions of ``demo.chain`` with n=10, all submitted at once by one
tenant allowed to run them all. A figure is N over the time from the first submission to the
last execution completed; steps/s is ten times that. Each W is measured ``--repeats`` times
(median shown); a plot of the medians goes to ``docs/throughput.png`` when matplotlib is there.

    .venv/bin/python -m bench.throughput                  # W = 1, 2, 4; N = 200; 3 repeats
    .venv/bin/python -m bench.throughput --tiny           # W = 2, N = 10, 1 run: a CI smoke check
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, machine_info, markdown_table, write_json
from bench.durable_steps import Cluster, _create_database, _database_url, _redis_url

ROOT = Path(__file__).resolve().parents[1]
STEPS = 10


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database", default="enact_bench_throughput")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    if args.tiny:
        args.workers, args.executions, args.repeats = [2], 10, 1
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
    from executions.services import execution_submit

    started = time.perf_counter()
    ids = [execution_submit(tenant=tenant, graph="demo.chain", input={"n": STEPS})[0].pk for _ in range(count)]
    deadline = time.monotonic() + timeout
    while Execution.objects.filter(pk__in=ids, state="completed").count() < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{count} executions did not complete in {timeout} s")
        time.sleep(0.02)
    return count / (time.perf_counter() - started)


def _wait_warm(tenant: Any) -> None:
    _one_run(tenant, 2, timeout=120)  # the cluster is up and its workers have connected


def _plot(medians: dict[int, float], broker: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: pip install -e '.[bench]' for the plot")
        return False
    workers = sorted(medians)
    figure, axis = plt.subplots(figsize=(6, 3.6), dpi=110)
    axis.plot(workers, [medians[w] for w in workers], marker="o")
    axis.set_xlabel("worker processes")
    axis.set_ylabel("executions / s (10 steps each)")
    axis.set_xticks(workers)
    axis.set_ylim(bottom=0)  # from zero: the differences are small, and should look it
    axis.set_title(f"Throughput on PostgreSQL, {broker} broker, 2 CPUs")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return True


def main() -> None:
    args = _parse()
    url = _database_url(args.database)
    _create_database(url)
    redis_url = _redis_url()
    broker = "Redis" if redis_url else "ORM"
    _setup(url, redis_url, f"throughput-{uuid.uuid4().hex[:8]}")
    tenant = _tenant()
    samples: dict[int, list[float]] = {}
    for workers in args.workers:
        cluster = Cluster(url, redis_url, workers=workers, queue=os.environ["ENACT_QUEUE_NAME"])
        try:
            _wait_warm(tenant)
            samples[workers] = [_one_run(tenant, args.executions) for _ in range(args.repeats)]
        finally:
            cluster.stop()
    medians = {w: statistics.median(s) for w, s in samples.items()}
    rows = [[str(w), f"{medians[w]:.1f}", f"{medians[w] * STEPS:.0f}", f"{max(samples[w]):.1f}"] for w in medians]
    print(f"\nThroughput, {args.executions} executions of {STEPS} steps, {broker} broker, median of {args.repeats}:\n")
    print(markdown_table(["workers", "executions/s", "steps/s", "best executions/s"], rows))
    if not args.tiny:
        plotted = _plot(medians, broker, ROOT / "docs" / "throughput.png")
        write_json(
            RESULTS_DIR / "throughput.json",
            {
                "benchmark": "throughput",
                "machine": machine_info(),
                "broker": broker,
                "executions": args.executions,
                "steps_each": STEPS,
                "executions_per_s": {str(w): [round(v, 2) for v in s] for w, s in samples.items()},
                "plot": "docs/throughput.png" if plotted else None,
            },
        )


if __name__ == "__main__":
    main()
