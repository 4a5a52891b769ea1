"""Durable step cost and pickup latency, on PostgreSQL.

Per-step cost of an N-node chain run through the platform's kernel with the Django stores (every
event appended to the log and the Execution and Step rows kept current, a checkpoint after every
step), side by side in one run with one INSERT+commit on the same database (the floor for a
durable step) and with LangGraph on the same chain with its PostgresSaver.

Then pickup latency: submit through the service -> the first step's start, as stamped on its
event by the worker, with idle workers: the scaled deployment's two worker clusters (django-q2)
with the Redis broker, and the same with the ORM broker.

    .venv/bin/python -m bench.durable_steps                # n=200, 3 runs, 50 pickups per broker
    .venv/bin/python -m bench.durable_steps --pickup-only  # only the pickups
    .venv/bin/python -m bench.durable_steps --tiny         # a smoke check for CI
    DATABASE_URL=postgres://… .venv/bin/python -m bench.durable_steps

It uses its own database (``enact_bench`` unless ``--database`` names another), created if missing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench import plots
from bench._common import (
    RESULTS_DIR,
    Samples,
    fmt,
    machine_info,
    markdown_table,
    package_version,
    rotated,
    timed,
    write_json,
)
from bench.deployment import cluster, cluster_env, create_database, database_url, redis_url, wait_for_workers

ROOT = Path(__file__).resolve().parents[1]
TARGET_VS_PEER = 0.3
TARGET_VS_FLOOR = 3.0


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pickups", type=int, default=50)
    parser.add_argument("--database", default="enact_bench")
    parser.add_argument("--tiny", action="store_true", help="n=20, 1 run, 5 pickups; writes no results")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "durable_steps.json")
    parser.add_argument("--clusters", type=int, default=2, help="worker clusters (2 workers each) for the pickups")
    parser.add_argument("--pickup-only", action="store_true", help="only the pickups; merged into the JSON")
    parser.add_argument("--broker", choices=["orm", "redis"], help=argparse.SUPPRESS)  # a pickup run's child
    args = parser.parse_args()
    if args.tiny:
        args.n, args.repeats, args.pickups = 20, 1, 5
    return args


BENCH_QUEUE = "enact-bench"  # its own queue: tasks others left on a shared broker never get in the way


def _setup_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["ENACT_QUEUE_NAME"] = BENCH_QUEUE
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "enact_platform.settings")
    os.environ["ENACT_PUBLISH_DIRECT"] = "0"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


# --- the three durable variants ----------------------------------------------------------------


def insert_commit_floor(url: str, count: int) -> float:
    """Median µs of one small INSERT + commit, the least a durable step can cost."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, payload jsonb)")
        samples = []
        for i in range(count):
            start = time.perf_counter()
            conn.execute("INSERT INTO bench_floor (payload) VALUES (%s)", (f'{{"i": {i}}}',))
            samples.append((time.perf_counter() - start) * 1e6)
        conn.execute("DROP TABLE bench_floor")
    return statistics.median(samples)


def _bench_tenant() -> Any:
    from tenants.models import Tenant
    from tenants.services import tenant_create, tenant_set_limits

    tenant = Tenant.objects.filter(slug="bench").first() or tenant_create(slug="bench")
    # A clean slate: executions an earlier, interrupted run left behind must not compete for
    # the workers whose pickup this measures.
    from executions.models import Execution

    Execution.objects.filter(tenant=tenant).exclude(state__in=Execution.TERMINAL).delete()
    unlimited = {
        "max_steps": None,
        "max_tokens": None,
        "max_wall_time_s": None,
        "max_cost_usd": None,
        "max_step_repetitions": None,
        "idle_timeout_s": None,
        "max_concurrent_executions": 100,
        "executions_per_day": None,
    }
    tenant_set_limits(tenant=tenant, changes=unlimited)
    return tenant


def ours_durable(tenant: Any, n: int, durability: str = "sync") -> float:
    """µs per step of one whole demo.chain execution through the kernel and the Django stores,
    as a worker runs it, with the tenant's durability set to ``durability``."""
    from django.db.models import Count, Max

    from executions.models import Execution, ExecutionEvent
    from executions.persistence.kernels import kernel_close, kernel_for
    from executions.runtime.run import runnable_for

    limits = tenant.limits
    limits.durability = durability
    execution = Execution.objects.create(tenant=tenant, blueprint="demo.chain", input={"n": n})
    runnable = runnable_for(execution)

    def run() -> Any:
        # As in a worker: its monitor raises this flag when a message arrives, so steps need not ask.
        kernel = kernel_for(execution, inbox_pending=threading.Event(), limits=limits, background_commits=True)
        try:
            return kernel.execute_graph(runnable.graph, runnable.initial_state)
        finally:
            kernel_close(kernel)

    seconds, result = timed(run)
    assert result.state.value == "completed", result
    assert result.output == n, result
    # Everything was stored by the time the run returned: the row's end, and every event, gap-free.
    stored = ExecutionEvent.objects.filter(execution_id=execution.pk).aggregate(count=Count("seq"), last=Max("seq"))
    assert Execution.objects.get(pk=execution.pk).state == "completed"
    assert stored["count"] == stored["last"] >= 3 * n, stored
    return seconds / n * 1e6


