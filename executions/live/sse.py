"""The Server-Sent Events stream of one execution, as a plain ASGI application.

``GET /api/v1/executions/{id}/stream`` sends the stored events after ``Last-Event-ID`` (or
``?after=``), then the live ones as they are committed, and ends after the terminal event. Each
SSE ``id:`` is the event's seq, so a client that reconnects with its last id gets exactly what
it missed. The REST API's ``/events`` answers with the same frames (``sse_frame``).

An idle client costs a channel-layer subscription and a coroutine: no thread, and no database
connection (each read borrows one and gives it back).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs

import redis
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from enact_platform.api.auth import Caller, key_from_header, resolve_caller
from enact_platform.api.throttling import key_rate_wait
from enact_platform.errors import InvalidInput, MethodNotAllowed, PlatformError, RateLimited
from executions import selectors
from executions.kernel.events import TERMINAL_EVENT_TYPES
from executions.live import relay
from executions.live.groups import channel_release, execution_group
from executions.serializers import EventSerializer

logger = logging.getLogger(__name__)

TERMINAL_TYPES = frozenset(t.value for t in TERMINAL_EVENT_TYPES)
READ_BATCH = 500
LIVE_RETRY_SECONDS = 5  # what a caller refused for holding too many is told to wait


class LiveConnections:
    """How many sockets and event streams each caller (an API key, a user) holds open in this
    process, against ``ENACT_MAX_LIVE_CONNECTIONS``: every one holds a coroutine, a channel and
    its share of the process's event fan-out, so one caller must not take them all. The
    embedded default has one web process, so this count is the whole count."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    async def claim(self, who: str) -> Any:
        """A token to give back with ``release``, or None past the cap."""
        return who if self.claim_here(who) else None

    async def release(self, token: Any) -> None:
        self.release_here(token)

    def claim_here(self, who: str) -> bool:
        with self._lock:
            held = self._held.get(who, 0)
            if held >= settings.ENACT_MAX_LIVE_CONNECTIONS:
                return False
            self._held[who] = held + 1
            return True

    def release_here(self, who: str) -> None:
        with self._lock:
            held = self._held.get(who, 0) - 1
            if held > 0:
                self._held[who] = held
            else:
                self._held.pop(who, None)


# One claim: drop the lapsed ones, count the rest, add this one if there is room (Redis's clock).
_CLAIM = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2])) + 1)
return 1
"""
# The claims a process still holds, each one's lease pushed back.
_RENEW = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], 'XX', t + tonumber(ARGV[1]), ARGV[i + 1])
  redis.call('EXPIRE', KEYS[i], math.ceil(tonumber(ARGV[1])) + 1)
end
return #KEYS
"""


class SharedLiveConnections:
    """The same cap across every web process of a scaled deployment, counted in Redis: a claim is
    a member of its caller's sorted set, scored by when its lease lapses. A process renews what
    it holds every third of ``lease`` seconds, so the claims of a process that died lapse on
    their own. With Redis out of reach, this process's own count decides for a while: the live
    features go on, capped per process. (A hand-written lease: channels-redis and the django-q2
    broker offer counters, none with a bound that outlives its holder.)"""

    def __init__(self, url: str, *, lease: float = 60.0) -> None:
        self.url = url
        self.lease = lease
        self.here = LiveConnections()
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._claim = self.client.register_script(_CLAIM)
        self._renew = self.client.register_script(_RENEW)
        self._held: dict[str, str] = {}  # member: the caller's set
        self._lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self.namespace = f"enact:live:{settings.DATABASES['default']['NAME']}:"

    async def claim(self, who: str) -> Any:
        return await asyncio.to_thread(self.claim_now, who)

    async def release(self, token: Any) -> None:
        await asyncio.to_thread(self.release_now, token)

    def claim_now(self, who: str) -> Any:
        member, key = uuid.uuid4().hex, self.namespace + who
        try:
            taken = self._claim(keys=[key], args=[settings.ENACT_MAX_LIVE_CONNECTIONS, self.lease, member])
        except redis.RedisError:
            logger.warning("live connections are counted per process while Redis is away", exc_info=True)
            return ("here", who) if self.here.claim_here(who) else None
        if not taken:
            return None
        with self._lock:
            self._held[member] = key
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew_forever, name="live-leases", daemon=True)
                self._renewer.start()
        return ("shared", member)

    def release_now(self, token: Any) -> None:
        kind, value = token
        if kind == "here":
            self.here.release_here(value)
            return
        with self._lock:
            key = self._held.pop(value, None)
        if key is not None:
            try:
                self.client.zrem(key, value)
            except redis.RedisError:
                logger.warning("a live connection's claim was not given back; it lapses", exc_info=True)

    def renew(self) -> None:
        with self._lock:
            held = list(self._held.items())
        if held:
            self._renew(keys=[key for _, key in held], args=[self.lease, *(member for member, _ in held)])

    def _renew_forever(self) -> None:
        while True:
            time.sleep(self.lease / 3)
            try:
                self.renew()
            except redis.RedisError:
                logger.warning("live connection leases were not renewed", exc_info=True)


