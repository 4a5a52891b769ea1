"""Event latency to websocket clients, and cancel latency, against the platform as deployed.

The platform runs in processes of its own (``bench.deployment``: daphne and worker clusters,
started with the README's commands); this process is only a client: it submits over the REST API
and listens over websockets.

- event latency: N clients (1, 100, 500; connected 25 at a time, spread over the web processes)
  follow one execution (`demo.slow`, 40 steps of 0.1 s); for each event each client receives,
  the time from the event's timestamp (stamped just before the transaction that stores it
  commits) to its arrival. The execution waits queued behind a blocker until every client is
  connected, so every event it makes is live for every client.
- cancel latency: one client follows an execution whose only step blocks in a 60 s call; the
  time from just before the cancel request (REST, through another web process than the one the
  client follows, when there are several) to the client receiving `data-execution-cancelled`.

On the embedded default (SQLite, the relay; one web process, one cluster) and on the scaled
deployment (PostgreSQL and Redis; two web processes, two clusters) when both services answer.

    .venv/bin/python -m bench.stream_latency            # 1, 100, 500 clients; 20 cancels; both
    .venv/bin/python -m bench.stream_latency --tiny     # 1 and 5 clients, 3 cancels, embedded only
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import plots
from bench._common import RESULTS_DIR, machine_info, markdown_table, write_json
from bench.deployment import Deployment, scaled_reachable

ROOT = Path(__file__).resolve().parents[1]
TARGET_EVENT_P99_MS = 50  # at 100 clients
TARGET_CANCEL_P99_MS = 200
# One at a time: a blocker holds the slot while the clients connect (see event_latencies).
LIMITS = ("--max-concurrent", "1", "--per-day", "100000")


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 100, 500])
    parser.add_argument("--cancels", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--deployments", nargs="+", choices=["embedded", "scaled"], default=None,
                        help="default: both, or embedded alone when PostgreSQL or Redis does not answer")  # fmt: skip
    parser.add_argument("--webs", type=int, default=2, help="web processes of the scaled deployment")
    parser.add_argument("--clusters", type=int, default=2, help="worker clusters of the scaled deployment")
    parser.add_argument("--tiny", action="store_true", help="1 and 5 clients, 3 cancels, embedded only; no JSON")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "stream_latency.json")
    args = parser.parse_args()
    if args.tiny:
        args.clients, args.cancels, args.steps = [1, 5], 3, 10
        args.deployments = args.deployments or ["embedded"]
    if args.deployments is None:
        args.deployments = ["embedded", "scaled"] if scaled_reachable() else ["embedded"]
    return args


def _arrival_ms(event: dict[str, Any]) -> float:
    stamped = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
    return (time.time() - stamped) * 1000


async def _follow(url: str, ready: asyncio.Event, start: asyncio.Event, out: list[float]) -> None:
    import websockets

    async with websockets.connect(url, max_queue=None, open_timeout=60) as ws:
        # Ready once it is in the execution's group: the server answers a ping after that.
        await ws.send('{"type": "ping"}')
        async for raw in ws:
            if json.loads(raw)["type"] == "pong":
                break
        ready.set()
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "end":
                return
            if frame["type"] == "event" and start.is_set():
                out.append(_arrival_ms(frame["event"]))


async def event_latencies(deployment: Deployment, clients: int, steps: int) -> list[float]:
    """Every event of the measured execution reaches every client live: it stays queued behind
    a blocker (the tenant runs one at a time) until all clients are connected. Client i follows
    through web process i (modulo their number)."""
    blocker = deployment.post("executions", {"blueprint": "demo.slow", "input": {"steps": 1, "seconds": 600}})
    execution = deployment.post("executions", {"blueprint": "demo.slow", "input": {"steps": steps, "seconds": 0.1}})
    samples: list[float] = []
    start = asyncio.Event()
    tasks = []
    # Connect in waves: the server's listen backlog would refuse hundreds of handshakes at once.
    for wave in range(0, clients, 25):
        readies = [asyncio.Event() for _ in range(min(25, clients - wave))]
        tasks += [
            asyncio.create_task(_follow(deployment.ws_url(execution["id"], web=wave + i), ready, start, samples))
            for i, ready in enumerate(readies)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    start.set()
    await asyncio.to_thread(deployment.post, f"executions/{blocker['id']}/cancel", {"reason": "clients are ready"})
    await asyncio.wait_for(asyncio.gather(*tasks), steps * 0.1 + 120)
    return samples


async def cancel_latency(deployment: Deployment, round_no: int) -> float:
    """The client follows through one web process; the cancel goes through the next one."""
    import websockets

    execution = deployment.post("executions", {"blueprint": "demo.slow", "input": {"steps": 1, "seconds": 60}})
    async with websockets.connect(deployment.ws_url(execution["id"], web=round_no), open_timeout=60) as ws:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "event" and frame["event"]["type"] == "data-step-start":
                break
        await asyncio.sleep(0.2)  # blocked in its call now
        sent = time.perf_counter()
        cancel = f"executions/{execution['id']}/cancel"
        await asyncio.to_thread(deployment.post, cancel, {"reason": "bench"}, web=round_no + 1)
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "event" and frame["event"]["type"] == "data-execution-cancelled":
                return (time.perf_counter() - sent) * 1000
    raise RuntimeError("the socket closed before the cancelled event")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_deployment(kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    shape = {"webs": args.webs, "clusters": args.clusters} if kind == "scaled" else {}
    with Deployment(kind, workdir, limits=LIMITS, database="enact_bench_stream", **shape) as deployment:
        result: dict[str, Any] = {"webs": deployment.webs, "clusters": shape.get("clusters", 1), "events": {}}
        asyncio.run(event_latencies(deployment, 1, 5))  # warm-up: connections, imports, the relay
        for clients in args.clients:
            result["events"][clients] = asyncio.run(event_latencies(deployment, clients, args.steps))
        result["cancel_ms"] = [asyncio.run(cancel_latency(deployment, i)) for i in range(args.cancels)]
        return result


def _label(kind: str, result: dict[str, Any]) -> str:
    if kind == "embedded":
        return "embedded (SQLite, relay)"
    return f"scaled (PostgreSQL + Redis, {result['webs']} web, {result['clusters']} clusters)"


def main() -> None:
    args = _parse()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="enact-stream-bench-") as tmp:
        for kind in args.deployments:
            results[kind] = run_deployment(kind, args, Path(tmp))
    rows = []
    for kind, result in results.items():
        for clients, samples in result["events"].items():
            rows.append(
                [_label(kind, result), str(clients), str(len(samples)), f"{_pct(samples, 0.5):.1f}",
                 f"{_pct(samples, 0.99):.1f}"]
            )  # fmt: skip
    print("\nEvent latency (event stamped -> received by a websocket client), ms:\n")
    print(markdown_table(["deployment", "clients", "deliveries", "p50", "p99"], rows))
    print("\nCancel latency (cancel request -> cancelled event received; step blocked in a 60 s call), ms:\n")
    print(
        markdown_table(
            ["deployment", "cancels", "p50", "p99", "max"],
            [
                [
                    _label(kind, r),
                    str(len(r["cancel_ms"])),
                    f"{_pct(r['cancel_ms'], 0.5):.1f}",
                    f"{_pct(r['cancel_ms'], 0.99):.1f}",
                    f"{max(r['cancel_ms']):.1f}",
                ]
                for kind, r in results.items()
            ],
        )
    )
    if args.tiny:
        return
    payload = {
        "benchmark": "stream_latency",
        "machine": machine_info(),
        "steps": args.steps,
        "targets": {"event_p99_ms_at_100": TARGET_EVENT_P99_MS, "cancel_p99_ms": TARGET_CANCEL_P99_MS},
        "results": {
            kind: {
                "label": _label(kind, r),
                "webs": r["webs"],
                "clusters": r["clusters"],
                "events": {
                    str(c): {
                        "p50": round(_pct(s, 0.5), 2),
                        "p99": round(_pct(s, 0.99), 2),
                        "deliveries": len(s),
                        "quantiles": plots.quantiles(s),
                    }
                    for c, s in r["events"].items()
                },
                "cancel": {
                    "p50": round(_pct(r["cancel_ms"], 0.5), 2),
                    "p99": round(_pct(r["cancel_ms"], 0.99), 2),
                    "samples": [round(x, 2) for x in r["cancel_ms"]],
                    "quantiles": plots.quantiles(r["cancel_ms"]),
                },
            }
            for kind, r in results.items()
        },
    }
    write_json(args.output, payload)
    print(f"\nwrote {args.output}")
    for path in plots.plot_stream(payload, plots.DOCS):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
