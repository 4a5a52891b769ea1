"""The scaled deployment on one machine: PostgreSQL, Redis, two web processes (daphne) and two
worker clusters (django-q2), driven as clients drive it (REST and websockets), through faults:
a cancel through the other web process, a worker killed with SIGKILL, Redis restarted, and
PostgreSQL dropping every connection."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

from executions.models import Execution, ExecutionEvent, Step
from tenants.models import Tenant
from tenants.services import api_key_create, tenant_set_limits

from .conftest import wait_until
from .executions.test_processes import ROOT, Cluster, _database_env

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(
        connection.vendor != "postgresql" or not settings.REDIS_URL,
        reason="the scaled deployment is PostgreSQL and Redis (DATABASE_URL and REDIS_URL)",
    ),
]

TERMINAL = {"data-execution-end", "data-execution-failed", "data-execution-cancelled"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Web:
    """One daphne process, as the README's scaled deployment runs it."""

    def __init__(self, log: Path, queue: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.application_name = f"enact-{log.stem}-{self.port}"  # how it shows in pg_stat_activity
        env = {**os.environ, **_database_env(), "REDIS_URL": settings.REDIS_URL, "ENACT_QUEUE_NAME": queue,
               "ENACT_SOCKET_RESYNC_SECONDS": "1", "ENACT_DB_APPLICATION_NAME": self.application_name}  # fmt: skip
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.log = log
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "enact_platform.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert wait_until(self._listening, timeout=60), log.read_text()[-3000:]

    def _listening(self) -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


class Deployment:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        queue = f"scaled-{uuid.uuid4().hex[:12]}"  # the deployment's own task queue
        self.webs = [Web(tmp / "web-a.log", queue), Web(tmp / "web-b.log", queue)]
        self.clusters = [Cluster(tmp / "cluster-1.log", queue=queue), Cluster(tmp / "cluster-2.log", queue=queue)]

    def stop(self) -> None:
        for web in self.webs:
            web.stop()
        for cluster in self.clusters:
            cluster.stop()

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in sorted(self.tmp.glob("*.log"))
        )


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Deployment]:
    running = Deployment(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def key(tenant_a: Tenant) -> str:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 10})
    return api_key_create(tenant=tenant_a, scope="write")[1]


