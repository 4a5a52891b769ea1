"""A real platform for a real browser: the web server (daphne, websockets) and a worker cluster
in processes of their own, on the test database; Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from ..executions.test_processes import ROOT, _database_env

CHROMIUM = os.environ.get("ENACT_CHROMIUM", "/usr/bin/chromium")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not Path(CHROMIUM).exists() and not os.environ.get("ENACT_REQUIRE_BROWSER"):
        skip = pytest.mark.skip(reason=f"no Chromium at {CHROMIUM}: apt-get install -y chromium")
        for item in items:
            if "tests/browser" in str(item.fspath):
                item.add_marker(skip)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    process.wait(10)


class LivePlatform:
    """The web server and a worker cluster, in process groups of their own."""

    def __init__(self, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.env = {
            **os.environ,
            **_database_env(),
            "ENACT_WORKERS": "2",
            "ENACT_QUEUE_POLL_SECONDS": "0.05",
        }
        self.env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        if settings.REDIS_URL:
            self.env["REDIS_URL"] = settings.REDIS_URL
        self.worker = self._spawn("qcluster")
        self.web = self._start_web()

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _start_web(self) -> subprocess.Popen[bytes]:
        web = self._spawn("runserver", "--noreload", f"127.0.0.1:{self.port}")
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return web
            assert web.poll() is None, self.log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, self.log_path.read_text()[-3000:]
            time.sleep(0.1)

    def stop_web(self) -> None:
        _stop(self.web)

    def start_web(self) -> None:
        self.web = self._start_web()

    def stop(self) -> None:
        _stop(self.web)
        _stop(self.worker)


@pytest.fixture
def platform(transactional_db: None, tmp_path: Path) -> Iterator[LivePlatform]:
    running = LivePlatform(tmp_path / "platform.log")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def live_server_url(platform: LivePlatform) -> str:
    return platform.url


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop on this thread; the test's own ORM calls are
    # plain synchronous ones all the same.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15_000)
    try:
        yield context.new_page()
    finally:
        context.close()
