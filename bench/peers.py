"""Side by side with the peers: our workloads run on DBOS, LangGraph's Agent Server and the LangGraph library.

The same workloads as ``bench.io_concurrency``, ``bench.throughput``, ``bench.durable_steps``
(pickup), ``bench.stream_latency`` (cancel) and ``bench.fairness``, run on this machine on each
peer that can run them, and printed in one table next to our figures, which are read from
``bench/results/*.json`` (not run again here):

- **io_concurrency**: N executions of one step that waits 2 s, all allowed at once; makespan
  (first submission to the last step's end) and the most steps running at once (from each
  step's own start and end stamps). N = 40 and 1,000, submitted by 32 clients at once.
- **throughput**: 200 executions of 10 trivial steps, submitted at once; executions per second
  (first submission to the last step's end).
- **pickup**: submit -> the first step starts, one submission after the other, each waited for.
- **cancel**: an execution's step blocked in a 60 s call; from just before the cancel to the
  client seeing the execution cancelled.
- **fairness**: tenant A submits 1,000 executions of a 1 s step, then tenant B submits 20, one
  after the other; B's delay from its submission to its step's start.

The peers, each in a process of its own (a child of this one), with the idiom of each:

- **DBOS** (``dbos``): workflows of ``@DBOS.step`` functions, durable in PostgreSQL (database
  ``enact_peers_dbos``), in this process's threads. A waiting step is ``time.sleep`` (DBOS runs
  each workflow on a thread of its executor, unbounded by default). Work goes through a queue
  (``DBOS.register_queue``, polled every second, its default) with room for all of it; pickup is
  measured through that queue and through ``DBOS.start_workflow`` (no queue); fairness through
  one queue (FIFO) and through a queue partitioned by tenant (``partition_concurrency``).
- **Agent Server** (``langgraph-api`` in memory, started as ``langgraph dev --no-reload
  --n-jobs-per-worker J``, telemetry off): graphs of ``bench.peers_graphs``; a waiting node is
  ``await asyncio.sleep`` (its idiom: a sync node would hold an executor thread). Runs are
  stateless (``POST /runs``, kept on completion) and read back with ``join``. J = 10 (the
  server's default; ``langgraph dev`` without the flag runs 1) and 64. Not durable: a generous
  comparison for us. It has no tenants: B's runs queue behind A's.
- **LangGraph library** with ``PostgresSaver`` (database ``enact_peers_langgraph``): throughput
  only, 4 threads invoking the compiled chain, ``durability="sync"`` (each checkpoint written
  before the next step, as ours) and ``"async"`` (its default). A library has no queue, no runs
  to cancel and no tenants, so the other workloads do not apply.

A peer whose package is missing is skipped with a message; one that is installed and fails makes
the run fail. The Agent Server's ``langgraph-api`` pins ``jsonschema-rs<0.45`` where the test
extra's schemathesis needs 0.60, so it lives in a virtualenv of its own: ``ENACT_AGENT_SERVER_PYTHON``
names its Python, else ``.venv/agent-server/bin/python`` (made by ``python -m venv
.venv/agent-server && .venv/agent-server/bin/pip install 'langgraph-cli[inmem]'``), else this
Python if it has ``langgraph_api``.

    .venv/bin/python -m bench.peers                      # full sizes, 2 rounds; writes bench/results/peers.json
    .venv/bin/python -m bench.peers --peers dbos --rounds 1
    .venv/bin/python -m bench.peers --tiny               # tiny sizes, the peers at once (< 60 s); writes nothing
    .venv/bin/python -m bench.peers --table-only         # the table again from peers.json (our figures re-read)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, load_average, machine_info, markdown_table, package_version, write_json
from bench.io_concurrency import pct

ROOT = Path(__file__).resolve().parents[1]
PEERS = ("dbos", "agent_server", "langgraph")
LABELS = {"dbos": "DBOS", "agent_server": "Agent Server", "langgraph": "LangGraph lib"}
SUBMITTERS = 32  # submissions in flight at once, as bench.io_concurrency's clients
BLOCKED_SECONDS = 60.0  # the cancel workload's long call (bench.peers_graphs.BLOCKED_SECONDS too)
DBOS_CONCURRENCY = 100  # a DBOS queue's room in the fairness workload, per partition when partitioned
LANGGRAPH_THREADS = 4  # as many as the scaled deployment's worker processes
CHAIN_STEPS = 10


@dataclass
class Sizes:
    io_counts: tuple[int, ...] = (40, 1000)
    io_seconds: float = 2.0
    throughput: int = 200
    pickups: int = 200
    cancels: int = 50
    flood: int = 1000
    quiet: int = 20
    fair_seconds: float = 1.0
    agent_jobs: tuple[int, ...] = (10, 64)


TINY = Sizes(
    io_counts=(8,), io_seconds=0.5, throughput=10, pickups=3, cancels=2, flood=20, quiet=3, fair_seconds=0.2,
    agent_jobs=(4,),
)  # fmt: skip


# --- measures ----------------------------------------------------------------------------------


def most_at_once(spans: Sequence[tuple[float, float]]) -> int:
    """The most spans (start, end) open at one instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])  # an end sorts first
    now = best = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