def langgraph_postgres(url: str, n: int, durability: str) -> float | None:
    """µs per step of the same chain in LangGraph with its PostgresSaver. ``durability``: "sync"
    (each checkpoint stored before the next step) or "async" (LangGraph's default)."""
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
        from langgraph.graph import END, START, StateGraph
    except ImportError:
        return None
    from typing import TypedDict

    class State(TypedDict):
        value: int

    builder = StateGraph(State)
    for i in range(n):
        builder.add_node(f"n{i}", lambda state: {"value": state["value"] + 1})
        builder.add_edge(START if i == 0 else f"n{i - 1}", f"n{i}")
    builder.add_edge(f"n{n - 1}", END)
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
        graph = builder.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": f"bench-{time.time_ns()}"}, "recursion_limit": n + 10}
        seconds, out = timed(lambda: graph.invoke({"value": 0}, config, durability=durability))
    assert out["value"] == n, out
    return seconds / n * 1e6


# (name, label, which side, durability): each of ours is compared with the peer's same mode.
VARIANTS = [
    ("ours_sync", "ours, durability sync (the default)", "ours", "sync"),
    ("langgraph_sync", 'LangGraph + PostgresSaver, durability="sync"', "peer", "sync"),
    ("ours_async", "ours, durability async (group commit)", "ours", "async"),
    ("langgraph_async", 'LangGraph + PostgresSaver, durability="async" (its default)', "peer", "async"),
]


def durable_rounds(url: str, n: int, repeats: int) -> dict[str, Samples]:
    tenant = _bench_tenant()
    ours_durable(tenant, n, "sync")  # warm-up: connections, imports, plans
    ours_durable(tenant, n, "async")
    peer_ok = langgraph_postgres(url, n, "sync") is not None
    runs = []
    found: dict[str, Samples] = {}
    for name, label, side, durability in VARIANTS:
        if side == "peer" and not peer_ok:
            continue
        samples = found[name] = Samples(name, label)
        if side == "ours":
            runs.append((name, lambda d=durability: ours_durable(tenant, n, d), samples))
        else:
            runs.append((name, lambda d=durability: langgraph_postgres(url, n, d), samples))
    for round_no in range(repeats):
        for _, run, samples in rotated(runs, round_no):
            samples.us_per_step.append(run())  # type: ignore[arg-type]
    return found


# --- pickup latency ----------------------------------------------------------------------------


def pickup_latencies(url: str, count: int, clusters: int) -> list[float]:
    """ms from just before ``execution_submit`` to the first step's start, one at a time, with
    ``clusters`` idle worker clusters of two workers.

    Runs in a process whose settings already name the broker (django-q2 reads them at import)."""
    from django.conf import settings
    from django.utils import timezone

    from executions.models import Execution, ExecutionEvent
    from executions.services.submit import execution_submit

    tenant = _bench_tenant()
    env = cluster_env(url, settings.REDIS_URL or None, BENCH_QUEUE, ENACT_PUBLISH_DIRECT="0")
    since = timezone.now()
    running = [cluster(env, workers=2) for _ in range(clusters)]
    try:
        wait_for_workers(2 * clusters, since)
        _wait_for_first_run(tenant, execution_submit, Execution)
        samples = []
        for _ in range(count):
            submitted = timezone.now()
            execution, _ = execution_submit(tenant=tenant, blueprint="demo.chain", input={"n": 1})
            started = _wait_event(ExecutionEvent, execution.pk, "data-step-start")
            samples.append((started - submitted).total_seconds() * 1000)
            _wait_state(Execution, execution.pk, "completed")
            time.sleep(0.05)  # idle workers, as the figure asks
        return samples
    finally:
        for process in running:
            process.stop()


def pickup_in_child(database: str, count: int, redis: str | None, clusters: int) -> list[float]:
    """The pickups of one broker, in a process of their own: django-q2 picks its broker at import."""
    env = {**os.environ}
    env.pop("REDIS_URL", None)
    if redis:
        env["REDIS_URL"] = redis
    command = [sys.executable, "-m", "bench.durable_steps", "--broker", "redis" if redis else "orm",
               "--pickups", str(count), "--database", f"{database}_pickups", "--clusters", str(clusters)]  # fmt: skip
    out = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the pickup run ({'redis' if redis else 'orm'}) failed:\n{out.stderr[-3000:]}")
    return [float(x) for x in out.stdout.strip().splitlines()[-1].split(",")]


