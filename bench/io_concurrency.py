"""I/O-bound concurrency: many executions, each blocked in one slow call, run at once.

N executions of ``demo.slow`` with one step that blocks 2 s (as a model call does), submitted by
one tenant whose limits let it run and queue them all, against the platform as deployed
(``bench.deployment``): the embedded default (SQLite; one web process, one cluster) and the scaled
deployment (PostgreSQL and Redis; two web processes, two clusters). Each worker process runs many
executions at once in its slots (``ENACT_SLOTS``, 100 by default), so the makespan should stay
near 2 s per wave of slots, not N x 2 s over the worker processes. This process is only a client.

Measured, per deployment:

- makespan: from the first submission sent to the last execution's ``ended_at`` (REST; the
  server's clock is this machine's);
- submissions: sent by a pool of ``--clients`` HTTP clients at once, spread over the web
  processes; every answer but 201 is counted by status and error code (and shown);
- peak running at once: the tenant's ``running_executions`` (``GET /api/v1/tenant``), sampled
  every 100 ms;
- peak memory of the worker clusters: RSS summed over each cluster's process tree (``/proc``),
  sampled likewise; also PSS, which counts the pages forked workers share only once;
- scaled only: peak connections to the benchmark's PostgreSQL database (``pg_stat_activity``).

Targets: scaled, 1,000 executions in <= 8 s; embedded, 200 executions in <= 5 s (2 s steps).

    .venv/bin/python -m bench.io_concurrency                  # both deployments where reachable
    .venv/bin/python -m bench.io_concurrency --deployments scaled --count-scaled 2000
    .venv/bin/python -m bench.io_concurrency --tiny           # 20 executions of 0.5 s; no JSON

Its client, sampler and ``/proc`` helpers serve ``bench.fairness`` too.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from bench._common import RESULTS_DIR, fmt, machine_info, markdown_table, write_json
from bench.deployment import Deployment, database_url, scaled_reachable

TENANT = "io"
STEP_SECONDS = 2.0
# deployment: (executions, makespan in seconds at most), with STEP_SECONDS steps
TARGETS = {"scaled": (1000, 8.0), "embedded": (200, 5.0)}
SAMPLE_SECONDS = 0.1
PLATFORM_SLOTS = 100  # ENACT_SLOTS when the environment does not set it (enact_platform/settings.py)
SCALED_SHAPE = {"webs": 2, "clusters": 2}
WORKERS = 2  # worker processes per cluster (Deployment's default, the README's ENACT_WORKERS)
# `enact limits` has no flag for it (it is an admin field), and one key's default of 600 requests a
# minute would refuse a flood of 1,000: the rate limit is not what these benchmarks measure.


# --- the REST client ---------------------------------------------------------------------------


def parse_time(text: str) -> float:
    """An API timestamp (ISO 8601) in seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Api:
    """One tenant's REST client: an httpx client per web process (each pooled and thread-safe)."""

    def __init__(self, ports: Sequence[int], key: str, slug: str, *, connections: int = 64) -> None:
        self.slug = slug
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        self.clients = [
            httpx.Client(
                base_url=f"http://127.0.0.1:{port}/api/v1/",
                headers={"Authorization": f"Bearer {key}"},
                timeout=60,
                limits=limits,
            )
            for port in ports
        ]

    def client(self, web: int = 0) -> httpx.Client:
        return self.clients[web % len(self.clients)]

    def get(self, path: str, *, web: int = 0, **params: Any) -> Any:
        answer = self.client(web).get(path, params=params)
        answer.raise_for_status()
        return answer.json()

    def usage(self, *, web: int = 0) -> dict[str, Any]:
        """Running and queued executions of the tenant now, and the rest of its usage."""
        return dict(self.get("tenant", web=web)["usage"])

    def executions(self, **filters: Any) -> list[dict[str, Any]]:
        """Every execution of the tenant (matching ``filters``), newest first, page by page."""
        page = self.get("executions", limit=200, **filters)
        rows = list(page["results"])
        while page["next"]:
            answer = self.client().get(page["next"])
            answer.raise_for_status()
            page = answer.json()
            rows += page["results"]
        return rows

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def lift_rate_limit(deployment: Deployment, slug: str) -> None:
    deployment.manage("enact", "limits", slug, "--requests-per-minute", "none")