def api(web: Web, key: str, method: str, path: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"{web.url}/api/v1/{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class Follower:
    """A websocket client following one execution; it reconnects after its last seq when dropped."""

    def __init__(self, web: Web, key: str, execution_id: str) -> None:
        self.web, self.key, self.execution_id = web, key, execution_id
        self.events: list[dict[str, Any]] = []
        self.reconnects = 0

    def _connect(self) -> Any:
        from websockets.sync.client import connect

        after = self.events[-1]["seq"] if self.events else 0
        path = f"/ws/executions/{self.execution_id}/?after={after}&token={self.key}"
        return connect(f"ws://127.0.0.1:{self.web.port}{path}", open_timeout=10)

    def follow(self, until: Callable[[dict[str, Any]], bool], timeout: float = 60, quiet: float = 5) -> None:
        """Read events until ``until`` says so; reconnect after ``quiet`` seconds without one, or
        when the server goes away."""
        from websockets.exceptions import WebSocketException

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with self._connect() as socket_:
                    if self._read(socket_, until, deadline, quiet):
                        return
            except (OSError, WebSocketException):
                time.sleep(0.5)
            self.reconnects += 1
        raise AssertionError(f"no end within {timeout} s; got {[e['type'] for e in self.events][-5:]}")

    def _read(self, socket_: Any, until: Callable[[dict[str, Any]], bool], deadline: float, quiet: float) -> bool:
        """True once ``until`` holds (or the stream ended); False when the socket went quiet."""
        while time.monotonic() < deadline:
            try:
                frame = json.loads(socket_.recv(timeout=quiet))
            except TimeoutError:
                return False
            if frame.get("type") == "end":
                return True
            if frame.get("type") == "event":
                event = frame["event"]
                if not self.events or event["seq"] == self.events[-1]["seq"] + 1:
                    self.events.append(event)
                if until(event):
                    return True
        return False

    def assert_whole(self) -> None:
        seqs = [e["seq"] for e in self.events]
        assert seqs == list(range(1, len(seqs) + 1))
        assert [e["type"] in TERMINAL for e in self.events].count(True) == 1
        assert self.events[-1]["type"] in TERMINAL
        stored = ExecutionEvent.objects.filter(execution_id=self.execution_id).count()
        assert stored == len(seqs)


def test_a_client_on_one_web_process_sees_a_cancel_made_through_the_other(deployment: Deployment, key: str) -> None:
    a, b = deployment.webs
    execution = api(b, key, "POST", "executions", {"blueprint": "demo.slow", "input": {"steps": 50, "seconds": 0.2}})
    follower = Follower(a, key, execution["id"])
    follower.follow(lambda e: e["type"] == "data-step-end")
    asked = time.monotonic()
    answer = api(b, key, "POST", f"executions/{execution['id']}/cancel", {"reason": "enough"})
    assert answer["id"] == execution["id"]
    follower.follow(lambda e: e["type"] in TERMINAL, timeout=30)
    assert time.monotonic() - asked < 5
    assert follower.events[-1]["type"] == "data-execution-cancelled"
    follower.assert_whole()


def _owner_cluster(deployment: Deployment, execution_id: str) -> Cluster | None:
    owner = Execution.objects.values_list("lease_owner", flat=True).get(pk=execution_id)
    if not owner:
        return None
    pid = int(owner.rsplit(":", 1)[1])
    for cluster in deployment.clusters:
        try:
            if os.getpgid(pid) == cluster.process.pid:
                return cluster
        except ProcessLookupError:
            return None
    return None


def test_a_worker_killed_mid_run_hands_its_execution_on(deployment: Deployment, key: str) -> None:
    a, _ = deployment.webs
    execution = api(a, key, "POST", "executions", {"blueprint": "demo.slow", "input": {"steps": 8, "seconds": 0.5}})
    execution_id = execution["id"]
    assert wait_until(
        lambda: Step.objects.filter(execution_id=execution_id, state="completed").count() >= 2, timeout=60
    )
    owner = _owner_cluster(deployment, execution_id)
    assert owner is not None, deployment.logs()
    os.killpg(owner.process.pid, signal.SIGKILL)

    follower = Follower(a, key, execution_id)
    follower.follow(lambda e: e["type"] in TERMINAL, timeout=90)
    assert follower.events[-1]["type"] == "data-execution-end", deployment.logs()
    follower.assert_whole()
    done = Step.objects.filter(execution_id=execution_id, state="completed").values_list("name", flat=True)
    assert sorted(done) == sorted(f"step_{i}" for i in range(1, 9))  # each step completed once
    assert Execution.objects.get(pk=execution_id).claims >= 2


def _restart_redis() -> None:
    subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"], check=False, capture_output=True
    )
    assert wait_until(lambda: subprocess.run(["redis-cli", "ping"], capture_output=True).returncode != 0, timeout=10)
    subprocess.run(
        ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
         "--save", "", "--appendonly", "no"],
        check=True, capture_output=True,
    )  # fmt: skip
    assert wait_until(lambda: subprocess.run(["redis-cli", "ping"], capture_output=True).stdout.strip() == b"PONG")


def test_redis_restarted_mid_run_loses_no_event(deployment: Deployment, key: str) -> None:
    a, _ = deployment.webs
    execution = api(a, key, "POST", "executions", {"blueprint": "demo.slow", "input": {"steps": 12, "seconds": 0.4}})
    follower = Follower(a, key, execution["id"])
    follower.follow(lambda e: e["type"] == "data-step-end")
    try:
        _restart_redis()
    finally:
        subprocess.run(["redis-cli", "ping"], capture_output=True)
    # What was published while a web process was away from Redis comes from the log: by the
    # seq gap, when the socket has been quiet for a second, or after a reconnect (a socket
    # opened while its web process has not reached Redis again is closed, and the client
    # comes back).
    follower.follow(lambda e: e["type"] in TERMINAL, timeout=90, quiet=3)
    assert follower.events[-1]["type"] == "data-execution-end", deployment.logs()
    follower.assert_whole()
    # And the deployment goes on: a new execution runs end to end.
    again = api(a, key, "POST", "executions", {"blueprint": "demo.chain", "input": {"n": 3}})
    assert wait_until(lambda: Execution.objects.get(pk=again["id"]).state == "completed", timeout=90), deployment.logs()


