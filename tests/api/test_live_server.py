"""The README's curl session against the platform as its start command runs it: a real web server
and a real worker process, the embedded default (SQLite, the relay), and curl itself."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ..live import ROOT, platform_up

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")]


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    with platform_up(tmp_path) as up:
        yield up.url, up.env


def _sh(command: list[str], env: dict[str, str], timeout: float = 60) -> str:
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


def test_the_readme_curl_session(platform: tuple[str, dict[str, str]]) -> None:
    base, env = platform
    key = _sh([sys.executable, "manage.py", "enact", "key-create", "demo", "--scope", "write"], env).splitlines()[-1]
    auth = ["-H", f"Authorization: Bearer {key}"]

    submitted = _sh(
        ["curl", "-sS", "-X", "POST", f"{base}/api/v1/executions", *auth, "-H", "Content-Type: application/json",
         "-d", '{"blueprint": "demo.slow", "input": {"steps": 20, "seconds": 1}}'],
        env,
    )  # fmt: skip
    execution = json.loads(submitted)
    assert execution["state"] == "queued"
    execution_id = execution["id"]

    # Follow the stream while the worker runs it; cancel once a step has started.
    follow = subprocess.Popen(
        ["curl", "-sS", "-N", f"{base}/api/v1/executions/{execution_id}/stream", *auth],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follow.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("data-step-start" in line for line in lines):
        lines.append(follow.stdout.readline())
    assert any(line == "event: data-step-start\n" for line in lines), lines

    cancelled = json.loads(
        _sh(["curl", "-sS", "-X", "POST", f"{base}/api/v1/executions/{execution_id}/cancel", *auth,
             "-H", "Content-Type: application/json", "-d", '{"reason": "enough"}'], env)
    )  # fmt: skip
    assert cancelled["id"] == execution_id
    rest, _ = follow.communicate(timeout=30)  # the stream ends after the terminal event
    assert follow.returncode == 0
    text = "".join(lines) + rest
    seqs = [int(n) for n in re.findall(r"^id: (\d+)$", text, flags=re.MULTILINE)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert text.rstrip().splitlines()[-2] == "event: data-execution-cancelled"
    final = json.loads(_sh(["curl", "-sS", f"{base}/api/v1/executions/{execution_id}", *auth], env))
    assert final["state"] == "cancelled"
    assert final["last_seq"] == seqs[-1]