# --- submissions -------------------------------------------------------------------------------


@dataclass
class Flood:
    """What a batch of submissions got back: the executions created, and every other answer."""

    created: dict[str, float] = field(default_factory=dict)  # id -> its created_at
    tenant: dict[str, str] = field(default_factory=dict)  # id -> the tenant's slug
    refused: Counter[str] = field(default_factory=Counter)  # "429 quota_exceeded" -> how many
    examples: dict[str, str] = field(default_factory=dict)  # one message of each kind
    first_sent: float = 0.0
    last_answer: float = 0.0

    def ids(self, slug: str | None = None) -> list[str]:
        return [i for i, s in self.tenant.items() if slug is None or s == slug]

    @property
    def seconds(self) -> float:
        return self.last_answer - self.first_sent


def _refusal(answer: httpx.Response) -> tuple[str, str]:
    """``"<status> <error code>"`` and the message of an answer that is not 201."""
    try:
        error = answer.json()["error"]
        return f"{answer.status_code} {error['code']}", str(error.get("message", ""))
    except Exception:
        return str(answer.status_code), answer.text[:300]


def flood(jobs: Sequence[tuple[Api, dict[str, Any]]], *, clients: int) -> Flood:
    """Submit each (tenant's client, body), ``clients`` at once; job i goes to web process i."""
    out = Flood(first_sent=time.time())
    lock = threading.Lock()

    def submit(i: int) -> None:
        api, body = jobs[i]
        try:
            answer = api.client(i).post("executions", json=body)
        except httpx.HTTPError as exc:
            kind, message = f"no answer ({type(exc).__name__})", str(exc)
        else:
            if answer.status_code == 201:
                execution = answer.json()
                with lock:
                    out.created[execution["id"]] = parse_time(execution["created_at"])
                    out.tenant[execution["id"]] = api.slug
                return
            kind, message = _refusal(answer)
        with lock:
            out.refused[kind] += 1
            out.examples.setdefault(kind, message[:300])

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(submit, range(len(jobs))))
    out.last_answer = time.time()
    return out


def wait_idle(api: Api, *, timeout: float, poll: float = 0.2) -> None:
    """Until the tenant has nothing running or queued."""
    deadline = time.monotonic() + timeout
    while True:
        usage = api.usage()
        if usage["running_executions"] == 0 and usage["queued_executions"] == 0:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"tenant {api.slug} still busy after {timeout:.0f} s: {usage}")
        time.sleep(poll)


def warm_up(api: Api, executions: int = 4) -> None:
    """A few zero-second executions first: imports, connections and the first claims."""
    jobs = [(api, {"blueprint": "demo.slow", "input": {"steps": 1, "seconds": 0}})] * executions
    warm = flood(jobs, clients=executions)
    if warm.refused:
        raise RuntimeError(f"warm-up submissions refused: {dict(warm.refused)} {warm.examples}")
    wait_idle(api, timeout=120)


# --- sampling ----------------------------------------------------------------------------------

Probe = Callable[[], Mapping[str, float]]


class Sampler:
    """Calls every probe each ``interval`` s on a thread of its own until stopped, and keeps what
    each figure it returns was at each sample. A probe that fails is counted, not fatal."""

    def __init__(self, probes: Iterable[Probe], interval: float = SAMPLE_SECONDS) -> None:
        self.probes = list(probes)
        self.interval = interval
        self.values: defaultdict[str, list[float]] = defaultdict(list)
        self.ticks: list[float] = []
        self.failures: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.ticks.append(started)
            for probe in self.probes:
                try:
                    for name, value in probe().items():
                        self.values[name].append(value)
                except Exception as exc:
                    self.failures[f"{type(exc).__name__}: {exc}"[:200]] += 1
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def peak(self, name: str) -> float | None:
        return max(self.values[name]) if self.values[name] else None

    def low(self, name: str) -> float | None:
        return min(self.values[name]) if self.values[name] else None

    def mean(self, name: str) -> float | None:
        return sum(self.values[name]) / len(self.values[name]) if self.values[name] else None

    @property
    def longest_gap(self) -> float | None:
        """The longest time between two samples, in seconds (a slow answer delays the next)."""
        return max((b - a for a, b in zip(self.ticks, self.ticks[1:], strict=False)), default=None)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def usage_probe(api: Api, prefix: str = "") -> Probe:
    def probe() -> dict[str, float]:
        usage = api.usage()
        return {f"{prefix}running": usage["running_executions"], f"{prefix}queued": usage["queued_executions"]}

    return probe