_live: LiveConnections | SharedLiveConnections | None = None


def live_connections() -> LiveConnections | SharedLiveConnections:
    """This process's count: in Redis when the deployment has it, else here."""
    global _live
    url = settings.REDIS_URL or None
    if _live is None or getattr(_live, "url", None) != url:
        _live = SharedLiveConnections(url) if url else LiveConnections()
    return _live


def live_holder(caller: Caller, user: Any) -> str:
    """Whom a live connection counts against: its API key, else the session's user."""
    if caller.key is not None:
        return f"key:{caller.key.pk}"
    return f"user:{getattr(user, 'pk', None)}"


def too_many_live() -> RateLimited:
    limit = settings.ENACT_MAX_LIVE_CONNECTIONS
    return RateLimited(
        f"at most {limit} sockets and event streams may be open at once for one API key or user; close one",
        details={"maximum": limit, "retry_after": LIVE_RETRY_SECONDS},
    )


def sse_frame(wire: dict[str, Any]) -> bytes:
    return sse_text(wire["seq"], wire["type"], json.dumps(wire, separators=(",", ":")))


def sse_text(seq: int, event_type: str, data: str) -> bytes:
    return f"id: {seq}\nevent: {event_type}\ndata: {data}\n\n".encode()


def stored_frames(execution_id: str, after: int) -> tuple[list[dict[str, Any]], bool]:
    """Stored events after ``after`` (one batch) as wire dicts, and whether there may be more."""
    events = selectors.events_after(execution_id=execution_id, after=after, limit=READ_BATCH)
    return EventSerializer(events, many=True).data, len(events) == READ_BATCH