def latency(samples_ms: Sequence[float]) -> dict[str, Any]:
    return {
        "p50": _round(pct(samples_ms, 0.5)),
        "p99": _round(pct(samples_ms, 0.99)),
        "max": _round(max(samples_ms, default=None)),
        "samples": [round(v, 2) for v in samples_ms],
    }


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def waiting_result(n: int, seconds: float, first_sent: float, spans: Sequence[tuple[float, float]]) -> dict[str, Any]:
    if len(spans) != n:
        raise RuntimeError(f"{n} executions submitted, {len(spans)} steps ran")
    return {
        "executions": n,
        "step_seconds": seconds,
        "makespan_s": round(max(end for _, end in spans) - first_sent, 3),
        "peak_running": most_at_once(spans),
        "pickup_ms": latency([(start - first_sent) * 1000 for start, _ in spans]) | {"samples": []},
    }


def throughput_result(n: int, first_sent: float, ends: Sequence[float], **extra: Any) -> dict[str, Any]:
    if len(ends) != n:
        raise RuntimeError(f"{n} executions submitted, {len(ends)} ended")
    seconds = max(ends) - first_sent
    return {"executions": n, "steps_each": CHAIN_STEPS, "seconds": round(seconds, 3), "per_s": round(n / seconds, 2)}


def in_parallel(fn: Callable[[int], Any], count: int, workers: int = SUBMITTERS) -> list[Any]:
    with ThreadPoolExecutor(max_workers=max(1, min(workers, count))) as pool:
        return list(pool.map(fn, range(count)))


def postgres_url(name: str) -> str | None:
    """The URL of database ``name`` on the local server, made afresh; None if PostgreSQL does not answer."""
    from bench.deployment import create_database, database_url

    name += os.environ.get("ENACT_PEERS_DATABASE_SUFFIX", "")
    url = database_url(name).replace("postgres://", "postgresql://", 1)
    try:
        return create_database(url, fresh=True)
    except Exception as exc:
        print(f"  PostgreSQL does not answer ({type(exc).__name__}: {exc})".rstrip())
        return None


# --- DBOS --------------------------------------------------------------------------------------


