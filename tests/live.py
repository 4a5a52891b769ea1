"""The platform as its start command runs it (``manage.py up``: the embedded default, a real web
server and a real worker), on a database of the test's own: for tests that drive it from outside."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Platform:
    url: str  # http://127.0.0.1:<port>
    env: dict[str, str]  # the environment it runs with: commands given it reach the same database

    def key(self, scope: str = "write") -> str:
        """A new API key of the demo tenant."""
        done = subprocess.run(
            [sys.executable, "manage.py", "enact", "key-create", "demo", "--scope", scope],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return done.stdout.splitlines()[-1]


@contextmanager
def platform_up(tmp_path: Path, **settings: str) -> Iterator[Platform]:
    """``manage.py up`` on SQLite in ``tmp_path``, with ``settings`` added to its environment;
    ready once it says how to log in; stopped with Ctrl-C (SIGINT) afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(ENACT_SQLITE_PATH=str(tmp_path / "db.sqlite3"), ENACT_STATE_DIR=str(tmp_path), **settings)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "up", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        deadline, seen = time.monotonic() + 90, ""
        while "log in as" not in seen and proc.poll() is None and time.monotonic() < deadline:
            seen += proc.stdout.readline()
        assert "log in as" in seen, seen[-2000:]
        yield Platform(f"http://127.0.0.1:{port}", env)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
