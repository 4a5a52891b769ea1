"""A TCP proxy in front of the server that the tests cut: a connection's answer is passed on up to
a chosen byte, then the connection is reset (RST), closed (FIN), or left silent (a peer that went
away without a word, as behind a NAT that forgot it)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

# For a connection (numbered from 0) and the answer's bytes so far: where to cut it, or None.
CutRule = Callable[[int, bytes], int | None]


@dataclass
class Connection:
    number: int
    request: bytearray = field(default_factory=bytearray)
    response: bytearray = field(default_factory=bytearray)
    cut: bool = False


class CuttingProxy:
    def __init__(self, target_port: int, rule: CutRule, how: str = "rst") -> None:
        assert how in ("rst", "fin", "silent")
        self.target_port, self.rule, self.how = target_port, rule, how
        self.connections: list[Connection] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                connection = Connection(len(self.connections))
                self.connections.append(connection)
                self._open += [client, upstream]
            threading.Thread(target=self._requests, args=(connection, client, upstream), daemon=True).start()
            threading.Thread(target=self._answers, args=(connection, client, upstream), daemon=True).start()

    def _requests(self, connection: Connection, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := client.recv(65536):
                connection.request += chunk
                upstream.sendall(chunk)
            upstream.shutdown(socket.SHUT_WR)

    def _answers(self, connection: Connection, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := upstream.recv(65536):
                before = len(connection.response)
                connection.response += chunk
                at = self.rule(connection.number, bytes(connection.response))
                if at is None:
                    client.sendall(chunk)
                    continue
                client.sendall(bytes(connection.response[before:at]))
                connection.cut = True
                self._cut(client, upstream)
                return
            client.shutdown(socket.SHUT_WR)

    def _cut(self, client: socket.socket, upstream: socket.socket) -> None:
        if self.how == "silent":
            return  # nothing more reaches the client, and nothing tells it so
        if self.how == "rst":
            # Closed with no linger, the socket sends a reset; its reading thread is woken first
            # (SHUT_RD sends nothing), or the close would wait for that thread's recv to return.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.shutdown(socket.SHUT_RD)
        else:
            client.shutdown(socket.SHUT_RDWR)
        client.close()
        upstream.close()


def cut_inside_frame(seq: int, *, connection: int = 0) -> CutRule:
    """Cut connection ``connection`` partway through the frame of event ``seq``: its ``id:`` line
    and ``event:`` name got through, its data did not."""
    marker = f"\nid: {seq}\nevent: ".encode()

    def rule(number: int, answer: bytes) -> int | None:
        if number != connection:
            return None
        at = answer.find(marker)
        return None if at < 0 else at + len(marker)

    return rule