class ExecutionStream:
    """The SSE endpoint, as a plain ASGI application (routed before Django in ``asgi.py``).

    It subscribes to the execution's group before reading the log, so nothing committed in
    between is missed; live events are then sent in seq order, and a gap (an event that
    arrived out of order, or one a publisher dropped) is filled from the log.
    """

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.last_seq = 0
        self.finished = False
        self._receiving: asyncio.Future[dict[str, Any]] | None = None

    @classmethod
    async def app(cls, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await cls(scope, receive, send).run()

    async def run(self) -> None:
        try:
            self.execution_id, self.last_seq, over, holder = await self._authorize()
        except PlatformError as exc:
            await self._refuse(exc)
            return
        if over:
            # The client has everything, the terminal event included: 204 tells an EventSource
            # to stop reconnecting.
            await self.send({"type": "http.response.start", "status": 204, "headers": []})
            await self.send({"type": "http.response.body", "body": b""})
            return
        live = live_connections()
        claim = await live.claim(holder)
        if claim is None:
            await self._refuse(too_many_live())
            return
        try:
            layer = get_channel_layer()
            channel = await layer.new_channel()
            try:
                await self._stream(layer, channel)
            finally:
                # One receive on the channel is pending all along: cancelling it lets go of the
                # channel (with Redis, of its subscription).
                await channel_release(layer, channel, self._receiving)
        finally:
            await live.release(claim)

    async def _stream(self, layer: Any, channel: str) -> None:
        group = execution_group(self.execution_id)
        await layer.group_add(group, channel)
        disconnected = asyncio.ensure_future(self._wait_disconnect())
        try:
            relay.ensure_relay()
            self._receiving = asyncio.ensure_future(layer.receive(channel))
            await self.send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )
            await self._body(b"retry: 1000\n\n")
            await self._catch_up()
            while not self.finished and not disconnected.done():
                await self._next_live(layer, channel, disconnected)
            if not disconnected.done():
                await self.send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            disconnected.cancel()
            await layer.group_discard(group, channel)

    async def _next_live(self, layer: Any, channel: str, disconnected: asyncio.Future[None]) -> None:
        # The receive stays pending across keep-alives: cancelling it would let go of the
        # channel (the pub/sub layer unsubscribes), and a message could slip by meanwhile.
        assert self._receiving is not None
        done, _ = await asyncio.wait(
            {self._receiving, disconnected},
            timeout=settings.ENACT_SSE_KEEPALIVE_SECONDS,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if self._receiving not in done:
            if not disconnected.done():
                # Quiet for a while: a comment keeps proxies from closing the stream, and a look
                # at the log covers an event a publisher failed to deliver.
                await self._body(b": keep-alive\n\n")
                await self._catch_up()
            return
        message = self._receiving.result()
        self._receiving = asyncio.ensure_future(layer.receive(channel))
        seq = message.get("seq")
        if not isinstance(seq, int) or seq <= self.last_seq:
            return  # seen already (the relay may repeat itself)
        if seq == self.last_seq + 1:
            await self._body(sse_text(seq, message["event_type"], message["json"]))
            self.last_seq = seq
            self.finished = message["event_type"] in TERMINAL_TYPES
        else:
            await self._catch_up()

    async def _catch_up(self) -> None:
        more = True
        while more and not self.finished:
            wires, more = await database_sync_to_async(stored_frames)(self.execution_id, self.last_seq)
            await self._emit(wires)

    async def _emit(self, wires: list[dict[str, Any]]) -> None:
        for wire in wires:
            if self.finished:
                return
            await self._body(sse_frame(wire))
            self.last_seq = wire["seq"]
            self.finished = wire["type"] in TERMINAL_TYPES

    async def _body(self, chunk: bytes) -> None:
        await self.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _wait_disconnect(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return

    async def _refuse(self, exc: PlatformError) -> None:
        headers = [(b"content-type", b"application/json")]
        if isinstance(exc, RateLimited):
            headers.append((b"retry-after", str(exc.details["retry_after"]).encode()))
        if exc.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        if exc.status == 405:
            headers.append((b"allow", b"GET"))
        await self.send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": json.dumps(exc.to_body()).encode()})

    async def _authorize(self) -> tuple[str, int, bool, str]:
        if self.scope.get("method") != "GET":
            raise MethodNotAllowed("the stream is read with GET")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.scope.get("headers", [])}
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        after = parse_last_event_id(headers.get("last-event-id") or (query.get("after") or ["0"])[0])
        execution_id = self.scope["url_route"]["kwargs"]["execution_id"]
        execution_id, over, holder = await database_sync_to_async(_authorize_sync)(
            headers.get("authorization", ""),
            self.scope.get("user"),  # set by channels' auth middleware from the session
            headers.get("x-tenant") or (query.get("tenant") or [""])[0],
            execution_id,
            after,
        )
        return execution_id, after, over, holder


def _authorize_sync(
    authorization: str, user: Any, tenant_slug: str, execution_id: str, after: int
) -> tuple[str, bool, str]:
    """The execution's id, whether a client that has seen ``after`` has seen its end, and whom
    the stream counts against."""
    key = key_from_header(authorization)
    caller: Caller = resolve_caller(key=key, user=user, tenant_slug=tenant_slug)
    if key is not None:
        wait = key_rate_wait(key)
        if wait is not None:
            raise RateLimited.after(wait)
    execution = selectors.execution_get(tenant=caller.tenant, execution_id=execution_id)
    return execution.pk, stream_is_over(execution.pk, execution.is_terminal, after), live_holder(caller, user)


def stream_is_over(execution_id: str, is_terminal: bool, after: int) -> bool:
    """Whether a client that has seen ``after`` has seen everything there will be; refuses a
    seq the log does not have yet (a client resuming from the future would wait forever)."""
    last = selectors.last_event_seq(execution_id=execution_id)
    if after > last:
        raise InvalidInput(f"Last-Event-ID {after} is beyond the last event, {last}", details={"last_seq": last})
    return is_terminal and after >= last


def parse_last_event_id(raw: str) -> int:
    """The seq a client last received (``Last-Event-ID`` or ``?after=``): a whole number."""
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise InvalidInput("Last-Event-ID (or after) must be a whole number, the seq of the last event received")
    return int(raw)