def _parents() -> dict[int, int]:
    """pid -> parent pid, for every process of this machine."""
    out = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue  # it ended meanwhile
            out[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces
    return out


def process_tree(roots: Iterable[int]) -> list[int]:
    """``roots`` and all their descendants (a cluster forks its sentinel, pusher and workers)."""
    children: defaultdict[int, list[int]] = defaultdict(list)
    for pid, parent in _parents().items():
        children[parent].append(pid)
    found, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def memory_mb(pids: Iterable[int]) -> dict[str, float]:
    """RSS and PSS summed over ``pids``, in MB (/proc/<pid>/smaps_rollup)."""
    kb: Counter[str] = Counter()
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            name, _, value = line.partition(":")
            if name in ("Rss", "Pss"):
                kb[name.lower()] += int(value.split()[0])
    return {"rss_mb": kb["rss"] / 1024, "pss_mb": kb["pss"] / 1024}


def cluster_memory_probe(deployment: Deployment) -> Probe:
    roots = [process.pid for process in deployment.processes[deployment.webs :]]  # webs first, then clusters
    return lambda: memory_mb(process_tree(roots))


class PgConnections:
    """A probe: connections to ``database`` now (from the server's ``postgres`` database, so this
    probe's own connection is not counted)."""

    def __init__(self, database: str) -> None:
        import psycopg

        self.database = database
        self.conn = psycopg.connect(database_url("postgres"), autocommit=True)

    def __call__(self) -> dict[str, float]:
        row = self.conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (self.database,)).fetchone()
        return {"pg_connections": float(row[0]) if row else 0.0}

    def close(self) -> None:
        self.conn.close()


# --- logs --------------------------------------------------------------------------------------

PROBLEM_MARKS = ("Traceback", "WARNING", "ERROR", "CRITICAL", "Exception")
# What the deployment's own start says: /readyz answers 503 until a worker has been seen.
EXPECTED = ("Service Unavailable: /readyz",)


