"""Real web processes for the tests of what the web server does: one started as ``manage.py up``
starts it (the embedded default), one as the scaled deployment does (``python -m daphne``)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..test_up import ROOT, _children_of, _free_port


class Server:
    def __init__(self, kind: str, port: int, pid: int, key: str) -> None:
        self.kind, self.port, self.pid, self.key = kind, port, pid, key

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


def _wait_port(port: int, proc: subprocess.Popen[Any], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the server exited during start-up"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError("the server did not start")


@contextlib.contextmanager
def web_processes(tmp: Path, **extra_env: str) -> Iterator[dict[str, Server]]:
    """One database; a web process as ``up`` starts it, and one as the scaled deployment does;
    and a write key of the demo tenant."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        ENACT_SQLITE_PATH=str(tmp / "db.sqlite3"),
        ENACT_STATE_DIR=str(tmp),
        ENACT_WAKE_DIR=str(tmp / "wake"),
        **extra_env,
    )
    up_port, daphne_port = _free_port(), _free_port()
    up = subprocess.Popen(
        [sys.executable, "manage.py", "up", "--no-worker", "--port", str(up_port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    procs: list[subprocess.Popen[Any]] = [up]
    try:
        _wait_port(up_port, up)
        web = _children_of(up.pid)
        assert len(web) == 1, web
        daphne = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(daphne_port),
             "enact_platform.asgi:application"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        procs.append(daphne)
        _wait_port(daphne_port, daphne)
        created = subprocess.run(
            [sys.executable, "manage.py", "enact", "key-create", "demo", "--scope", "write"],
            cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        key = created.stdout.splitlines()[-1]
        yield {
            "up": Server("up", up_port, web[0], key),
            "daphne": Server("daphne", daphne_port, daphne.pid, key),
        }
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGINT if proc is up else signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