class _NotCancelled(logging.Filter):
    """Drops DBOS's log of a workflow that ended because the cancel workload cancelled it."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return "Cancelled" not in type(error).__name__


def run_dbos(sizes: Sizes) -> dict[str, Any]:
    url = postgres_url("enact_peers_dbos")
    if url is None:
        return {"skipped": "PostgreSQL does not answer"}
    from dbos import DBOS, SetEnqueueOptions

    DBOS(config={"name": "enact-peers", "system_database_url": url, "log_level": "ERROR"})
    logging.getLogger("dbos").addFilter(_NotCancelled())
    entered = threading.Event()
    release = threading.Event()

    @DBOS.step()
    def wait(seconds: float) -> tuple[float, float]:
        started = time.time()
        time.sleep(seconds)
        return started, time.time()

    @DBOS.workflow()
    def slow(seconds: float) -> tuple[float, float]:
        return wait(seconds)

    @DBOS.step()
    def block() -> None:
        entered.set()
        release.wait(BLOCKED_SECONDS)

    @DBOS.workflow()
    def blocked() -> None:
        block()

    @DBOS.step()
    def add_one(n: int) -> int:
        return n + 1

    @DBOS.workflow()
    def chain() -> tuple[float, float]:
        started, n = time.time(), 0
        for _ in range(CHAIN_STEPS):
            n = add_one(n)
        if n != CHAIN_STEPS:
            raise RuntimeError(f"the chain counted {n}")
        return started, time.time()

    DBOS.launch()
    out: dict[str, Any] = {"version": package_version("dbos"), "io_concurrency": {}}
    try:
        for n in sizes.io_counts:
            queue = DBOS.register_queue(f"io_{n}", worker_concurrency=n)
            first = time.time()
            handles = in_parallel(lambda _i, q=queue: q.enqueue(slow, sizes.io_seconds), n)
            spans = [tuple(h.get_result()) for h in handles]
            out["io_concurrency"][str(n)] = waiting_result(n, sizes.io_seconds, first, spans) | {
                "how": f"a queue with worker_concurrency={n}; the step calls time.sleep"
            }
        print(f"  DBOS io_concurrency: {_brief(out['io_concurrency'])}")

        queue = DBOS.register_queue("throughput")
        first = time.time()
        handles = in_parallel(lambda _i: queue.enqueue(chain), sizes.throughput)
        ends = [h.get_result()[1] for h in handles]
        out["throughput"] = throughput_result(sizes.throughput, first, ends) | {"how": "a queue without limits"}
        print(f"  DBOS throughput: {out['throughput']['per_s']}/s")

        pickup_queue = DBOS.register_queue("pickup")
        out["pickup"] = {}
        for how, submit in (
            ("queue", lambda: pickup_queue.enqueue(slow, 0.0)),
            ("direct", lambda: DBOS.start_workflow(slow, 0.0)),
        ):
            samples = []
            for _ in range(sizes.pickups):
                sent = time.time()
                started, _ = submit().get_result()
                samples.append((started - sent) * 1000)
            out["pickup"][how] = latency(samples)
        print(f"  DBOS pickup: {_brief(out['pickup'])}")

        samples, step_kept_running = [], 0
        for _ in range(sizes.cancels):
            entered.clear()
            handle = DBOS.start_workflow(blocked)
            if not entered.wait(30):
                raise RuntimeError("the blocked step never started")
            time.sleep(0.1)
            sent = time.time()
            DBOS.cancel_workflow(handle.workflow_id)
            while handle.get_status().status != "CANCELLED":
                time.sleep(0.001)
            samples.append((time.time() - sent) * 1000)
            step_kept_running += not release.is_set()  # the step is still in its call: nothing stops it
        out["cancel"] = latency(samples) | {
            "steps_still_blocked_after_cancel": step_kept_running,
            "how": "DBOS.cancel_workflow, then get_status() until CANCELLED; the step's call is not interrupted "
            "(the workflow stops at its next step)",
        }
        release.set()
        print(f"  DBOS cancel: {_brief({'cancel': out['cancel']})}")

        out["fairness"] = {}
        fifo = DBOS.register_queue("fair_fifo", worker_concurrency=DBOS_CONCURRENCY)
        parted = DBOS.register_queue("fair_partitioned", partition_concurrency=DBOS_CONCURRENCY)
        for how, queue in (("fifo", fifo), ("partitioned", parted)):
            partitioned = how == "partitioned"

            def submit(tenant: str, q: Any = queue, partitioned: bool = partitioned) -> Any:
                if not partitioned:
                    return q.enqueue(slow, sizes.fair_seconds)
                with SetEnqueueOptions(queue_partition_key=tenant):
                    return q.enqueue(slow, sizes.fair_seconds)

            flooded = in_parallel(lambda _i, s=submit: s("A"), sizes.flood)
            quiet = []
            for _ in range(sizes.quiet):
                sent = time.time()
                quiet.append((sent, submit("B")))
            delays = [(h.get_result()[0] - sent) * 1000 for sent, h in quiet]
            for h in flooded:
                h.get_result()
            out["fairness"][how] = latency(delays) | {"concurrency": DBOS_CONCURRENCY}
        out["fairness"]["how"] = (
            f"fifo: one queue, worker_concurrency={DBOS_CONCURRENCY}; partitioned: partition_concurrency="
            f"{DBOS_CONCURRENCY}, the tenant as the partition key"
        )
        print(f"  DBOS fairness: {_brief(out['fairness'])}")
    finally:
        release.set()
        DBOS.destroy(workflow_completion_timeout_sec=5)
    return out


# --- LangGraph's Agent Server ------------------------------------------------------------------


def agent_server_python() -> str | None:
    named = os.environ.get("ENACT_AGENT_SERVER_PYTHON")
    if named:
        return named
    own = ROOT / ".venv" / "agent-server" / "bin" / "python"
    if own.exists():
        return str(own)
    if importlib.util.find_spec("langgraph_api") is not None:
        return sys.executable
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentServer:
    """``langgraph dev`` in a process group of its own, serving ``bench.peers_graphs``; stopped
    with SIGINT (then SIGKILL after 15 s) on exit."""

    def __init__(self, python: str, jobs: int, workdir: Path) -> None:
        self.python, self.jobs, self.workdir = python, jobs, workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"agent-server-{jobs}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> AgentServer:
        graphs = Path(__file__).resolve().parent / "peers_graphs.py"
        config = {"dependencies": ["."], "graphs": {g: f"{graphs}:{g}" for g in ("slow", "blocked", "chain")}}
        (self.workdir / "langgraph.json").write_text(json.dumps(config))
        env = {**os.environ, "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false",
               "LANGCHAIN_TRACING_V2": "false", "PYTHONPATH": str(ROOT)}  # fmt: skip
        command = [self.python, "-m", "langgraph_cli", "dev", "--no-browser", "--no-reload",
                   "--host", "127.0.0.1", "--port", str(self.port), "--n-jobs-per-worker", str(self.jobs),
                   "--server-log-level", "WARNING", "--config", "langgraph.json"]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self, timeout: float = 90) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the Agent Server exited ({self.process.returncode}): {self.tail()}")
            try:
                if httpx.get(f"{self.url}/ok", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the Agent Server did not answer within {timeout:.0f} s: {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __exit__(self, *exc: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


async def _gather_limited(coros: Sequence[Any], limit: int = SUBMITTERS) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


async def _agent_workloads(url: str, jobs: int, sizes: Sizes, full: bool) -> dict[str, Any]:
    from langgraph_sdk import get_client

    client = get_client(url=url, timeout=600)

    async def create(graph: str, payload: dict[str, Any]) -> dict[str, Any]:
        return dict(await client.runs.create(None, graph, input=payload, on_completion="keep"))

    async def join(run: dict[str, Any]) -> dict[str, Any]:
        return dict(await client.runs.join(run["thread_id"], run["run_id"]))

    out: dict[str, Any] = {"io_concurrency": {}}
    await join(await create("slow", {"seconds": 0}))  # the first run imports and warms up
    for n in sizes.io_counts:
        first = time.time()
        runs = await _gather_limited([create("slow", {"seconds": sizes.io_seconds}) for _ in range(n)])
        values = await _gather_limited([join(r) for r in runs], limit=64)
        spans = [(v["started"], v["ended"]) for v in values]
        out["io_concurrency"][str(n)] = waiting_result(n, sizes.io_seconds, first, spans) | {
            "how": f"--n-jobs-per-worker {jobs}; the node awaits asyncio.sleep"
        }
    print(f"  Agent Server ({jobs} jobs) io_concurrency: {_brief(out['io_concurrency'])}")
    if not full:
        return out

    first = time.time()
    runs = await _gather_limited([create("chain", {"n": 0}) for _ in range(sizes.throughput)])
    values = await _gather_limited([join(r) for r in runs], limit=64)
    if any(v["n"] != CHAIN_STEPS for v in values):
        raise RuntimeError("a chain did not count to its length")
    out["throughput"] = throughput_result(sizes.throughput, first, [v["ended"] for v in values])
    print(f"  Agent Server ({jobs} jobs) throughput: {out['throughput']['per_s']}/s")

    samples = []
    for _ in range(sizes.pickups):
        sent = time.time()
        value = await join(await create("slow", {"seconds": 0}))
        samples.append((value["started"] - sent) * 1000)
    out["pickup"] = latency(samples)

    samples = []
    for _ in range(sizes.cancels):
        run = await create("blocked", {})
        while (await client.runs.get(run["thread_id"], run["run_id"]))["status"] != "running":
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # into its node's call
        sent = time.time()
        await client.runs.cancel(run["thread_id"], run["run_id"], wait=True, action="interrupt")
        seen = time.time()
        status = (await client.runs.get(run["thread_id"], run["run_id"]))["status"]
        if status != "interrupted":
            raise RuntimeError(f"a cancelled run is {status!r}")
        samples.append((seen - sent) * 1000)
    out["cancel"] = latency(samples) | {
        "how": "runs.cancel(wait=True, action='interrupt') returns once the run stopped (its node's "
        "await is cancelled); then its status is 'interrupted'"
    }
    print(f"  Agent Server ({jobs} jobs) pickup, cancel: {_brief({k: out[k] for k in ('pickup', 'cancel')})}")

    payload = {"seconds": sizes.fair_seconds}
    flooded = await _gather_limited([create("slow", payload) for _ in range(sizes.flood)])
    quiet = []
    for _ in range(sizes.quiet):
        sent = time.time()
        quiet.append((sent, await create("slow", payload)))
    values = await _gather_limited([join(run) for _, run in quiet])
    await _gather_limited([join(run) for run in flooded], limit=64)
    out["fairness"] = latency([(v["started"] - sent) * 1000 for (sent, _), v in zip(quiet, values, strict=True)])
    out["fairness"]["how"] = "no tenants: B's runs queue behind A's, one queue"
    print(f"  Agent Server ({jobs} jobs) fairness: {_brief({'fairness': out['fairness']})}")
    return out


def run_agent_server(sizes: Sizes) -> dict[str, Any]:
    python = agent_server_python()
    assert python is not None
    version = subprocess.run(
        [python, "-c", "from importlib.metadata import version; print(version('langgraph-api'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    out: dict[str, Any] = {"version": version, "python": python, "jobs": {}}
    with tempfile.TemporaryDirectory(prefix="enact-peers-agent-server-") as tmp:
        for jobs in sizes.agent_jobs:
            full = jobs == max(sizes.agent_jobs)  # the other workloads on the largest only
            where = Path(tmp, str(jobs))
            where.mkdir()
            with AgentServer(python, jobs, where) as server:
                try:
                    out["jobs"][str(jobs)] = asyncio.run(_agent_workloads(server.url, jobs, sizes, full))
                except BaseException:
                    print(f"  the Agent Server's log ends:\n{server.tail()}")
                    raise
    return out


# --- the LangGraph library -----------------------------------------------------------------------


def run_langgraph(sizes: Sizes) -> dict[str, Any]:
    url = postgres_url("enact_peers_langgraph")
    if url is None:
        return {"skipped": "PostgreSQL does not answer"}
    import uuid

    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import ConnectionPool

    from bench.peers_graphs import chain_builder

    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    out: dict[str, Any] = {"version": package_version("langgraph"), "throughput": {}}
    with ConnectionPool(url, min_size=LANGGRAPH_THREADS, max_size=LANGGRAPH_THREADS, kwargs=kwargs) as pool:
        saver = PostgresSaver(pool)  # type: ignore[arg-type]
        saver.setup()
        graph = chain_builder(CHAIN_STEPS).compile(checkpointer=saver)
        for durability in ("sync", "async"):

            def run(_i: int, durability: str = durability) -> float:
                config = {"configurable": {"thread_id": str(uuid.uuid4())}}
                value = graph.invoke({"n": 0}, config, durability=durability)  # type: ignore[arg-type]
                if value["n"] != CHAIN_STEPS:
                    raise RuntimeError(f"the chain counted {value['n']}")
                return float(value["ended"])

            run(0)  # warm up
            first = time.time()
            ends = in_parallel(run, sizes.throughput, workers=LANGGRAPH_THREADS)
            out["throughput"][durability] = throughput_result(sizes.throughput, first, ends)
    out["throughput"]["how"] = f"{LANGGRAPH_THREADS} threads invoking, PostgresSaver on a pool of as many connections"
    print(f"  LangGraph lib throughput: {_brief(out['throughput'])}")
    return out


# --- which peers are here ----------------------------------------------------------------------


def missing(peer: str) -> str | None:
    """Why ``peer`` cannot run here, or None."""
    if peer == "dbos" and importlib.util.find_spec("dbos") is None:
        return "dbos is not installed (pip install -e '.[bench]')"
    if peer == "langgraph" and (
        importlib.util.find_spec("langgraph") is None
        or importlib.util.find_spec("langgraph.checkpoint.postgres") is None
    ):
        return "langgraph and langgraph-checkpoint-postgres are not installed (pip install -e '.[bench]')"
    if peer == "agent_server":
        if importlib.util.find_spec("langgraph_sdk") is None:
            return "langgraph-sdk (the client) is not installed (pip install -e '.[bench]')"
        if agent_server_python() is None:
            return "no Python with langgraph-api: python -m venv .venv/agent-server && .venv/agent-server/bin/pip install 'langgraph-cli[inmem]' (or set ENACT_AGENT_SERVER_PYTHON)"  # fmt: skip
    return None


RUNNERS: dict[str, Callable[[Sizes], dict[str, Any]]] = {
    "dbos": run_dbos,
    "agent_server": run_agent_server,
    "langgraph": run_langgraph,
}


def run_child(peer: str, sizes: Sizes, timeout: float) -> dict[str, Any]:
    """``peer``'s workloads in a process of its own (DBOS is a process-wide singleton with threads
    of its own; none of it should share a process with another peer's)."""
    with tempfile.TemporaryDirectory(prefix="enact-peers-") as tmp:
        result = Path(tmp, "result.json")
        command = [sys.executable, "-m", "bench.peers", "--child", peer, "--sizes", json.dumps(asdict(sizes)),
                   "--child-output", str(result)]  # fmt: skip
        child = subprocess.Popen(command, cwd=ROOT)
        try:
            code = child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.terminate()  # it stops what it started (its SIGTERM handler unwinds), then ends
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            raise RuntimeError(f"{LABELS[peer]}: still running after {timeout:.0f} s; stopped") from None
        if code != 0:
            raise RuntimeError(f"{LABELS[peer]}: its run failed (exit {code}; its output is above)")
        return dict(json.loads(result.read_text()))