def test_postgresql_dropping_every_connection_is_recovered_from(deployment: Deployment, key: str) -> None:
    a, b = deployment.webs
    execution = api(a, key, "POST", "executions", {"blueprint": "demo.slow", "input": {"steps": 10, "seconds": 0.3}})
    assert wait_until(lambda: Step.objects.filter(execution_id=execution["id"], state="completed").exists(), timeout=60)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    # This process's other pooled connections went too: its pool starts afresh, or the next test
    # would be handed a dead one.
    connection.close()
    connection.close_pool()

    # Web processes answer again (a request may meet the dropped connection once), workers finish.
    def answers(web: Web) -> bool:
        try:
            return api(web, key, "GET", f"executions/{execution['id']}")["id"] == execution["id"]
        except Exception:
            return False

    assert wait_until(lambda: answers(a) and answers(b), timeout=30), deployment.logs()
    follower = Follower(b, key, execution["id"])
    follower.follow(lambda e: e["type"] in TERMINAL, timeout=120)
    assert follower.events[-1]["type"] == "data-execution-end", deployment.logs()
    follower.assert_whole()


def _connections_of(application_names: list[str]) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = ANY(%s) GROUP BY application_name",
            [application_names],
        )
        return dict(cursor.fetchall())


def test_a_thousand_submissions_in_flight_get_201_or_429_and_never_500(
    deployment: Deployment, tenant_a: Tenant
) -> None:
    """1,000 submissions at once over the two web processes, from a tenant with no request rate
    limit and room for 600 queued: each answers 201 or 429 (quota_exceeded past max_queued), none
    500, and neither web process holds more PostgreSQL connections than its pool."""
    import asyncio
    import threading

    import httpx

    tenant_set_limits(
        tenant=tenant_a, changes={"max_concurrent_executions": 10, "max_queued": 600, "requests_per_minute": None}
    )
    key = api_key_create(tenant=tenant_a, scope="write")[1]
    names = [web.application_name for web in deployment.webs]
    peaks: dict[str, int] = {}
    flooding = threading.Event()

    def watch() -> None:
        while not flooding.is_set():
            for name, count in _connections_of(names).items():
                peaks[name] = max(peaks.get(name, 0), count)
            time.sleep(0.05)
        connection.close()

    async def flood() -> list[tuple[int, str]]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=0)
        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(limits=limits, timeout=300, headers=headers) as client:

            async def submit(i: int) -> tuple[int, str]:
                web = deployment.webs[i % 2]
                body = {"blueprint": "demo.slow", "input": {"steps": 1, "seconds": 120}}
                response = await client.post(f"{web.url}/api/v1/executions", json=body)
                code = response.json().get("error", {}).get("code", "") if response.status_code >= 400 else ""
                return response.status_code, code

            return await asyncio.gather(*(submit(i) for i in range(1000)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        answers = asyncio.run(flood())
    finally:
        flooding.set()
        watcher.join()

    statuses = {status for status, _ in answers}
    assert statuses <= {201, 429}, (sorted(statuses), deployment.logs())
    accepted = sum(1 for status, _ in answers if status == 201)
    refused = [code for status, code in answers if status == 429]
    # The ten the workers started (max_concurrent_executions) no longer count as queued.
    assert 600 <= accepted <= 610, accepted
    assert set(refused) == {"quota_exceeded"}, set(refused)
    assert Execution.objects.filter(tenant=tenant_a).count() == accepted  # a refusal stored nothing
    pool = int(settings.DATABASES["default"].get("OPTIONS", {}).get("pool", {}).get("max_size", 10))
    assert peaks, "no web process was seen in pg_stat_activity"
    assert all(peak <= pool for peak in peaks.values()), peaks
