"""The platform as it is deployed, started by a benchmark that then acts only as its client.

Two kinds, with the README's own commands and environment:

- ``embedded``: SQLite, no services; one web process (daphne) and one worker cluster; the web
  process relays the event log to its sockets.
- ``scaled``: PostgreSQL and Redis; ``webs`` daphne processes and ``clusters`` worker clusters
  (the README's "Deploying scaled"; two of each by default). Workers publish events through
  channels-redis, so every web process serves every client.

Each process runs in a process group of its own, with its output in ``workdir``. A deployment is
ready when every web process answers ``GET /readyz`` with 200: the database answers, the channel
layer carries a message and a worker was seen, as a load balancer would ask.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def database_url(name: str) -> str:
    """The URL of database ``name`` on the server ``DATABASE_URL`` names (else the local one)."""
    server = urlparse(os.environ.get("DATABASE_URL") or PG_SERVER)
    return urlunparse(server._replace(path=f"/{name}"))


def create_database(url: str, *, fresh: bool = False) -> str:
    """Create the database ``url`` names if it is missing (dropped first when ``fresh``)."""
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        if fresh:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    return url


def redis_url() -> str | None:
    """``REDIS_URL`` (else the local Redis) if it answers a ping, else None."""
    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS
    try:
        import redis

        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except Exception:
        return None
    return url


def scaled_reachable() -> bool:
    """Both services of the scaled deployment answer."""
    if redis_url() is None:
        return False
    try:
        import psycopg

        psycopg.connect(database_url("postgres"), connect_timeout=2).close()
    except Exception:
        return False
    return True


def cluster_env(url: str, redis: str | None, queue: str, **extra: str) -> dict[str, str]:
    """The environment of a worker cluster on database ``url``, with Redis as its broker (and
    channel layer) when ``redis`` is given, else the ORM broker."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DATABASE_URL=url, ENACT_QUEUE_NAME=queue, **extra)
    if redis:
        env["REDIS_URL"] = redis
    return env


def wait_for_workers(count: int, since: Any, timeout: float = 90) -> None:
    """Until ``count`` worker processes have sent a heartbeat after ``since`` (a datetime taken
    before their clusters started: workers of a cluster stopped just before still look alive
    for a while). Clusters start at their own pace; a benchmark that started on the first one
    would measure fewer workers than it says. For a benchmark process that has Django set up on
    the deployment's database."""
    from executions.models import WorkerHeartbeat

    deadline = time.monotonic() + timeout
    while WorkerHeartbeat.objects.filter(last_seen__gte=since).count() < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"fewer than {count} worker processes were seen in {timeout} s")
        time.sleep(0.1)


class Process:
    """A command of the platform in a process group of its own (a cluster's forked workers share
    it, so none outlives ``stop``)."""

    def __init__(self, command: list[str], env: Mapping[str, str], log: Path | None = None) -> None:
        self.log = log
        with log.open("ab") if log else open(os.devnull, "wb") as out:  # the child keeps its own copy
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)


def cluster(env: Mapping[str, str], *, workers: int = 2, log: Path | None = None) -> Process:
    """``manage.py qcluster`` with ``workers`` worker processes."""
    return Process([sys.executable, "manage.py", "qcluster"], {**env, "ENACT_WORKERS": str(workers)}, log)


def web(env: Mapping[str, str], port: int, log: Path | None = None) -> Process:
    """One daphne process, as the README deploys it."""
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "enact_platform.asgi:application"]
    # The benchmarks follow one execution with hundreds of sockets of one API key.
    return Process(command, {"ENACT_MAX_LIVE_CONNECTIONS": "100000", **env}, log)