# --- our figures -------------------------------------------------------------------------------


def _load(name: str) -> dict[str, Any]:
    try:
        return dict(json.loads((RESULTS_DIR / f"{name}.json").read_text()))
    except (OSError, ValueError):
        return {}


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def ours() -> dict[str, dict[str, Any]]:
    """Our figures, from ``bench/results``: {workload: {"scaled": cell, "embedded": cell}}; a cell
    is None where the benchmark has not measured it."""
    io, fair = _load("io_concurrency"), _load("fairness")
    slots, stream, steps = _load("throughput_slots"), _load("stream_latency_slots"), _load("durable_steps")
    cells: dict[str, dict[str, Any]] = {}
    cells["io_40"], cells["io_1000"] = {}, {}
    for kind in ("scaled", "embedded"):
        r = _get(io, "results", kind)
        if r:  # one size per deployment: 1,000 scaled, 200 embedded (shown in the 1,000 row, with its size)
            row = "io_40" if r["executions"] <= 40 else "io_1000"
            cells[row][kind] = {"executions": r["executions"], "makespan_s": r["makespan_s"],
                                "peak_running": r["peak_running"]}  # fmt: skip
    cells["throughput"] = {}
    for c in slots.get("configurations") or []:
        if (c.get("clusters"), c.get("workers")) == (2, 2):  # the scaled deployment's workers
            cells["throughput"]["scaled"] = {"per_s": c.get("median"), "runs": c.get("executions_per_s")}
    cells["pickup"] = {
        "scaled": _get(steps, "pickup_ms", "redis"),
        "scaled_local_wakeups": _get(steps, "pickup_ms", "orm"),
    }
    cells["cancel"] = {kind: _get(stream, "results", kind, "cancel") for kind in ("scaled", "embedded")}
    cells["fairness"] = {}
    for kind in ("scaled", "embedded"):
        r = _get(fair, "results", "quiet", kind)
        if r:
            cells["fairness"][kind] = {"p50": r["p50_ms"], "p99": r["p99_ms"], "flood": r["flood"],
                                       "quiet": r["quiet"], "step_seconds": r["step_seconds"]}  # fmt: skip
    return cells


