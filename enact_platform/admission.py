"""Admission of HTTP requests into Django's threaded code, so that a flood waits instead of failing.

Django's ASGI handler runs each request's view in a thread of its own. A thousand requests in
flight are then a thousand threads, each wanting one of the process's few pooled database
connections (``ENACT_DB_POOL_SIZE``); past the pool's timeout they fail with 500. Here at most
``ENACT_REQUEST_THREADS`` requests run Django's code at once; the others wait in the event loop, in
the order they came, holding no thread and no connection. Past ``ENACT_REQUEST_QUEUE`` waiting, a
request is answered at once with 429 ``server_busy`` and a ``Retry-After``, the contract's error body.

Written by hand because it is an ``asyncio.Semaphore`` around the ASGI call and a counter; no
library does just this in front of Django's handler (a reverse proxy's connection limit would, but
the embedded default has none).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from django.conf import settings

from enact_platform.errors import ServerBusy

Scope = dict[str, Any]


class Admission:
    """ASGI middleware for plain HTTP requests (the SSE stream and websockets don't come here)."""

    def __init__(self, app: Any, *, threads: int | None = None, queue: int | None = None) -> None:
        self.app = app
        self.threads = threads if threads is not None else settings.ENACT_REQUEST_THREADS
        self.queue = queue if queue is not None else settings.ENACT_REQUEST_QUEUE
        self._gate: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.waiting = 0

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._gate is None or self._loop is not loop:  # one per event loop (tests run several)
            self._gate, self._loop = asyncio.Semaphore(self.threads), loop
        return self._gate

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gate = self._semaphore()
        if gate.locked() and self.waiting >= self.queue:
            await _refuse(send)
            return
        self.waiting += 1
        try:
            await gate.acquire()
        finally:
            self.waiting -= 1
        try:
            await self.app(scope, receive, send)
        finally:
            gate.release()


async def _refuse(send: Any) -> None:
    busy = ServerBusy.retry_in(1)
    body = json.dumps(busy.to_body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(busy.details["retry_after"]).encode()),
    ]
    await send({"type": "http.response.start", "status": busy.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
