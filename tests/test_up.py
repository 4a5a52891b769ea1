"""The README's start command: one process that brings up the web server and a worker."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
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


def test_up_starts_web_and_worker_and_ctrl_c_stops_both(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(ENACT_SQLITE_PATH=str(tmp_path / "db.sqlite3"), ENACT_STATE_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "up", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "log in as" in line or proc.poll() is not None:
                break
        login = re.search(r"log in as admin / (\S+)", "".join(lines))
        assert login is not None, "".join(lines)[-2000:]
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