# --- the table ---------------------------------------------------------------------------------


def _brief(results: dict[str, Any]) -> str:
    parts = []
    for key, r in results.items():
        if not isinstance(r, dict):
            continue
        if "makespan_s" in r:
            parts.append(f"{key}: {r['makespan_s']:.1f} s, {r['peak_running']} at once")
        elif "per_s" in r:
            parts.append(f"{key}: {r['per_s']}/s")
        elif "p50" in r:
            parts.append(f"{key}: {r['p50']:.1f} / {r['p99']:.1f} ms")
    return "; ".join(parts)


def _ms(r: dict[str, Any] | None) -> str:
    if not r or r.get("p50") is None:
        return ""
    return f"{r['p50']:.0f} / {r['p99']:.0f} ms" if r["p50"] >= 10 else f"{r['p50']:.1f} / {r['p99']:.1f} ms"


def _waiting(r: dict[str, Any] | None, n: int) -> str:
    if not r:
        return ""
    cell = f"{r['makespan_s']:.1f} s ({r['peak_running']} at once)"
    return cell if r.get("executions", n) == n else f"{r['executions']:,}: {cell}"


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _merge(rounds: Sequence[dict[str, Any]], path: Sequence[str]) -> list[dict[str, Any]]:
    return [r for r in (_get(one, *path) for one in rounds) if r]


