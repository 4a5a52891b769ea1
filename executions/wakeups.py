"""Wake-ups: how the platform tells its worker processes, at once, that something happened.

Four kinds of news:

- work is ready (a submission, a resume, an answer, a freed slot, a lease handed back): every
  worker process with a free slot looks for it (``runtime/leases.py`` picks fairly);
- an execution has news (a cancel, a pause, an inbox message): the worker that holds it acts on
  it at once, instead of finding it on its next look at the database;
- events were committed (the embedded default only): the web process's relay reads the log now,
  instead of polling it many times a second.
- a webhook delivery is due: the worker processes' senders (``runtime/webhooks.py``) claim it now.

All are pushed, so idle workers sleep instead of polling, and a cancel reaches the running step
in milliseconds. News is a hint, never the truth: the database says what is ready and what was
asked for, and workers still look on their own now and then (``ENACT_DISPATCH_POLL_SECONDS``,
``ENACT_CONTROL_POLL_SECONDS``), so a lost wake-up costs latency, never correctness.

How, by deployment:

- scaled (``REDIS_URL``): Redis pub/sub on one channel per queue name; every worker process
  subscribes (redis-py);
- embedded default: a UNIX datagram socket per worker process, in a folder of this machine named
  after the database; a sender writes one datagram to each. Nothing to install, nothing to poll.
  Written by hand because it is twenty lines over the standard library, and no library offers
  broker-less pub/sub between the processes of one machine.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import transaction

logger = logging.getLogger(__name__)

WORK = "work"
EXECUTION = "execution:"  # followed by the execution's id
EVENTS = "events"
WEBHOOKS = "webhooks"


def work_ready() -> None:
    """Tell every worker process that an execution is ready to run."""
    _send(WORK)


def execution_news(execution_id: str) -> None:
    """Tell the worker that holds ``execution_id`` to look at it now (a cancel, a pause, a message)."""
    _send(EXECUTION + execution_id)


def events_committed() -> None:
    """Tell the web processes' relays that new events are in the log (the embedded default)."""
    _send(EVENTS)


def webhooks_due() -> None:
    """Tell the worker processes' webhook senders that a delivery is due (runtime/webhooks.py)."""
    _send(WEBHOOKS)


def work_ready_after_commit() -> None:
    transaction.on_commit(work_ready)


def execution_news_after_commit(execution_id: str) -> None:
    transaction.on_commit(lambda: execution_news(execution_id))


def listen(
    on_work: Callable[[], None] | None = None,
    on_execution: Callable[[str], None] | None = None,
    on_events: Callable[[], None] | None = None,
    on_webhooks: Callable[[], None] | None = None,
) -> Callable[[], None]:
    """Start a daemon thread that calls ``on_work()``, ``on_execution(id)``, ``on_events()`` or ``on_webhooks()`` for
    each piece of news this process hears. Returns a function that stops listening."""

    def deliver(message: str) -> None:
        if message == WORK and on_work is not None:
            on_work()
        elif message.startswith(EXECUTION) and on_execution is not None:
            on_execution(message[len(EXECUTION) :])
        elif message == EVENTS and on_events is not None:
            on_events()
        elif message == WEBHOOKS and on_webhooks is not None:
            on_webhooks()

    listener = _RedisListener(deliver) if settings.REDIS_URL else _SocketListener(deliver)
    listener.start()
    return listener.stop


def _send(message: str) -> None:
    try:
        if settings.REDIS_URL:
            _redis().publish(_channel(), message)
        else:
            _send_to_sockets(message.encode())
    except Exception:  # news is a hint: the receivers' own looks find the work anyway
        logger.warning("a wake-up (%s) was not sent", message, exc_info=True)


# --- Redis -------------------------------------------------------------------------------------

_client: redis.Redis | None = None
_client_pid = 0


def _redis() -> redis.Redis:
    global _client, _client_pid
    if _client is None or _client_pid != os.getpid():  # a forked child makes its own connection
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
        _client_pid = os.getpid()
    return _client


def _channel() -> str:
    return f"enact:{settings.Q_CLUSTER['name']}:wake"


class _RedisListener:
    RETRY_SECONDS = 1.0

    def __init__(self, deliver: Callable[[str], None]) -> None:
        self.deliver = deliver
        self.stopped = threading.Event()
        self.pubsub: Any = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="enact-wakeups", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        with contextlib.suppress(Exception):
            if self.pubsub is not None:
                self.pubsub.close()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5, health_check_interval=30)
                self.pubsub = client.pubsub(ignore_subscribe_messages=True)
                self.pubsub.subscribe(_channel())
                for message in self.pubsub.listen():
                    if self.stopped.is_set():
                        return
                    data = message.get("data")
                    if isinstance(data, bytes):
                        self.deliver(data.decode())
            except Exception:
                if self.stopped.is_set():
                    return
                # Redis restarting: news meanwhile is lost, and the periodic looks cover it.
                logger.warning("listening for wake-ups failed; trying again", exc_info=True)
                self.deliver(WORK)
                time.sleep(self.RETRY_SECONDS)


# --- UNIX datagram sockets (the embedded default) ------------------------------------------------


def wake_dir() -> Path:
    """The folder of this database's worker sockets: short (a socket's path has a limit of about
    a hundred bytes), private, and the same for every process that uses the database."""
    configured = getattr(settings, "ENACT_WAKE_DIR", "")
    if configured:
        return Path(configured)
    name = str(settings.DATABASES["default"]["NAME"])
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"enact-wake-{digest}"


def _send_to_sockets(data: bytes) -> None:
    folder = wake_dir()
    try:
        paths = [entry.path for entry in os.scandir(folder) if entry.name.endswith(".sock")]
    except FileNotFoundError:
        return  # no worker listens yet
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for path in paths:
            try:
                sender.sendto(data, path)
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # its process is gone
            except BlockingIOError:
                pass  # that worker has plenty of news queued already


class _SocketListener:
    def __init__(self, deliver: Callable[[str], None]) -> None:
        self.deliver = deliver
        folder = wake_dir()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = folder / f"{os.getpid()}-{os.urandom(4).hex()}.sock"
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(self.path))
        self.stopped = threading.Event()

    def start(self) -> None:
        threading.Thread(target=self._run, name="enact-wakeups", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        with contextlib.suppress(OSError):
            self.socket.close()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                data = self.socket.recv(512)
            except OSError:
                return  # closed by stop()
            self.deliver(data.decode(errors="replace"))