def pickup_rounds(args: argparse.Namespace) -> dict[str, list[float]]:
    pickups = {"orm": pickup_in_child(args.database, args.pickups, None, args.clusters)}
    redis = redis_url()
    if redis and not args.tiny:  # the tiny run only checks that the benchmark still works
        pickups["redis"] = pickup_in_child(args.database, args.pickups, redis, args.clusters)
    print(f"\nPickup latency (submit -> first step started), {args.pickups} submissions, "
          f"{args.clusters} idle cluster(s) of 2 workers:\n")  # fmt: skip
    print(
        markdown_table(
            ["broker", "p50 ms", "p99 ms", "max ms"],
            [[b, fmt(_percentile(v, 0.5)), fmt(_percentile(v, 0.99)), fmt(max(v))] for b, v in pickups.items()],
        )
    )
    return pickups


def pickup_json(pickups: dict[str, list[float]], clusters: int) -> dict[str, Any]:
    return {
        broker: {
            "clusters": clusters,
            "p50": round(_percentile(v, 0.5), 2),
            "p99": round(_percentile(v, 0.99), 2),
            "samples": [round(x, 2) for x in v],
            "quantiles": plots.quantiles(v),
        }
        for broker, v in pickups.items()
    }


def _wait_for_first_run(tenant: Any, submit: Any, model: Any) -> None:
    execution, _ = submit(tenant=tenant, blueprint="demo.chain", input={"n": 1})
    _wait_state(model, execution.pk, "completed", timeout=60)


def _wait_event(model: Any, execution_id: str, event_type: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = (
            model.objects.filter(execution_id=execution_id, type=event_type).values_list("timestamp", flat=True).first()
        )
        if found:
            return found
        time.sleep(0.005)
    raise TimeoutError(f"no {event_type} for {execution_id}")


def _wait_state(model: Any, execution_id: str, state: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while model.objects.values_list("state", flat=True).get(pk=execution_id) != state:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{execution_id} did not reach {state}")
        time.sleep(0.005)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main() -> None:
    args = _parse()
    # A pickup run starts from an empty database: the execution table is the queue, and what an
    # earlier run left ready (an execution its killed workers held) would be claimed first.
    url = create_database(database_url(args.database), fresh=bool(args.broker))
    _setup_django(url)
    if args.broker:
        print(",".join(f"{v:.3f}" for v in pickup_latencies(url, args.pickups, args.clusters)))
        return
    if args.pickup_only:
        _pickup_only(args)
        return

    floor = insert_commit_floor(url, 200 if args.tiny else 2000)
    durable = durable_rounds(url, args.n, args.repeats)
    ratios = {
        mode: durable[f"ours_{mode}"].median / durable[f"langgraph_{mode}"].median
        for mode in ("sync", "async")
        if f"langgraph_{mode}" in durable
    }
    rows = [["one INSERT + commit (floor)", fmt(floor), "1.00x", "", ""]]
    for name, samples in durable.items():
        mode = name.rsplit("_", 1)[1]
        ratio = f"{ratios[mode]:.2f}x LangGraph {mode}" if name.startswith("ours") and mode in ratios else ""
        rows.append([samples.label, fmt(samples.median), f"{samples.median / floor:.2f}x", fmt(samples.best), ratio])
    print(f"\nDurable step cost, n={args.n}, {args.repeats} run(s) each, µs per step (median):\n")
    print(markdown_table(["variant", "µs/step", "vs floor", "best", "ratio"], rows))
    if not ratios:
        print("\nlanggraph not installed: pip install -e '.[bench]' to compare with LangGraph")

    pickups = pickup_rounds(args)
    if not args.tiny:
        write_json(
            args.output,
            {
                "benchmark": "durable_steps",
                "n": args.n,
                "repeats": args.repeats,
                "machine": machine_info(),
                "langgraph": package_version("langgraph"),
                "insert_commit_floor_us": round(floor, 1),
                "variants": {name: samples.to_dict() for name, samples in durable.items()},
                "ratio_vs_langgraph": {mode: round(ratio, 3) for mode, ratio in ratios.items()},
                "ratio_vs_floor": {
                    mode: round(durable[f"ours_{mode}"].median / floor, 3) for mode in ("sync", "async")
                },
                "targets": {
                    "vs_langgraph": TARGET_VS_PEER,
                    "vs_floor": TARGET_VS_FLOOR,
                    "pickup_p50_ms": 20,
                    "pickup_p99_ms": 100,
                },
                "pickup_ms": pickup_json(pickups, args.clusters),
            },
        )
        print(f"\nwrote {args.output}")
        _plot(args.output)


def _pickup_only(args: argparse.Namespace) -> None:
    """The pickups alone, put into the JSON of the last full run (its durable figures kept)."""
    pickups = pickup_rounds(args)
    if args.tiny:
        return
    import json

    payload = json.loads(args.output.read_text()) if args.output.exists() else {"benchmark": "durable_steps"}
    payload["pickup_ms"] = pickup_json(pickups, args.clusters)
    payload["pickup_machine"] = machine_info()
    payload.setdefault("targets", {}).update(pickup_p50_ms=20, pickup_p99_ms=100)
    write_json(args.output, payload)
    print(f"\nwrote {args.output}")
    _plot(args.output)


def _plot(results: Path) -> None:
    import json

    for path in plots.plot_pickup(json.loads(results.read_text()), plots.DOCS):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
