"""Name lookups and connections under a test's control, for the checks on where outbound calls
(tools, model servers, webhooks) connect: a name answers what the test says, and a connection
is recorded, then made to the local server whatever address it was aimed at."""

from __future__ import annotations

import socket
from typing import Any

import httpcore
import pytest


def resolving(monkeypatch: pytest.MonkeyPatch, name: str, answers: list[str]) -> list[str]:
    """``name`` resolves to each of ``answers`` in turn (the last one from then on); other names
    as usual. Returns the list of lookups made of ``name``, which grows as they are made."""
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real(host, port, *args, **kwargs)
        address = answers[min(len(looked_up), len(answers) - 1)]
        looked_up.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return looked_up


def connections_to_local(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the host each HTTP connection is aimed at, then connect it to 127.0.0.1 on the same
    port (where the test's server listens). Returns the list of hosts, which grows as they connect."""
    real = httpcore._backends.sync.SyncBackend.connect_tcp
    connected: list[str] = []

    def connect(backend: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        connected.append(host)
        return real(backend, "127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(httpcore._backends.sync.SyncBackend, "connect_tcp", connect)
    return connected