class Deployment:
    """migrate, a tenant (``limits`` are ``enact limits`` options) and a write key, then the web
    processes and worker clusters; ready once every web process says so on ``/readyz``."""

    def __init__(
        self,
        kind: str,
        workdir: Path,
        *,
        webs: int = 1,
        clusters: int = 1,
        workers: int = 2,
        tenant: str = "bench",
        limits: tuple[str, ...] = (),
        database: str = "enact_bench_deployment",
    ) -> None:
        if kind not in ("embedded", "scaled"):
            raise ValueError(f"unknown deployment {kind!r}: embedded or scaled")
        if kind == "embedded" and (webs, clusters) != (1, 1):
            raise ValueError("the embedded default is one web process and one cluster (SQLite)")
        self.kind, self.workdir = kind, workdir
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.update(ENACT_QUEUE_NAME=f"bench-{kind}-{os.getpid()}", ENACT_DEBUG="0",
                   SECRET_KEY="bench-deployment", ALLOWED_HOSTS="127.0.0.1,localhost",
                   ENACT_SECRETS_KEY="YmVuY2gtZGVwbG95bWVudC1zZWNyZXRzLWtleS0zMiE=")  # fmt: skip
        if kind == "embedded":
            env["ENACT_SQLITE_PATH"] = str(workdir / f"{tenant}.sqlite3")
        else:
            redis = redis_url()
            if redis is None:
                raise RuntimeError("the scaled deployment needs Redis (REDIS_URL, or one on 127.0.0.1:6379)")
            env["DATABASE_URL"] = create_database(database_url(database), fresh=True)
            env["REDIS_URL"] = redis
        self.env = env
        self.manage("migrate", "--verbosity", "0")
        self.manage("enact", "tenant-create", tenant)
        if limits:
            self.manage("enact", "limits", tenant, *limits)
        self.key = self.manage("enact", "key-create", tenant, "--scope", "write").strip().splitlines()[-1]
        self.ports = [free_port() for _ in range(webs)]
        self.processes: list[Process] = []
        try:
            for i, port in enumerate(self.ports):
                self.processes.append(web(env, port, workdir / f"{kind}-web-{i}.log"))
            for i in range(clusters):
                self.processes.append(cluster(env, workers=workers, log=workdir / f"{kind}-cluster-{i}.log"))
            self._wait_ready(workers=clusters * workers)
        except BaseException:
            self.stop()
            raise

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=ROOT, env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    def _wait_ready(self, *, workers: int, timeout: float = 90) -> None:
        """Every web process answers /readyz with 200, and every worker process has sent its
        heartbeat (``/readyz`` needs only one)."""
        deadline = time.monotonic() + timeout
        for port in self.ports:
            while not self._ready(port):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {self.kind} deployment was not ready in {timeout} s; see {self.workdir}")
                time.sleep(0.2)
        while self._workers_seen(self.ports[0]) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {workers} workers were seen in {timeout} s; see {self.workdir}")
            time.sleep(0.2)

    @staticmethod
    def _workers_seen(port: int) -> int:
        """``enact_workers`` of ``/metrics`` (open to this machine): worker processes seen lately."""
        token = os.environ.get("ENACT_METRICS_TOKEN")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {token}"} if token else {}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                text = answer.read().decode()
        except (OSError, urllib.error.URLError):
            return 0
        found = re.search(r"^enact_workers (\S+)$", text, re.MULTILINE)
        return int(float(found.group(1))) if found else 0

    @staticmethod
    def _ready(port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    @property
    def webs(self) -> int:
        return len(self.ports)

    def post(self, path: str, body: dict[str, Any], *, web: int = 0) -> dict[str, Any]:
        """POST ``/api/v1/{path}`` to web process ``web`` (modulo their number)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports[web % self.webs]}/api/v1/{path}",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.loads(response.read()))

    def ws_url(self, execution_id: str, *, web: int = 0) -> str:
        """The websocket of ``execution_id`` on web process ``web`` (modulo their number)."""
        return f"ws://127.0.0.1:{self.ports[web % self.webs]}/ws/executions/{execution_id}/?token={self.key}"

    def stop(self) -> None:
        for process in self.processes:
            process.stop()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
