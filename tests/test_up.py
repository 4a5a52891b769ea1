"""The README's start command: one process that brings up the web server and a worker."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines() if line.strip()]
    return [int(child) for child, parent in rows if int(parent) == pid]


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float = 90) -> str:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if marker in line or proc.poll() is not None:
            break
    return "".join(lines)


def _up(tmp_path: Path) -> tuple[subprocess.Popen[str], dict[str, str], int]:
    """``manage.py up`` on a database of the test's own, as the README starts it; and its env."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(ENACT_SQLITE_PATH=str(tmp_path / "db.sqlite3"), ENACT_STATE_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "up", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return proc, env, port


def test_up_starts_web_and_worker_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    proc, _, port = _up(tmp_path)
    try:
        output = _read_until(proc, "log in as")
        login = re.search(r"log in as admin / (\S+)", output)
        assert login is not None, output[-2000:]
        assert (tmp_path / "enact-admin-password.txt").read_text().strip() == login.group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=10) as response:
            assert response.status == 200
        children = _children_of(proc.pid)
        assert len(children) == 2  # the web server and the worker cluster
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    time.sleep(0.5)
    for child in children:
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)


def _enact(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", "enact", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ctrl_c_hands_running_executions_back_and_exits_within_5_s(tmp_path: Path) -> None:
    proc, env, _ = _up(tmp_path)
    try:
        assert "log in as" in _read_until(proc, "log in as")
        ids = [_enact(env, "submit", "demo", "demo.slow", "--input", '{"steps": 20, "seconds": 0.5}').split()[0]]
        ids.append(_enact(env, "submit", "demo", "demo.slow", "--input", '{"steps": 1, "seconds": 60}').split()[0])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _enact(env, "list", "demo", "--state", "running").count("exec_") < 2:
            time.sleep(0.2)
        workers = _children_of(_children_of(proc.pid)[1])
    finally:
        asked = time.monotonic()
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
    assert time.monotonic() - asked < 5, output[-2000:]
    assert proc.returncode == 0
    assert "SIGKILL" not in output
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    # Both were handed back, ready for the next worker at once: the short steps' run paused at a
    # step boundary (checkpointed, a resume asked for), the long step's run mid-step.
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        rows = dict(
            db.execute("SELECT id, state || ',' || lease_owner || ',' || resume_requested FROM executions_execution")
        )
    assert [rows[i] for i in ids] == ["paused,,1", "running,,0"], output[-2000:]


def _metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else None


def test_up_logs_each_request_once_and_counts_each_worker_process_once(tmp_path: Path) -> None:
    """Each request is one line of ``up``'s output (Django's own console handler and ours both
    printed it), and ``enact_workers`` counts the cluster's worker processes (ENACT_WORKERS,
    2 here), not its sentinel, pusher and monitor too."""
    proc, _, port = _up(tmp_path)
    try:
        assert "log in as" in _read_until(proc, "log in as")
        marker = f"nope-{port}"
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{marker}", timeout=10)
        counted: list[float | None] = []
        deadline = time.monotonic() + 40  # three heartbeats (5 s apart) and then some
        while time.monotonic() < deadline:
            counted.append(_metric(port, "enact_workers"))
            time.sleep(1)
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
    assert counted[-1] == 2, (counted, output[-2000:])
    assert max(c or 0 for c in counted) == 2, counted
    request_lines = [line for line in output.splitlines() if f"GET /api/v1/{marker}" in line]
    assert len(request_lines) == 1, request_lines
    not_found = [line for line in output.splitlines() if f"Not Found: /api/v1/{marker}" in line]
    assert len(not_found) == 1, not_found


def test_the_web_servers_metrics_count_what_the_worker_processes_ran(tmp_path: Path) -> None:
    """``/metrics`` is served by the web process, but executions run in the worker processes:
    their counts reach it (prometheus_client's multiprocess mode)."""
    proc, env, port = _up(tmp_path)
    try:
        assert "log in as" in _read_until(proc, "log in as")
        for _ in range(3):
            _enact(env, "submit", "demo", "demo.chain", "--input", '{"n": 2}')
        ended: float | None = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and ended != 3:
            ended = _metric(port, 'enact_runs_ended_total\\{outcome="completed"\\}')
            time.sleep(0.5)
        picked = _metric(port, "enact_pickup_seconds_count")
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
    assert ended == 3, output[-2000:]
    assert picked == 3