def _cells_of_rounds(rs: list[dict[str, Any]], fmt: Callable[[dict[str, Any]], str]) -> str:
    """One round's cell, or each round's, separated by ``;``: the spread is the noise."""
    return "; ".join(fmt(r) for r in rs)


def table(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    mine = ours()
    peers = results["peers"]
    rounds = {peer: list(p.get("rounds", [])) for peer, p in peers.items()}

    def peer_cell(peer: str, build: Callable[[list[dict[str, Any]]], str], suffix: str = "") -> str:
        p = peers.get(peer)
        if p is None:
            return "not run"
        if "skipped" in p:
            return "skipped"
        cell = build(rounds[peer])
        return f"{cell}{suffix}" if cell else "not run"

    def of(path: Sequence[str], fmt: Callable[[dict[str, Any]], str]) -> Callable[[list[dict[str, Any]]], str]:
        return lambda rs: _cells_of_rounds(_merge(rs, path), fmt)

    sizes = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in results["sizes"].items()})
    jobs = [str(j) for j in sizes.agent_jobs]
    top = jobs[-1]
    rows = []
    for n in sizes.io_counts:
        io = mine.get(f"io_{n}", {})

        def agent_io(rs: list[dict[str, Any]], n: int = n) -> str:
            return " / ".join(
                f"{j} jobs: " + _cells_of_rounds(_merge(rs, ("jobs", j, "io_concurrency", str(n))), lambda r, n=n: _waiting(r, n))
                for j in jobs
            )  # fmt: skip

        rows.append([
            f"io_concurrency, {n:,} x {sizes.io_seconds:g} s: makespan (peak running)",
            _waiting(io.get("scaled"), n) or "not measured", _waiting(io.get("embedded"), n) or "not measured",
            peer_cell("dbos", of(("io_concurrency", str(n)), lambda r, n=n: _waiting(r, n))),
            peer_cell("agent_server", agent_io), "n/a (no queue)",
        ])  # fmt: skip
    per_s = lambda r: f"{r['per_s']:.1f}/s"  # noqa: E731
    ours_tp = mine["throughput"].get("scaled") or {}
    rows.append([
        f"throughput, {sizes.throughput} x {CHAIN_STEPS} steps: executions/s",
        f"{ours_tp['per_s']:.1f}/s" if ours_tp.get("per_s") else "not measured", "not measured",
        peer_cell("dbos", of(("throughput",), per_s), " (durable)"),
        peer_cell("agent_server", of(("jobs", top, "throughput"), per_s), f" ({top} jobs, in memory)"),
        peer_cell("langgraph", lambda rs: "sync " + _cells_of_rounds(_merge(rs, ("throughput", "sync")), per_s)
                  + ", async " + _cells_of_rounds(_merge(rs, ("throughput", "async")), per_s)),
    ])  # fmt: skip
    pickup = mine["pickup"]
    rows.append([
        f"pickup, {sizes.pickups} one after the other: p50 / p99",
        (_ms(pickup["scaled"]) + " (Redis)") if pickup.get("scaled") else "not measured", "not measured",
        peer_cell("dbos", lambda rs: "queue " + _cells_of_rounds(_merge(rs, ("pickup", "queue")), _ms)
                  + "; start_workflow " + _cells_of_rounds(_merge(rs, ("pickup", "direct")), _ms)),
        peer_cell("agent_server", of(("jobs", top, "pickup"), _ms)), "n/a (no queue)",
    ])  # fmt: skip
    rows.append([
        f"cancel, step blocked in a {BLOCKED_SECONDS:g} s call ({sizes.cancels}): p50 / p99",
        _ms(mine["cancel"].get("scaled")) or "not measured", _ms(mine["cancel"].get("embedded")) or "not measured",
        peer_cell("dbos", of(("cancel",), _ms), " (status only: the step runs on)"),
        peer_cell("agent_server", of(("jobs", top, "cancel"), _ms)), "n/a (no runs)",
    ])  # fmt: skip
    rows.append([
        f"fairness, B's {sizes.quiet} after A's {sizes.flood:,} x {sizes.fair_seconds:g} s: start delay p50 / p99",
        _ms(mine["fairness"].get("scaled")) or "not measured", _ms(mine["fairness"].get("embedded")) or "not measured",
        peer_cell("dbos", lambda rs: "FIFO " + _cells_of_rounds(_merge(rs, ("fairness", "fifo")), _ms)
                  + "; partitioned " + _cells_of_rounds(_merge(rs, ("fairness", "partitioned")), _ms)),
        peer_cell("agent_server", of(("jobs", top, "fairness"), _ms), " (no tenants)"), "n/a (no tenants)",
    ])  # fmt: skip
    headers = ["workload", "ours scaled", "ours embedded", "DBOS", "Agent Server", "LangGraph lib"]
    return headers, rows