def log_problems(workdir: Path, kind: str, limit: int = 40) -> list[str]:
    """Lines of the deployment's process logs that look like trouble, each with its log's name."""
    found = []
    for log in sorted(workdir.glob(f"{kind}-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if any(mark in line for mark in PROBLEM_MARKS) and not any(text in line for text in EXPECTED):
                found.append(f"{log.name}: {line.strip()[:300]}")
    return found[:limit]


def log_tails(workdir: Path, kind: str, lines: int = 25) -> str:
    parts = []
    for log in sorted(workdir.glob(f"{kind}-*.log")):
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log} (last {len(tail)} lines)\n" + "\n".join(tail))
    return "\n".join(parts)


@contextmanager
def logs_on_failure(workdir: Path, kind: str) -> Iterator[None]:
    """On an exception, print the end of each of the deployment's process logs, then re-raise."""
    try:
        yield
    except BaseException:
        print(f"\nThe {kind} deployment failed; its process logs:\n{log_tails(workdir, kind)}", file=sys.stderr)
        raise


# --- figures -----------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def worker_slots(deployment: Deployment, clusters: int) -> int:
    """Slots of all worker processes: what the workers can run at once."""
    return clusters * WORKERS * int(deployment.env.get("ENACT_SLOTS") or PLATFORM_SLOTS)


def most_at_once(rows: Iterable[dict[str, Any]]) -> int:
    """The most executions between their started_at and ended_at at one moment (from the rows,
    so between samples too; it counts no claimed execution that has not started yet)."""
    edges = sorted(
        (parse_time(row[stamp]), step)
        for row in rows
        if row["started_at"] and row["ended_at"]
        for stamp, step in (("started_at", 1), ("ended_at", -1))
    )
    most = now = 0
    for _, step in edges:  # at a tie an end (-1) sorts first
        now += step
        most = max(most, now)
    return most


def _verdict(kind: str, count: int, seconds: float, makespan: float | None, refused: int) -> str:
    target_count, limit = TARGETS[kind]
    if count != target_count or seconds != STEP_SECONDS:
        return f"no target at this size (target: {target_count:,} x {STEP_SECONDS:g} s)"
    if refused:
        return f"not met ({refused} submissions refused)"
    if makespan is None:
        return "not met (not all ended)"
    return f"{'met' if makespan <= limit else 'not met'} (<= {limit:g} s)"


def summarize(kind: str, count: int, seconds: float, sent: Flood, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Makespan, pickup and run times, and states, of the executions the flood created."""
    mine = [row for row in rows if row["id"] in sent.created]
    ended = [parse_time(r["ended_at"]) for r in mine if r["ended_at"]]
    pickups = [(parse_time(r["started_at"]) - sent.created[r["id"]]) * 1000 for r in mine if r["started_at"]]
    runs = [parse_time(r["ended_at"]) - parse_time(r["started_at"]) for r in mine if r["started_at"] and r["ended_at"]]
    makespan = max(ended) - sent.first_sent if ended and len(ended) == len(sent.created) else None
    return {
        "executions": count,
        "step_seconds": seconds,
        "accepted": len(sent.created),
        "refused": dict(sent.refused),
        "refusal_examples": sent.examples,
        "states": dict(Counter(r["state"] for r in mine)),
        "submit_seconds": round(sent.seconds, 3),
        "makespan_s": None if makespan is None else round(makespan, 3),
        "makespan_server_s": round(max(ended) - min(sent.created.values()), 3) if ended else None,
        "pickup_ms": {"p50": pct(pickups, 0.5), "p99": pct(pickups, 0.99), "max": max(pickups, default=None)},
        "run_s": {"p50": pct(runs, 0.5), "max": max(runs, default=None)},
        "most_running_from_rows": most_at_once(mine),
        "verdict": _verdict(kind, count, seconds, makespan, sum(sent.refused.values())),
    }


# --- the benchmark -----------------------------------------------------------------------------


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", nargs="+", choices=["embedded", "scaled"], default=None,
                        help="default: both, or embedded alone when PostgreSQL or Redis does not answer")  # fmt: skip
    parser.add_argument("--count-scaled", type=int, default=TARGETS["scaled"][0])
    parser.add_argument("--count-embedded", type=int, default=TARGETS["embedded"][0])
    parser.add_argument("--seconds", type=float, default=STEP_SECONDS, help="how long the one step blocks")
    parser.add_argument("--clients", type=int, default=32, help="submissions in flight at once")
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the executions to end")
    parser.add_argument("--database", default="enact_bench_io", help="PostgreSQL database of the scaled deployment")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the process logs here (default: removed)")
    parser.add_argument("--tiny", action="store_true", help="20 executions of 0.5 s; no JSON")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "io_concurrency.json")
    args = parser.parse_args()
    if args.tiny:
        args.count_scaled = args.count_embedded = 20
        args.seconds = 0.5
    if args.deployments is None:
        args.deployments = ["embedded", "scaled"] if scaled_reachable() else ["embedded"]
    return args


def run_deployment(kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    count = args.count_scaled if kind == "scaled" else args.count_embedded
    shape: dict[str, Any] = {**SCALED_SHAPE, "database": args.database} if kind == "scaled" else {}
    limits = ("--max-concurrent", str(count), "--max-queued", str(count), "--per-day", "none")
    with Deployment(kind, workdir, tenant=TENANT, limits=limits, **shape) as deployment:
        lift_rate_limit(deployment, TENANT)
        with Api(deployment.ports, deployment.key, TENANT, connections=args.clients) as api:
            warm_up(api)
            memory = cluster_memory_probe(deployment)
            idle = memory()
            probes: list[Probe] = [usage_probe(api), memory]
            pg = PgConnections(args.database) if kind == "scaled" else None
            if pg:
                probes.append(pg)
            body = {"blueprint": "demo.slow", "input": {"steps": 1, "seconds": args.seconds}}
            try:
                with Sampler(probes) as sampler:
                    sent = flood([(api, body)] * count, clients=args.clients)
                    wait_idle(api, timeout=args.timeout)
            finally:
                if pg:
                    pg.close()
            result = summarize(kind, count, args.seconds, sent, api.executions())
    clusters = shape.get("clusters", 1)
    result.update(
        webs=shape.get("webs", 1),
        clusters=clusters,
        slots=worker_slots(deployment, clusters),
        peak_running=sampler.peak("running"),
        idle_rss_mb=round(idle["rss_mb"], 1),
        peak_rss_mb=sampler.peak("rss_mb"),
        peak_pss_mb=sampler.peak("pss_mb"),
        peak_pg_connections=sampler.peak("pg_connections"),
        samples=len(sampler.ticks),
        longest_sample_gap_s=sampler.longest_gap,
        sample_failures=dict(sampler.failures),
        log_problems=log_problems(workdir, kind),
    )
    return result


def _label(kind: str, result: dict[str, Any]) -> str:
    if kind == "embedded":
        return "embedded (SQLite)"
    return f"scaled ({result['webs']} web, {result['clusters']} clusters)"


def _refusals(result: dict[str, Any]) -> str:
    return ", ".join(f"{n} x {kind}" for kind, n in result["refused"].items()) or "none"


def print_report(results: dict[str, dict[str, Any]]) -> None:
    rows = [
        [_label(kind, r), f"{r['executions']:,}", f"{r['step_seconds']:g}", str(r["slots"]),
         fmt(r["makespan_s"], 2), r["verdict"], f"{r['submit_seconds']:.2f}", f"{fmt(r['peak_running'], 0)} ({r['most_running_from_rows']})",
         fmt(r["pickup_ms"]["p50"]), fmt(r["pickup_ms"]["p99"]), f"{r['idle_rss_mb']:.0f}",
         f"{fmt(r['peak_rss_mb'], 0)} ({fmt(r['peak_pss_mb'], 0)})", fmt(r["peak_pg_connections"], 0),
         _refusals(r)]
        for kind, r in results.items()
    ]  # fmt: skip
    print("\nI/O-bound executions (demo.slow, one blocking step each), one tenant:\n")
    headers = ["deployment", "executions", "step s", "slots", "makespan s", "target", "submitting s", "peak running (rows)",
               "pickup p50 ms", "pickup p99 ms", "idle RSS MB", "peak RSS MB (PSS)", "peak PG conns", "non-201"]  # fmt: skip
    print(markdown_table(headers, rows))
    for kind, r in results.items():
        unfinished = {state: n for state, n in r["states"].items() if state != "completed"}
        if unfinished or r["refused"]:
            print(f"\n{kind}: states {r['states']}; refused {r['refused']}: {r['refusal_examples']}")
        if r["sample_failures"]:
            print(f"\n{kind}: failed samples: {r['sample_failures']}")
        if r["log_problems"]:
            print(f"\n{kind}: the process logs say:\n  " + "\n  ".join(r["log_problems"]))


def _run_all(args: argparse.Namespace, workdir: Path) -> dict[str, dict[str, Any]]:
    results = {}
    for kind in args.deployments:
        with logs_on_failure(workdir, kind):
            results[kind] = run_deployment(kind, args, workdir)
    return results


def main() -> None:
    args = _parse()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        results = _run_all(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="enact-io-bench-") as tmp:
            results = _run_all(args, Path(tmp))
    print_report(results)
    if args.tiny:
        return
    payload = {
        "benchmark": "io_concurrency",
        "machine": machine_info(),
        "targets": {kind: {"executions": n, "step_seconds": STEP_SECONDS, "makespan_s": s} for kind, (n, s) in TARGETS.items()},
        "results": {kind: {"label": _label(kind, r), **r} for kind, r in results.items()},
    }  # fmt: skip
    write_json(args.output, payload)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
