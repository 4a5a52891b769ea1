"""Websockets: what every socket shares (authentication at the handshake, same-origin sessions,
ping, malformed frames, giving back what it holds), and the socket of one execution: its events
live, and controls (cancel, pause, resume)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.http.request import validate_host

from enact_platform.api.auth import Caller, key_from_header, resolve_caller
from enact_platform.api.parsers import refuse_unstorable_text
from enact_platform.errors import Forbidden, InvalidInput, PlatformError, Unauthenticated
from executions import selectors
from executions.live import relay
from executions.live.groups import channel_release, execution_group
from executions.live.sse import (
    TERMINAL_TYPES,
    live_connections,
    live_holder,
    parse_last_event_id,
    stored_frames,
    stream_is_over,
    too_many_live,
)
from executions.ops.metrics import gauges
from executions.serializers import ExecutionSummarySerializer
from executions.services import controls

logger = logging.getLogger(__name__)


class StoredHeads:
    """The last stored seq of each execution, read at most once a period per event loop however
    many sockets follow it: five hundred quiet sockets on one execution cost one query, not
    five hundred queued on the sync thread."""

    KEEP = 10_000  # executions remembered at most

    def __init__(self) -> None:
        self._known: dict[str, tuple[float, int]] = {}
        self._reading: dict[str, asyncio.Future[int]] = {}

    async def last_seq(self, execution_id: str, max_age: float) -> int:
        known = self._known.get(execution_id)
        if known is not None and time.monotonic() - known[0] < max_age:
            return known[1]
        reading = self._reading.get(execution_id)
        if reading is None:
            reading = asyncio.ensure_future(database_sync_to_async(selectors.last_event_seq)(execution_id=execution_id))
            self._reading[execution_id] = reading
            reading.add_done_callback(lambda _: self._reading.pop(execution_id, None))
        seq = await asyncio.shield(reading)  # one socket giving up does not stop the others' read
        self._known[execution_id] = (time.monotonic(), seq)
        while len(self._known) > self.KEEP:
            self._known.pop(next(iter(self._known)))
        return seq

    _per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StoredHeads] = weakref.WeakKeyDictionary()

    @classmethod
    def here(cls) -> StoredHeads:
        """This event loop's (futures belong to one loop; a server has one, tests many)."""
        loop = asyncio.get_running_loop()
        heads = cls._per_loop.get(loop)
        if heads is None:
            heads = cls._per_loop[loop] = cls()
        return heads


# --- websockets ----------------------------------------------------------------------------------

CONTROLS = ("cancel", "pause", "resume")


def _socket_caller(scope: dict[str, Any]) -> Caller:
    """Who opened the socket: an API key (``?token=`` or ``Authorization``), else the session."""
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    token = (query.get("token") or [""])[0]
    key = key_from_header(f"Bearer {token}" if token else headers.get("authorization", ""))
    if key is None and not _same_origin(scope, headers):
        # A session cookie rides along with any page's websocket; only our own pages may use it.
        raise Unauthenticated("this origin may not use the session")
    tenant_slug = headers.get("x-tenant") or (query.get("tenant") or [""])[0]
    return resolve_caller(key=key, user=scope.get("user"), tenant_slug=tenant_slug)


def _same_origin(scope: dict[str, Any], headers: dict[str, str]) -> bool:
    """Whether the page that opened the socket is of this server's origin: the same scheme, host
    and port as the ``Host`` the browser connected to (a page on another port of the same machine
    is another site), with a host this server answers for. The check Django's CSRF protection
    makes of a form's ``Origin``, by hand: Django's works on a request object, not a scope."""
    origin = headers.get("origin")
    if origin is None:
        return True  # not a browser: nothing cross-site to fear
    host = headers.get("host", "")
    theirs = _origin_parts(origin)
    if theirs is None or not host:
        return False
    ours = _origin_parts(f"{_scheme(scope, headers)}://{host}")
    if ours is None or not validate_host(ours[1], settings.ALLOWED_HOSTS):
        return False
    return theirs == ours or origin in getattr(settings, "CSRF_TRUSTED_ORIGINS", [])


