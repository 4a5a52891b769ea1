"""What daphne does before the application sees a request: request bodies are bounded where the
server reads them, on every path, and a websocket the server fails is closed with a code.

Daphne reads a request's whole body before the application sees the request (Twisted buffers
it, then daphne queues all of it for the application at once), so no check in Django, however
early, keeps a 300 MB body out of the process's memory. The bound has to hold in daphne's own
request, which this module's ``BoundedRequest`` replaces:

- a ``Content-Length`` over ``ENACT_API_MAX_BODY_BYTES`` is answered 413 as soon as the headers
  are in, before a byte of the body is read (and ``Expect: 100-continue`` gets the 413, not 100);
- every body, chunked or not, is counted while it is read, and answered 413 the moment it passes
  the limit; what the client still sends is read and dropped, never kept;
- a chunked body within the limit reaches the application with its length (``Content-Length``
  instead of ``Transfer-Encoding``), since Django and DRF read a body by its length.

The 413 carries the API's error body. It is written by hand on the connection: the request never
reached the application, and Twisted's response machinery wants a request it has fully read. The
client is given ``LINGER_SECONDS`` to stop sending before the connection is dropped: closing a
socket that still has unread data resets it, and the reset can destroy the 413 on its way.

A websocket frame over daphne's size limit (``--websocket-max-message-size``, 1 MiB), or one that
breaks the protocol, fails the connection; autobahn, under daphne, does that by dropping the TCP
connection unless told otherwise, so the client never learns why. ``BoundedRequest`` tells the
server's websocket factory to close with the code instead (1009 for a frame too big) before it
hands a connection over to it.

Daphne offers no way for an application to choose its request class, and the platform's web
processes start in two ways (``manage.py up`` runs daphne's ``runserver``; the scaled deployment
runs ``python -m daphne … enact_platform.asgi:application``). Both import the application before
the server builds its HTTP factory, which looks up daphne's request class by name each time it
builds a connection; so ``install()``, called by ``enact_platform.asgi``, names this class there.
"""

from __future__ import annotations

import json
from typing import Any

from daphne import http_protocol
from django.conf import settings

from enact_platform.errors import PayloadTooLarge

LINGER_SECONDS = 10.0


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body is over {limit} bytes", details={"maximum": limit})


def _response_413(limit: int) -> bytes:
    body = json.dumps(too_large(limit).to_body()).encode()
    head = (
        "HTTP/1.1 413 Payload Too Large\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class BoundedRequest(http_protocol.WebRequest):  # type: ignore[misc]
    """Daphne's request, with its body bounded (see the module's docstring)."""

    content: Any  # Twisted's buffer of the body
    _limit = 0
    _received = 0
    _chunked = False
    _refused = False
    _linger: Any = None

    def process(self) -> Any:
        # Before an upgrade: the websocket factory's options are copied into each connection.
        websockets = getattr(self.server, "ws_factory", None)
        if websockets is not None and websockets.failByDrop:
            websockets.setProtocolOptions(failByDrop=False)
        return super().process()

    def gotLength(self, length: int | None) -> None:
        self._limit = settings.ENACT_API_MAX_BODY_BYTES
        self._received = 0
        self._chunked = length is None  # Twisted says None for a chunked body, 0 for none at all
        if length is not None and length > self._limit:
            super().gotLength(0)  # an empty buffer: nothing of this body is kept
            self._refuse()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._refused:
            return
        self._received += len(data)
        if self._received > self._limit:
            self._refuse()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._refused:
            # The client has sent all it meant to; it has its answer.
            self._cancel_linger()
            if self.channel is not None and self.channel.transport is not None:
                self.channel.transport.loseConnection()
            return
        if self._chunked:
            self.requestHeaders.removeHeader(b"transfer-encoding")
            self.requestHeaders.setRawHeaders(b"content-length", [str(self._received).encode()])
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Any) -> None:
        self._cancel_linger()
        super().connectionLost(reason)

    def _refuse(self) -> None:
        self._refused = True
        if self.content is not None:
            self.content.close()
            self.content = None
        # Twisted answers "Expect: 100-continue" after this; the client gets the 413 instead.
        self.requestHeaders.removeHeader(b"expect")
        channel = self.channel
        if channel is None or channel.transport is None:
            return
        channel.transport.write(_response_413(self._limit))
        self._linger = channel.callLater(LINGER_SECONDS, self._drop)

    def _drop(self) -> None:
        self._linger = None
        if self.channel is not None and self.channel.transport is not None:
            self.channel.transport.abortConnection()

    def _cancel_linger(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None


def install() -> None:
    """Make daphne build ``BoundedRequest`` for every HTTP connection of this process."""
    http_protocol.WebRequest = BoundedRequest
