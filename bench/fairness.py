"""Fairness among tenants: a quiet tenant behind another's flood, and weighted shares of the slots.

Against the platform as deployed (``bench.deployment``: the embedded default, SQLite, one web
process and one cluster; the scaled deployment, PostgreSQL and Redis, two web processes and two
clusters); this process is only a client. Workers pick the next ready execution fairly among
tenants (the fewest running for their ``weight`` first, each under its ``max_concurrent``; FIFO
within a tenant).

- quiet tenant: tenant ``flood`` (its ``max_concurrent`` as high as its flood) submits 1,000
  executions of ``demo.slow`` (one step of 1 s), all of them, and only then tenant ``quiet``
  submits 20, one after the other. A quiet execution's start delay is the timestamp of its
  first ``data-execution-start`` event (``GET …/events``) minus its ``created_at``. Targets:
  p50 <= 100 ms, p99 <= 500 ms while slots are free (the flood's running and queued executions
  when the quiet tenant starts are shown with the figures, with the slots the workers have).
- weights: tenants ``light`` (weight 1) and ``heavy`` (weight 3), each allowed to run as many
  executions as all the slots, flood at the same time (submissions interleaved), each with a
  backlog larger than what the workers can run over the warm-up and the window. The workers run
  few slots (``--slots``, 2 per worker process, through ``ENACT_SLOTS``) so the slots are the
  bottleneck. After a warm-up, the executions each tenant completes in a fixed window (60 s)
  are counted (their ``ended_at``); target: shares of 25 % / 75 %, each within 5 points. Both
  backlogs must still hold queued executions at the end of the window, else the figure is void.

    .venv/bin/python -m bench.fairness                        # both parts, both deployments where reachable
    .venv/bin/python -m bench.fairness --parts weights --deployments scaled --window 120
    .venv/bin/python -m bench.fairness --tiny                 # small floods, a 10 s window; no JSON
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, fmt, machine_info, markdown_table, write_json
from bench.deployment import Deployment, scaled_reachable
from bench.io_concurrency import (
    SCALED_SHAPE,
    WORKERS,
    Api,
    Flood,
    Sampler,
    flood,
    lift_rate_limit,
    log_problems,
    logs_on_failure,
    parse_time,
    pct,
    usage_probe,
    wait_idle,
    warm_up,
    worker_slots,
)

TARGET_QUIET_P50_MS = 100
TARGET_QUIET_P99_MS = 500
WEIGHTS = {"light": 1, "heavy": 3}
TARGET_SHARE_TOLERANCE = 0.05
# Each backlog holds this many times what all the slots could run over the warm-up and the
# window, so neither runs dry even while the other is slow to get its submissions in.
BACKLOG_MARGIN = 1.5
# Both tenants' usage is read this often in the window (for mean running and the backlogs): more
# often would load a web process on the machine the workers share.
WINDOW_SAMPLE_SECONDS = 0.5


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", nargs="+", choices=["embedded", "scaled"], default=None,
                        help="default: both, or embedded alone when PostgreSQL or Redis does not answer")  # fmt: skip
    parser.add_argument("--parts", nargs="+", choices=["quiet", "weights"], default=["quiet", "weights"])
    parser.add_argument("--flood", type=int, default=1000, help="quiet part: the flooding tenant's executions")
    parser.add_argument("--quiet", type=int, default=20, help="quiet part: the quiet tenant's executions")
    parser.add_argument("--seconds", type=float, default=1.0, help="how long each execution's one step blocks")
    parser.add_argument("--slots", type=int, default=2, help="weights part: ENACT_SLOTS of each worker process")
    parser.add_argument("--warmup", type=float, default=10.0, help="weights part: seconds before the window")
    parser.add_argument("--window", type=float, default=60.0, help="weights part: seconds completions are counted")
    parser.add_argument("--clients", type=int, default=32, help="submissions in flight at once")
    parser.add_argument("--database", default="enact_bench_fairness", help="PostgreSQL database (scaled)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the process logs here (default: removed)")
    parser.add_argument("--tiny", action="store_true", help="a flood of 50, 5 quiet, a 10 s window; no JSON")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "fairness.json")
    args = parser.parse_args()
    if args.tiny:
        args.flood, args.quiet, args.seconds, args.warmup, args.window = 50, 5, 0.5, 3.0, 10.0
    if args.deployments is None:
        args.deployments = ["embedded", "scaled"] if scaled_reachable() else ["embedded"]
    return args


# --- deployments -------------------------------------------------------------------------------


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set variables of this process's environment for a while: ``Deployment`` hands this
    environment to every process it starts (``ENACT_SLOTS`` is read by the worker processes)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def deploy(kind: str, workdir: Path, database: str, tenant: str, limits: tuple[str, ...]) -> Deployment:
    """A deployment whose own tenant is ``tenant`` (``limits``: ``enact limits`` options); its
    key is ``deployment.key``."""
    shape: dict[str, Any] = {**SCALED_SHAPE, "database": database} if kind == "scaled" else {}
    return Deployment(kind, workdir, tenant=tenant, limits=limits, **shape)


def add_tenant(deployment: Deployment, slug: str, limits: tuple[str, ...]) -> str:
    """Create tenant ``slug`` with ``limits`` (``enact limits`` options); returns a write key."""
    deployment.manage("enact", "tenant-create", slug)
    deployment.manage("enact", "limits", slug, *limits)
    return deployment.manage("enact", "key-create", slug, "--scope", "write").strip().splitlines()[-1]


def _clusters(kind: str) -> int:
    return int(SCALED_SHAPE["clusters"]) if kind == "scaled" else 1


def _no_limits(count: int) -> tuple[str, ...]:
    return ("--max-concurrent", str(count), "--max-queued", str(count), "--per-day", "none")


def _slow(seconds: float) -> dict[str, Any]:
    return {"blueprint": "demo.slow", "input": {"steps": 1, "seconds": seconds}}


# --- quiet tenant ------------------------------------------------------------------------------


def start_delays_ms(api: Api, sent: Flood) -> list[float]:
    """Per execution: its first ``data-execution-start`` event's timestamp minus its created_at."""
    delays = []
    for execution_id, created in sent.created.items():
        events = api.get(f"executions/{execution_id}/events", limit=20)["results"]
        start = next(e for e in events if e["type"] == "data-execution-start")
        delays.append((parse_time(start["timestamp"]) - created) * 1000)
    return delays