def plot_data(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """For ``bench.plots``: per latency workload, each system's p50 in ms (a peer's median over rounds)."""
    mine = ours()
    peers = results["peers"]
    jobs = str(max(results["sizes"]["agent_jobs"]))

    def p50(peer: str, *path: str) -> float | None:
        rounds = peers.get(peer, {}).get("rounds", [])
        values = [r["p50"] for r in _merge(rounds, path) if r.get("p50") is not None]
        return round(_median(values), 1) if values else None

    panels = {
        "pickup: submit -> first step started": {
            "ours scaled (Redis)": _get(mine, "pickup", "scaled", "p50"),
            "DBOS, queue": p50("dbos", "pickup", "queue"),
            "DBOS, start_workflow": p50("dbos", "pickup", "direct"),
            "Agent Server": p50("agent_server", "jobs", jobs, "pickup"),
        },
        "cancel -> the client sees it cancelled": {
            "ours scaled": _get(mine, "cancel", "scaled", "p50"),
            "ours embedded": _get(mine, "cancel", "embedded", "p50"),
            "DBOS (status only)": p50("dbos", "cancel"),
            "Agent Server": p50("agent_server", "jobs", jobs, "cancel"),
        },
        "fairness: B's start delay after A's flood": {
            "ours scaled": _get(mine, "fairness", "scaled", "p50"),
            "ours embedded": _get(mine, "fairness", "embedded", "p50"),
            "DBOS, one queue": p50("dbos", "fairness", "fifo"),
            "DBOS, partitioned": p50("dbos", "fairness", "partitioned"),
            "Agent Server": p50("agent_server", "jobs", jobs, "fairness"),
        },
    }
    return {name: {k: round(v, 1) for k, v in bars.items() if v} for name, bars in panels.items()}


# --- main --------------------------------------------------------------------------------------


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--rounds", type=int, default=2, help="each peer's workloads this many times (the noise)")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny sizes, one round, the peers at once (a smoke check); writes nothing"
    )
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "peers.json")
    parser.add_argument("--database-suffix", default="",
                        help="appended to the peers' database names (enact_peers_dbos, enact_peers_langgraph)")  # fmt: skip
    parser.add_argument("--table-only", action="store_true",
                        help="no runs: the table again from --output, with our figures as bench/results has them now")  # fmt: skip
    parser.add_argument("--child", choices=PEERS, help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    parser.add_argument("--child-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tiny:
        args.rounds = 1
    os.environ["ENACT_PEERS_DATABASE_SUFFIX"] = args.database_suffix  # the children read it
    return args


def _sizes(text: str) -> Sizes:
    raw = json.loads(text)
    return Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def summarize(results: dict[str, Any]) -> None:
    """Print the table and keep it, our figures as they are now and the plot's figures, in ``results``."""
    headers, rows = table(results)
    print("\nSide by side (peers: each round's figure, separated by ';'):\n")
    print(markdown_table(headers, rows))
    results["table"] = {"headers": headers, "rows": rows}
    results["ours"] = ours()
    results["plot_p50_ms"] = plot_data(results)


def main() -> None:
    args = _parse()
    if args.child:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: a server it started is stopped
        result = RUNNERS[args.child](_sizes(args.sizes))
        args.child_output.write_text(json.dumps(result))
        return
    if args.table_only:  # our figures moved, or the table changed: no peer runs again
        results = json.loads(args.output.read_text())
        summarize(results)
        write_json(args.output, results)
        print(f"\nwrote {args.output}")
        return
    sizes = TINY if args.tiny else Sizes()
    results: dict[str, Any] = {"benchmark": "peers", "sizes": asdict(sizes), "peers": {}}
    failures = []
    for peer in args.peers:
        why = missing(peer)
        if why:
            print(f"{LABELS[peer]}: skipped: {why}")
            results["peers"][peer] = {"skipped": why}
    runnable = [p for p in args.peers if p not in results["peers"]]

    def one_run(peer: str, round_: int) -> None:
        load = load_average()
        print(f"{LABELS[peer]}, round {round_ + 1} of {args.rounds} (load average {load}):", flush=True)
        began = time.monotonic()
        try:
            one = run_child(peer, sizes, timeout=300 if args.tiny else 3600)
        except RuntimeError as exc:
            failures.append(str(exc))
            print(f"  {exc}", flush=True)
            return
        if "skipped" in one:
            results["peers"][peer] = one
            print(f"  {LABELS[peer]} skipped: {one['skipped']}", flush=True)
            return
        one["seconds"] = round(time.monotonic() - began, 1)
        one["load_average"] = {"before": load, "after": load_average()}
        results["peers"].setdefault(peer, {"rounds": []})["rounds"].append(one)
        print(f"  {LABELS[peer]}: {one['seconds']:.0f} s", flush=True)

    if args.tiny:  # a smoke check: the peers side by side, to stay well under a minute
        with ThreadPoolExecutor(max_workers=max(1, len(runnable))) as pool:
            list(pool.map(lambda peer: one_run(peer, 0), runnable))
    for round_ in range(0 if args.tiny else args.rounds):
        shift = round_ % max(1, len(runnable))  # no peer always first
        for peer in runnable[shift:] + runnable[:shift]:
            one_run(peer, round_)
    summarize(results)
    results["machine"] = machine_info()
    if failures:
        print("\nfailed:\n  " + "\n  ".join(failures))
        sys.exit(1)
    if args.tiny:
        return
    write_json(args.output, results)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
