"""Event latency to websocket clients, and cancel latency, against a running platform.

A real web server (daphne) and a worker cluster run in processes of their own; this process is
only a client: it makes a tenant and a key with the ``enact`` command, submits over the REST API
and listens over websockets.

- event latency: N clients (1, 100, 500; connected 25 at a time) follow one execution
  (`demo.slow`, 40 steps of 0.1 s);
  for each event each client receives, the time from the event's timestamp (stamped just before
  the transaction that stores it commits) to its arrival. The execution waits queued behind a
  blocker until every client is connected, so every event it makes is live for every client.
- cancel latency: one client follows an execution whose only step blocks in a 60 s call; the
  time from just before the cancel request (REST) to the client receiving
  `data-execution-cancelled`.

Both on the embedded default (SQLite, the relay) and with PostgreSQL and Redis if reachable.

    .venv/bin/python -m bench.stream_latency            # 1, 100, 500 clients; 20 cancels; both modes
    .venv/bin/python -m bench.stream_latency --tiny     # 1 and 5 clients, 3 cancels, embedded only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, machine_info, markdown_table, write_json

ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
TARGET_EVENT_P99_MS = 50  # at 100 clients
TARGET_CANCEL_P99_MS = 200


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 100, 500])
    parser.add_argument("--cancels", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--tiny", action="store_true", help="1 and 5 clients, 3 cancels, embedded only; no JSON")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "stream_latency.json")
    args = parser.parse_args()
    if args.tiny:
        args.clients, args.cancels, args.steps = [1, 5], 3, 10
    return args


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Platform:
    """migrate, a tenant and a write key, then daphne and a worker cluster."""

    def __init__(self, mode: str, workdir: Path) -> None:
        self.mode = mode
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(ENACT_QUEUE_NAME=f"stream-bench-{os.getpid()}", ENACT_WORKERS="2", ENACT_DEBUG="0",
                   SECRET_KEY="stream-latency-bench", ALLOWED_HOSTS="127.0.0.1,localhost",
                   ENACT_SECRETS_KEY="c3RyZWFtLWxhdGVuY3ktYmVuY2gtc2VjcmV0cy1rZXk=")  # fmt: skip
        if mode == "embedded":
            env["ENACT_SQLITE_PATH"] = str(workdir / "bench.sqlite3")
        else:
            env["DATABASE_URL"] = _fresh_database("enact_bench_stream")
            env["REDIS_URL"] = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
        self.env = env
        self.log = (workdir / f"{mode}.log").open("ab")
        self._manage("migrate", "--verbosity", "0")
        self._manage("enact", "tenant-create", "bench")
        # One at a time: a blocker holds the slot while the clients connect (see event_latencies).
        self._manage("enact", "limits", "bench", "--max-concurrent", "1", "--per-day", "100000")
        self.key = self._manage("enact", "key-create", "bench", "--scope", "write").strip().splitlines()[-1]
        daphne = str(Path(sys.executable).with_name("daphne"))
        self.processes = [
            self._spawn([daphne, "-b", "127.0.0.1", "-p", str(self.port), "enact_platform.asgi:application"]),
            self._spawn([sys.executable, "manage.py", "qcluster"]),
        ]
        deadline = time.monotonic() + 60
        while socket.socket().connect_ex(("127.0.0.1", self.port)) != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"daphne did not start; see {workdir}/{mode}.log")
            time.sleep(0.1)

    def _manage(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, check=False)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    def _spawn(self, command: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip

    def stop(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/v1/{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.loads(response.read()))

    def ws_url(self, execution_id: str) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/executions/{execution_id}/?token={self.key}"


def _fresh_database(name: str) -> str:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{PG_SERVER}/{name}"


def _arrival_ms(event: dict[str, Any]) -> float:
    stamped = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
    return (time.time() - stamped) * 1000


async def _follow(url: str, ready: asyncio.Event, start: asyncio.Event, out: list[float]) -> None:
    import websockets

    async with websockets.connect(url, max_queue=None, open_timeout=60) as ws:
        ready.set()
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "end":
                return
            if frame["type"] == "event" and start.is_set():
                out.append(_arrival_ms(frame["event"]))


async def event_latencies(platform: Platform, clients: int, steps: int) -> list[float]:
    """Every event of the measured execution reaches every client live: it stays queued behind
    a blocker (the tenant runs one at a time) until all clients are connected."""
    blocker = platform.post("executions", {"blueprint": "demo.slow", "input": {"steps": 1, "seconds": 600}})
    execution = platform.post("executions", {"blueprint": "demo.slow", "input": {"steps": steps, "seconds": 0.1}})
    url = platform.ws_url(execution["id"])
    samples: list[float] = []
    start = asyncio.Event()
    tasks = []
    # Connect in waves: the server's listen backlog would refuse hundreds of handshakes at once.
    for wave in range(0, clients, 25):
        readies = [asyncio.Event() for _ in range(min(25, clients - wave))]
        tasks += [asyncio.create_task(_follow(url, ready, start, samples)) for ready in readies]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    start.set()
    await asyncio.to_thread(platform.post, f"executions/{blocker['id']}/cancel", {"reason": "clients are ready"})
    await asyncio.wait_for(asyncio.gather(*tasks), steps * 0.1 + 120)
    return samples


async def cancel_latency(platform: Platform) -> float:
    import websockets

    execution = platform.post("executions", {"blueprint": "demo.slow", "input": {"steps": 1, "seconds": 60}})
    async with websockets.connect(platform.ws_url(execution["id"]), open_timeout=60) as ws:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "event" and frame["event"]["type"] == "data-step-start":
                break
        await asyncio.sleep(0.2)  # blocked in its call now
        sent = time.perf_counter()
        await asyncio.to_thread(platform.post, f"executions/{execution['id']}/cancel", {"reason": "bench"})
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "event" and frame["event"]["type"] == "data-execution-cancelled":
                return (time.perf_counter() - sent) * 1000
    raise RuntimeError("the socket closed before the cancelled event")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_mode(mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    platform = Platform(mode, workdir)
    try:
        result: dict[str, Any] = {"events": {}, "cancel_ms": []}
        asyncio.run(event_latencies(platform, 1, 5))  # warm-up: connections, imports, the relay
        for clients in args.clients:
            samples = asyncio.run(event_latencies(platform, clients, args.steps))
            result["events"][clients] = samples
        for _ in range(args.cancels):
            result["cancel_ms"].append(asyncio.run(cancel_latency(platform)))
        return result
    finally:
        platform.stop()


def _redis_reachable() -> bool:
    try:
        import redis

        redis.Redis.from_url(
            os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0", socket_connect_timeout=0.5
        ).ping()
        import psycopg

        psycopg.connect(f"{PG_SERVER}/postgres", connect_timeout=2).close()
    except Exception:
        return False
    return True


def main() -> None:
    args = _parse()
    modes = ["embedded"] + (["redis"] if not args.tiny and _redis_reachable() else [])
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="enact-stream-bench-") as tmp:
        for mode in modes:
            results[mode] = run_mode(mode, args, Path(tmp))
    rows = []
    for mode, result in results.items():
        for clients, samples in result["events"].items():
            rows.append(
                [mode, str(clients), str(len(samples)), f"{_pct(samples, 0.5):.1f}", f"{_pct(samples, 0.99):.1f}"]
            )
    print("\nEvent latency (event stamped -> received by a websocket client), ms:\n")
    print(markdown_table(["deployment", "clients", "deliveries", "p50", "p99"], rows))
    print("\nCancel latency (cancel request -> cancelled event received; step blocked in a 60 s call), ms:\n")
    print(
        markdown_table(
            ["deployment", "cancels", "p50", "p99", "max"],
            [
                [
                    m,
                    str(len(r["cancel_ms"])),
                    f"{_pct(r['cancel_ms'], 0.5):.1f}",
                    f"{_pct(r['cancel_ms'], 0.99):.1f}",
                    f"{max(r['cancel_ms']):.1f}",
                ]
                for m, r in results.items()
            ],
        )
    )
    if not args.tiny:
        write_json(
            args.output,
            {
                "benchmark": "stream_latency",
                "machine": machine_info(),
                "steps": args.steps,
                "targets": {"event_p99_ms_at_100": TARGET_EVENT_P99_MS, "cancel_p99_ms": TARGET_CANCEL_P99_MS},
                "results": {
                    mode: {
                        "events": {
                            str(c): {
                                "p50": round(_pct(s, 0.5), 2),
                                "p99": round(_pct(s, 0.99), 2),
                                "deliveries": len(s),
                            }
                            for c, s in r["events"].items()
                        },
                        "cancel": {
                            "p50": round(_pct(r["cancel_ms"], 0.5), 2),
                            "p99": round(_pct(r["cancel_ms"], 0.99), 2),
                            "samples": [round(x, 2) for x in r["cancel_ms"]],
                        },
                    }
                    for mode, r in results.items()
                },
            },
        )
        print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