def run_quiet(kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    quiet_limits = _no_limits(args.quiet)
    with deploy(kind, workdir, args.database, "flood", _no_limits(args.flood)) as deployment:
        quiet_key = add_tenant(deployment, "quiet", quiet_limits)
        for slug in ("flood", "quiet"):
            lift_rate_limit(deployment, slug)
        with (
            Api(deployment.ports, deployment.key, "flood", connections=args.clients) as loud,
            Api(deployment.ports, quiet_key, "quiet") as quiet,
        ):
            warm_up(loud)
            warm_up(quiet)
            flooded = flood([(loud, _slow(args.seconds))] * args.flood, clients=args.clients)
            backlog = loud.usage()  # what the quiet tenant's executions meet
            sent = flood([(quiet, _slow(args.seconds))] * args.quiet, clients=1)  # one after the other
            wait_idle(quiet, timeout=120 + args.flood * args.seconds)
            delays = start_delays_ms(quiet, sent)
    p50, p99 = pct(delays, 0.5), pct(delays, 0.99)
    met = p50 is not None and p99 is not None and p50 <= TARGET_QUIET_P50_MS and p99 <= TARGET_QUIET_P99_MS
    return {
        "slots": worker_slots(deployment, _clusters(kind)),
        "flood": args.flood,
        "quiet": args.quiet,
        "step_seconds": args.seconds,
        "flood_submit_seconds": round(flooded.seconds, 3),
        "flood_at_quiet_start": {"running": backlog["running_executions"], "queued": backlog["queued_executions"]},
        "refused": {"flood": dict(flooded.refused), "quiet": dict(sent.refused)},
        "refusal_examples": {**flooded.examples, **sent.examples},
        "delays_ms": [round(d, 2) for d in delays],
        "p50_ms": p50,
        "p99_ms": p99,
        "max_ms": max(delays, default=None),
        "met": met,
        "log_problems": log_problems(workdir, kind),
    }


# --- weights -----------------------------------------------------------------------------------


def backlog_size(slots: int, args: argparse.Namespace) -> int:
    """Executions per tenant: more than all the slots can run over the warm-up and the window."""
    per_slot: float = (args.warmup + args.window) / args.seconds * BACKLOG_MARGIN
    return math.ceil(slots * per_slot)


def completed_in(api: Api, start: float, end: float) -> int:
    ended = (parse_time(row["ended_at"]) for row in api.executions(state="completed") if row["ended_at"])
    return sum(1 for t in ended if start <= t < end)


def run_weights(kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    slots = _clusters(kind) * WORKERS * args.slots
    backlog = backlog_size(slots, args)
    tenants = {slug: (*_no_limits(backlog), "--weight", str(weight)) for slug, weight in WEIGHTS.items()}
    with environment(ENACT_SLOTS=str(args.slots)):
        deployment = deploy(kind, workdir, args.database, "light", tenants["light"])
    with deployment:
        keys = {"light": deployment.key, "heavy": add_tenant(deployment, "heavy", tenants["heavy"])}
        apis = {slug: Api(deployment.ports, key, slug, connections=args.clients) for slug, key in keys.items()}
        try:
            for slug, api in apis.items():
                lift_rate_limit(deployment, slug)
                warm_up(api)
            jobs = [(apis[slug], _slow(args.seconds)) for _ in range(backlog) for slug in WEIGHTS]  # interleaved
            sent = flood(jobs, clients=args.clients)
            time.sleep(args.warmup)
            probes = [usage_probe(api, f"{slug}_") for slug, api in apis.items()]
            with Sampler(probes, interval=WINDOW_SAMPLE_SECONDS) as sampler:
                start = time.time()
                window = (start, start + args.window)
                time.sleep(args.window)
            left = {slug: api.usage()["queued_executions"] for slug, api in apis.items()}
            done = {slug: completed_in(api, *window) for slug, api in apis.items()}
        finally:
            for api in apis.values():
                api.close()
    return _weights_result(args, slots, backlog, sent, sampler, left, done) | {
        "log_problems": log_problems(workdir, kind)
    }


def _weights_result(
    args: argparse.Namespace,
    slots: int,
    backlog: int,
    sent: Flood,
    sampler: Sampler,
    left: dict[str, int],
    done: dict[str, int],
) -> dict[str, Any]:
    total = sum(done.values())
    weight_sum = sum(WEIGHTS.values())
    tenants = {}
    backlogged = True  # each tenant had executions queued at every sample of the window
    for slug, weight in WEIGHTS.items():
        least_queued = sampler.low(f"{slug}_queued")
        backlogged = backlogged and (least_queued or 0) > 0 and left[slug] > 0
        share = done[slug] / total if total else None
        target = weight / weight_sum
        tenants[slug] = {
            "weight": weight,
            "submitted": len(sent.ids(slug)),
            "completed_in_window": done[slug],
            "share": share,
            "target_share": target,
            "met": share is not None and abs(share - target) <= TARGET_SHARE_TOLERANCE,
            "mean_running": sampler.mean(f"{slug}_running"),
            "least_queued_in_window": least_queued,
            "queued_at_end": left[slug],
        }
    return {
        "slots": slots,
        "slots_per_worker": args.slots,
        "step_seconds": args.seconds,
        "backlog_each": backlog,
        "submit_seconds": round(sent.seconds, 3),
        "warmup_s": args.warmup,
        "window_s": args.window,
        "completed_per_s": total / args.window,
        "refused": dict(sent.refused),
        "refusal_examples": sent.examples,
        "backlogged_throughout": backlogged,
        "samples": len(sampler.ticks),
        "tenants": tenants,
        "met": backlogged and all(t["met"] for t in tenants.values()),
    }


# --- report ------------------------------------------------------------------------------------


def _label(kind: str) -> str:
    if kind == "embedded":
        return "embedded (SQLite)"
    return f"scaled ({SCALED_SHAPE['webs']} web, {SCALED_SHAPE['clusters']} clusters)"


def _verdict(met: bool) -> str:
    return "met" if met else "not met"


def print_quiet(results: dict[str, dict[str, Any]]) -> None:
    print(f"\nQuiet tenant: its executions submitted after another tenant's whole flood; start delay, ms "
          f"(targets p50 <= {TARGET_QUIET_P50_MS}, p99 <= {TARGET_QUIET_P99_MS} while slots are free):\n")  # fmt: skip
    rows = [
        [_label(kind), str(r["slots"]), f"{r['flood']:,} x {r['step_seconds']:g} s", f"{r['flood_submit_seconds']:.1f}",
         f"{r['flood_at_quiet_start']['running']} / {r['flood_at_quiet_start']['queued']}", str(r["quiet"]),
         fmt(r["p50_ms"]), fmt(r["p99_ms"]), fmt(r["max_ms"]), _verdict(r["met"])]
        for kind, r in results.items()
    ]  # fmt: skip
    headers = ["deployment", "slots", "flood", "flood submitting s", "flood running / queued at quiet start",
               "quiet executions", "p50", "p99", "max", "target"]  # fmt: skip
    print(markdown_table(headers, rows))


def print_weights(results: dict[str, dict[str, Any]]) -> None:
    print("\nWeights: two tenants flood at once; executions completed in the window, per tenant (target share +/- 5 points):\n")  # fmt: skip
    rows = []
    for kind, r in results.items():
        for slug, t in r["tenants"].items():
            rows.append(
                [_label(kind), f"{r['slots']} ({r['slots_per_worker']} per worker)", f"{r['window_s']:g}", slug,
                 str(t["weight"]), str(t["completed_in_window"]), fmt(None if t["share"] is None else t["share"] * 100),
                 f"{t['target_share'] * 100:.0f}", fmt(t["mean_running"], 2), str(t["queued_at_end"]),
                 _verdict(t["met"] and r["backlogged_throughout"])]
            )  # fmt: skip
    headers = ["deployment", "slots", "window s", "tenant", "weight", "completed", "share %", "target %",
               "mean running", "queued at end", "target"]  # fmt: skip
    print(markdown_table(headers, rows))
    for kind, r in results.items():
        if not r["backlogged_throughout"]:
            print(f"\n{kind}: a backlog ran dry during the window; the shares say nothing (raise the margin)")


def print_problems(part: str, results: dict[str, dict[str, Any]]) -> None:
    for kind, r in results.items():
        refused = {k: v for k, v in r["refused"].items() if v}
        if refused:
            print(f"\n{part}, {kind}: answers other than 201: {refused}; e.g. {r['refusal_examples']}")
        if r["log_problems"]:
            print(f"\n{part}, {kind}: the process logs say:\n  " + "\n  ".join(r["log_problems"]))


# --- main --------------------------------------------------------------------------------------


def _run_all(args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    parts = {"quiet": run_quiet, "weights": run_weights}
    results: dict[str, dict[str, dict[str, Any]]] = {part: {} for part in args.parts}
    for kind in args.deployments:
        for part in args.parts:
            where = workdir / part
            where.mkdir(parents=True, exist_ok=True)
            with logs_on_failure(where, kind):
                results[part][kind] = parts[part](kind, args, where)
    return results


def main() -> None:
    args = _parse()
    if args.workdir:
        results = _run_all(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="enact-fairness-bench-") as tmp:
            results = _run_all(args, Path(tmp))
    if "quiet" in results:
        print_quiet(results["quiet"])
        print_problems("quiet tenant", results["quiet"])
    if "weights" in results:
        print_weights(results["weights"])
        print_problems("weights", results["weights"])
    if args.tiny:
        return
    payload = {
        "benchmark": "fairness",
        "machine": machine_info(),
        "targets": {
            "quiet_p50_ms": TARGET_QUIET_P50_MS,
            "quiet_p99_ms": TARGET_QUIET_P99_MS,
            "weights": WEIGHTS,
            "share_tolerance": TARGET_SHARE_TOLERANCE,
        },
        "results": results,
    }
    write_json(args.output, payload)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