def _scheme(scope: dict[str, Any], headers: dict[str, str]) -> str:
    """The page's scheme for this socket: ``wss`` is ``https``; behind a TLS proxy, what the
    proxy says in ``SECURE_PROXY_SSL_HEADER`` (as Django reads it for requests)."""
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        header, value = proxy
        said = headers.get(header.removeprefix("HTTP_").replace("_", "-").lower())
        if said is not None:
            return "https" if said.split(",")[0].strip() == value else "http"
    return "https" if scope.get("scheme") in ("wss", "https") else "http"


def _origin_parts(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin, the port filled in from the scheme."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def _refusal_code(exc: PlatformError) -> int:
    return {401: 4401, 403: 4403, 404: 4404, 429: 4429}.get(exc.status, 4400)


class Socket(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """What both sockets share: authentication at the handshake, ping, malformed frames."""

    caller: Caller

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' own dispatch hops to the sync thread before every message, to close stale
        database connections. Every socket of the process shares that one thread (a request
        gets a thread of its own), so with a hundred sockets that is thousands of hops a second
        queued behind each other. These sockets touch the database only through
        ``database_sync_to_async``, which closes stale connections around each call itself, so
        a message goes straight to its handler."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']!r}")
        await handler(message)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """However the socket ends (the client goes, a handler fails, the server cancels it),
        what it holds is given back once: its resync task, its count, its group and its channel."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.let_go()

    async def let_go(self) -> None:
        if getattr(self, "let_go_of", False):
            return
        self.let_go_of = True
        self._uncount()
        claim, self.live_claim = getattr(self, "live_claim", None), None
        if claim is not None:
            await self.live.release(claim)
        layer = getattr(self, "channel_layer", None)
        if layer is None or not hasattr(self, "channel_name"):
            return
        try:
            if hasattr(self, "group"):
                await layer.group_discard(self.group, self.channel_name)
            # A message that arrived with the disconnect leaves the channel held; let go of it.
            await channel_release(layer, self.channel_name)
        except Exception:
            logger.warning("a socket's channel was not let go of", exc_info=True)

    async def disconnect(self, code: int) -> None:
        await self.let_go()

    async def connect(self) -> None:
        try:
            await self.authorize()
            self.live = live_connections()
            self.live_claim = await self.live.claim(live_holder(self.caller, self.scope.get("user")))
            if self.live_claim is None:
                raise too_many_live()
        except PlatformError as exc:
            # Accept, then close with a code: a refused handshake cannot carry one.
            await self.accept()
            await self.close(code=_refusal_code(exc))
            return
        await self.accept()
        gauges.socket_opened()
        self.counted = True
        relay.ensure_relay()
        # Live messages and the periodic looks at the database take turns, so frames keep order.
        self.in_order = asyncio.Lock()
        await self.opened()

    def _uncount(self) -> None:
        if getattr(self, "counted", False):
            self.counted = False
            gauges.socket_closed()
        resync = getattr(self, "_resync_task", None)
        if resync is not None:
            resync.cancel()

    def start_resync(self) -> None:
        """Call ``resync`` every ``ENACT_SOCKET_RESYNC_SECONDS`` until the socket closes. Live
        messages can be lost (a web process away from Redis for a moment hears nothing of what
        was published meanwhile); the log and the rows have everything."""
        self._resync_task = asyncio.ensure_future(self._resync_forever())

    async def _resync_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.ENACT_SOCKET_RESYNC_SECONDS)
            try:
                if not await self.resync():
                    return
            except Exception:
                logger.warning("a socket's look at the log failed", exc_info=True)

    async def resync(self) -> bool:
        """Look again at what may have been missed; False once there is nothing more to miss."""
        return False

    async def authorize(self) -> None:
        self.caller = await database_sync_to_async(_socket_caller)(self.scope)

    async def opened(self) -> None:
        pass

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            frame = json.loads(text_data) if text_data is not None else None
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            frame = None
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            await self.send_error(InvalidInput('a frame is a JSON object with a "type"'))
            return
        try:
            refuse_unstorable_text(frame)
        except InvalidInput as exc:
            await self.send_error(exc)
            return
        if frame["type"] == "ping":
            await self.send_json({"type": "pong"})
            return
        await self.on_frame(frame)

    async def on_frame(self, frame: dict[str, Any]) -> None:
        await self.send_error(InvalidInput(f"unknown frame type {frame['type']!r}", details={"type": frame["type"]}))

    async def send_error(self, exc: PlatformError) -> None:
        await self.send_json({"type": "error", **exc.to_body()})


class ExecutionSocket(Socket):
    """``/ws/executions/{id}/?after=N``: the stored events after N, then the live ones, then
    ``{"type": "end"}``; the socket stays open for controls until the client closes it."""

    async def authorize(self) -> None:
        await super().authorize()
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.last_seq = parse_last_event_id((query.get("after") or ["0"])[0])
        raw_id = self.scope["url_route"]["kwargs"]["execution_id"]
        self.execution_id, self.over = await database_sync_to_async(_execution_and_over)(
            self.caller, raw_id, self.last_seq
        )
        self.ended = False

    async def opened(self) -> None:
        self.group = execution_group(self.execution_id)
        self.last_heard = time.monotonic()
        if self.over:  # the client has every event, the terminal one included
            self.ended = True
            await self.send_json({"type": "end"})
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        async with self.in_order:
            await self._catch_up()
        if not self.ended:
            self.start_resync()

    async def execution_event(self, message: dict[str, Any]) -> None:
        self.last_heard = time.monotonic()
        async with self.in_order:
            await self._deliver(message)

    async def _deliver(self, message: dict[str, Any]) -> None:
        seq = message.get("seq")
        if self.ended or not isinstance(seq, int) or seq <= self.last_seq:
            return
        if seq != self.last_seq + 1:
            await self._catch_up()
            return
        # The event comes encoded once for every listener; the frame is put together around it.
        await self.send(text_data='{"type":"event","event":' + message["json"] + "}")
        self.last_seq = seq
        if message["event_type"] in TERMINAL_TYPES:
            self.ended = True
            await self.send_json({"type": "end"})

    async def resync(self) -> bool:
        """Quiet for a while and not at the end yet: what the log has that never came live."""
        period = settings.ENACT_SOCKET_RESYNC_SECONDS
        if self.ended:
            return False
        if time.monotonic() - self.last_heard < period:
            return True
        if await StoredHeads.here().last_seq(self.execution_id, max_age=period / 2) > self.last_seq:
            async with self.in_order:
                await self._catch_up()
        return not self.ended

    async def _catch_up(self) -> None:
        more = True
        while more and not self.ended:
            wires, more = await database_sync_to_async(stored_frames)(self.execution_id, self.last_seq)
            await self._emit(wires)

    async def _emit(self, wires: list[dict[str, Any]]) -> None:
        for wire in wires:
            if self.ended:
                return
            await self.send_json({"type": "event", "event": wire})
            self.last_seq = wire["seq"]
            if wire["type"] in TERMINAL_TYPES:
                self.ended = True
                await self.send_json({"type": "end"})

    async def on_frame(self, frame: dict[str, Any]) -> None:
        action = frame["type"]
        if action not in CONTROLS:
            await super().on_frame(frame)
            return
        reason = frame.get("reason", "")
        try:
            if not self.caller.can_write:
                raise Forbidden("your role in this tenant cannot change executions")
            summary = await database_sync_to_async(_control)(self.caller, self.execution_id, action, reason)
        except PlatformError as exc:
            await self.send_error(exc)
            return
        await self.send_json({"type": "control", "action": action, "execution": summary})


def _execution_and_over(caller: Caller, execution_id: str, after: int) -> tuple[str, bool]:
    """The execution's id, and whether a client that has seen ``after`` has seen its end (an
    ``after`` beyond the log is refused, as the stream refuses it)."""
    execution = selectors.execution_get(tenant=caller.tenant, execution_id=execution_id)
    return execution.pk, stream_is_over(execution.pk, execution.is_terminal, after)


def _summary(tenant: Any, execution_id: str) -> dict[str, Any] | None:
    execution = selectors.execution_list(tenant=tenant).filter(pk=execution_id).first()
    return dict(ExecutionSummarySerializer(execution).data) if execution is not None else None


def _control(caller: Caller, execution_id: str, action: str, reason: Any) -> dict[str, Any]:
    if not isinstance(reason, str):
        raise InvalidInput("reason must be a string")
    if action == "cancel":
        controls.execution_cancel(tenant=caller.tenant, execution_id=execution_id, reason=reason, actor=caller.actor)
    elif action == "pause":
        controls.execution_pause(tenant=caller.tenant, execution_id=execution_id, reason=reason, actor=caller.actor)
    else:
        controls.execution_resume(tenant=caller.tenant, execution_id=execution_id, actor=caller.actor)
    summary = _summary(caller.tenant, execution_id)
    assert summary is not None
    return summary
