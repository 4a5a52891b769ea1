"""What the sync and the async client share: the requests each method sends, reading answers,
following a list's cursor, and the Server-Sent Events decoder with the stream's bookkeeping.

The SSE decoder is written here rather than taken from a library (httpx-sse): the package
depends on httpx alone, the format is a few lines of the HTML standard, and the part a library
would not give, resuming by seq across dropped connections, is this module's own anyway.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlsplit

import httpx

from enact_client.errors import ConnectionFailed, EnactError, RateLimited, ServerBusy, ServerError, error_from_response
from enact_client.types import TERMINAL_EVENT_TYPES, Event

API_PREFIX = "/api/v1/"
USER_AGENT = "enact-client/0.1.0"
NO_BODY: Any = object()

# Reconnecting a stream: the first try at once, then the server's ``retry:`` (1 s) doubled per
# failure in a row, up to MAX_RECONNECT_DELAY; after MAX_FAILURES failures in a row with no
# event between them the stream gives up with the last error.
MAX_RECONNECT_DELAY = 30.0
MAX_FAILURES = 8


def api_base(url: str) -> str:
    """The API's root for a server's URL (``http://host:8000`` or ``…/api/v1``)."""
    url = url.rstrip("/")
    if url.endswith(API_PREFIX.rstrip("/")):
        url = url[: -len(API_PREFIX.rstrip("/"))]
    return url + API_PREFIX


def headers_for(key: str | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


@dataclass(frozen=True)
class Call:
    """One request: a path under ``/api/v1/``, its query and JSON body."""

    method: str
    path: str
    params: dict[str, str] = field(default_factory=dict)
    body: Any = NO_BODY
    headers: dict[str, str] = field(default_factory=dict)

    def request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"params": self.params}
        if self.headers:
            kwargs["headers"] = self.headers
        if self.body is not NO_BODY:
            kwargs["json"] = self.body
        return kwargs


def execution_path(execution_id: str, tail: str = "") -> str:
    # An id never changes which endpoint is called: quoted whole, dots of "." and ".." too
    # (the server answers 404 for an id it does not know, malformed ones alike).
    quoted = quote(execution_id, safe="")
    if quoted.strip(".") == "":
        quoted = quoted.replace(".", "%2E") or "%20"
    return f"executions/{quoted}{tail}"


def submit_call(
    blueprint: str,
    input: Any,
    *,
    version: int | None,
    idempotency_key: str | None,
    metadata: dict[str, Any] | None,
    webhook: str | None,
    traceparent: str | None,
) -> Call:
    body: dict[str, Any] = {"blueprint": blueprint, "input": {} if input is None else input}
    if version is not None:
        body["version"] = version
    body.update(derived_body(idempotency_key, metadata))
    if webhook is not None:
        body["webhook"] = webhook
    headers = {"traceparent": traceparent} if traceparent else {}
    return Call("POST", "executions", body=body, headers=headers)


def derived_body(idempotency_key: str | None, metadata: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    if metadata is not None:
        body["metadata"] = metadata
    return body


def fork_call(
    execution_id: str, from_step: str, state: Any, idempotency_key: str | None, metadata: dict[str, Any] | None
) -> Call:
    body: dict[str, Any] = {"from_step": from_step, **derived_body(idempotency_key, metadata)}
    if state is not NO_BODY:
        body["state"] = state
    return Call("POST", execution_path(execution_id, "/fork"), body=body)


def _when(value: datetime | str) -> str:
    return value.isoformat() if isinstance(value, datetime) else value


def list_params(
    *,
    state: str | None,
    blueprint: str | None,
    created_after: datetime | str | None,
    created_before: datetime | str | None,
    q: str | None,
    origin: str | None,
    source: str | None,
    page_size: int | None,
) -> dict[str, str]:
    params: dict[str, str] = {}
    for name, value in (("state", state), ("blueprint", blueprint), ("q", q), ("origin", origin), ("source", source)):
        if value is not None:
            params[name] = value
    if created_after is not None:
        params["created_after"] = _when(created_after)
    if created_before is not None:
        params["created_before"] = _when(created_before)
    if page_size is not None:
        params["limit"] = str(page_size)
    return params


def page_params(params: dict[str, str], page_size: int | None) -> dict[str, str]:
    return params if page_size is None else {**params, "limit": str(page_size)}


def inbox_body(kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, **fields}


def answer_body(input: Any, approve: bool | None) -> dict[str, Any]:
    body: dict[str, Any] = {"input": input}
    if approve is not None:
        body["approve"] = approve
    return body


def next_params(page: dict[str, Any]) -> dict[str, str] | None:
    """The query of the next page (its cursor and the filters), or None after the last page.

    Only the query of ``next`` is used, against the client's own base URL: behind a proxy the
    server may name itself by a host the client cannot reach."""
    link = page.get("next")
    if not link:
        return None
    return dict(parse_qsl(urlsplit(str(link)).query, keep_blank_values=True))


def result(response: httpx.Response) -> Any:
    """The JSON of a successful answer, or the typed error of a failed one."""
    if response.status_code >= 400:
        raise error_from_response(response)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def connection_failed(exc: httpx.TransportError) -> ConnectionFailed:
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return ConnectionFailed(message, code="connection_failed")


# --- Server-Sent Events ----------------------------------------------------------------------


@dataclass
class SSEMessage:
    id: str | None
    event: str
    data: str


@dataclass
class SSEDecoder:
    """Lines in, messages out, as the HTML standard's event stream interpretation says. A message
    is only complete at its blank line: one cut off by a dropped connection is never given out."""

    _data: list[str] = field(default_factory=list)
    _event: str = ""
    _id: str | None = None
    retry_ms: int | None = None

    def feed(self, line: str) -> SSEMessage | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            message = SSEMessage(self._id, self._event or "message", "\n".join(self._data))
            self._data, self._event = [], ""
            return message
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None


class StreamState:
    """Where a stream is: the last seq given out, whether the terminal event was, and how long to
    wait before the next connection."""

    def __init__(self, after: int) -> None:
        if isinstance(after, bool) or not isinstance(after, int) or after < 0:
            raise ValueError("after is the seq of the last event seen: a whole number, 0 for all")
        self.last_seq = after
        self.finished = False
        self.failures = 0
        self.retry_seconds = 1.0
        self.last_error: EnactError | None = None
        self.answered = False  # whether any connection got an answer: a wrong address fails at once

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if self.last_seq:
            headers["Last-Event-ID"] = str(self.last_seq)
        return headers

    def decode(self, message: SSEMessage) -> Event | None:
        """The event a message carries, or None for one seen already."""
        event = cast(Event, json.loads(message.data))
        seq = event.get("seq")
        if not isinstance(seq, int) or seq <= self.last_seq:
            return None
        return event

    def is_gap(self, event: Event) -> bool:
        return event["seq"] > self.last_seq + 1

    def given(self, event: Event) -> None:
        self.last_seq = event["seq"]
        self.failures = 0
        self.finished = event["type"] in TERMINAL_EVENT_TYPES

    def failed(self, error: EnactError) -> float:
        """Records a failed or cut connection; the seconds to wait before the next, or raises
        the error when it is not one to retry or too many came in a row."""
        retryable = isinstance(error, ConnectionFailed | ServerBusy | RateLimited | ServerError)
        if isinstance(error, ConnectionFailed) and not self.answered:
            retryable = False  # never reached the server: a wrong address or a server that is down
        self.failures += 1
        self.last_error = error
        if not retryable or self.failures > MAX_FAILURES:
            raise error
        if isinstance(error, ServerBusy | RateLimited):
            return error.retry_after
        if self.failures == 1:
            return 0.0
        return float(min(MAX_RECONNECT_DELAY, self.retry_seconds * 2 ** (self.failures - 2)))

    def ended_early(self) -> float:
        """The response ended before the terminal event (a server that sends what it has and
        closes, as under WSGI): reconnect after the server's retry time."""
        self.failures += 1
        if self.failures > MAX_FAILURES * 4:
            raise self.last_error or ConnectionFailed("the stream kept ending before its terminal event")
        return self.retry_seconds
