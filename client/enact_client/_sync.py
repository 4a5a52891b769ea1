"""The blocking client."""

from __future__ import annotations

import builtins
import time
from collections.abc import Generator, Iterator
from datetime import datetime
from types import TracebackType
from typing import Any, cast

import httpx

from enact_client import _core
from enact_client._core import Call, SSEDecoder, StreamState
from enact_client.errors import EnactError, error_from_response
from enact_client.types import Artifact, Blueprint, BulkCancelResult, Event, Execution, Page, Step


class Client:
    """The Enact API for programs: ``Client("http://127.0.0.1:8000", key)``.

    Every method raises an ``EnactError`` subclass for an error answer (``NotFound``,
    ``InvalidInput``, ``Conflict``, ``RateLimited``, …) and ``ConnectionFailed`` when no answer
    came. Use it as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        stream_read_timeout: float = 60.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self._stream_timeout = httpx.Timeout(timeout, read=stream_read_timeout)
        self._http = httpx.Client(
            base_url=_core.api_base(url), headers=_core.headers_for(key), timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _send(self, call: Call) -> Any:
        try:
            response = self._http.request(call.method, call.path, **call.request_kwargs())
        except httpx.TransportError as exc:
            raise _core.connection_failed(exc) from exc
        return _core.result(response)

    def _pages(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        query: dict[str, str] | None = params
        while query is not None:
            page = self._send(Call("GET", path, params=query))
            yield page
            query = _core.next_params(page)

    # --- executions ----------------------------------------------------------------------------

    def submit(
        self,
        blueprint: str,
        input: Any = None,
        *,
        version: int | None = None,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        webhook: str | None = None,
        traceparent: str | None = None,
    ) -> Execution:
        """Submit an execution of ``blueprint`` (the latest version, or ``version``). A repeated
        ``idempotency_key`` returns the execution it first made; ``webhook`` is a URL called
        (signed) when it ends; ``traceparent`` (W3C) makes its trace a child of the caller's."""
        call = _core.submit_call(
            blueprint,
            input,
            version=version,
            idempotency_key=idempotency_key,
            metadata=metadata,
            webhook=webhook,
            traceparent=traceparent,
        )
        return cast(Execution, self._send(call))

    def get(self, execution_id: str) -> Execution:
        return cast(Execution, self._send(Call("GET", _core.execution_path(execution_id))))

    def list(
        self,
        *,
        state: str | None = None,
        blueprint: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        q: str | None = None,
        origin: str | None = None,
        source: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[Execution]:
        """Every execution that matches, newest first, following the cursor page by page (a
        page is fetched as the iteration reaches it)."""
        params = _core.list_params(
            state=state,
            blueprint=blueprint,
            created_after=created_after,
            created_before=created_before,
            q=q,
            origin=origin,
            source=source,
            page_size=page_size,
        )
        for page in self._pages("executions", params):
            yield from page["results"]

    def page(self, *, cursor: str | None = None, **filters: Any) -> Page[Execution]:
        """One page of executions (``list`` follows them all); ``filters`` as ``list`` takes."""
        params = _core.list_params(
            state=filters.get("state"),
            blueprint=filters.get("blueprint"),
            created_after=filters.get("created_after"),
            created_before=filters.get("created_before"),
            q=filters.get("q"),
            origin=filters.get("origin"),
            source=filters.get("source"),
            page_size=filters.get("page_size"),
        )
        if cursor is not None:
            params["cursor"] = cursor
        return cast(Page[Execution], self._send(Call("GET", "executions", params=params)))

    def events(self, execution_id: str, *, after: int = 0, page_size: int | None = None) -> Iterator[Event]:
        """The stored events with seq > ``after``, in order, every page (no waiting for more)."""
        path = _core.execution_path(execution_id, "/events")
        for page in self._pages(path, _core.page_params({"after": str(after)}, page_size)):
            yield from page["results"]

    def steps(self, execution_id: str, *, page_size: int | None = None) -> Iterator[Step]:
        for page in self._pages(_core.execution_path(execution_id, "/steps"), _core.page_params({}, page_size)):
            yield from page["results"]

    def artifacts(self, execution_id: str) -> builtins.list[Artifact]:
        return cast(builtins.list[Artifact], self._send(Call("GET", _core.execution_path(execution_id, "/artifacts"))))

    def cancel(self, execution_id: str, reason: str = "") -> Execution:
        """Cancel; idempotent (an execution that has ended is returned as it is)."""
        call = Call("POST", _core.execution_path(execution_id, "/cancel"), body={"reason": reason})
        return cast(Execution, self._send(call))

    def cancel_many(
        self,
        ids: builtins.list[str] | None = None,
        *,
        state: str | None = None,
        blueprint: str | None = None,
        reason: str = "",
    ) -> BulkCancelResult:
        """Cancel the executions named by ``ids``, or those in ``state`` and/or of ``blueprint``."""
        body: dict[str, Any] = {"reason": reason}
        if ids is not None:
            body["ids"] = ids
        else:
            body["filter"] = {k: v for k, v in (("state", state), ("blueprint", blueprint)) if v is not None}
        return cast(BulkCancelResult, self._send(Call("POST", "executions/cancel", body=body)))

    def pause(self, execution_id: str, reason: str = "") -> Execution:
        call = Call("POST", _core.execution_path(execution_id, "/pause"), body={"reason": reason})
        return cast(Execution, self._send(call))

    def resume(self, execution_id: str) -> Execution:
        return cast(Execution, self._send(Call("POST", _core.execution_path(execution_id, "/resume"), body={})))

    def answer(self, execution_id: str, input: Any = None, *, approve: bool | None = None) -> Execution:
        """Answer an execution waiting for input (``input``) or an approval (``approve``)."""
        call = Call("POST", _core.execution_path(execution_id, "/input"), body=_core.answer_body(input, approve))
        return cast(Execution, self._send(call))

    input = answer

    def inbox(self, execution_id: str, kind: str, **fields: Any) -> str:
        """Post a message (``guidance``: ``content=``; ``evidence``: ``source=``, ``title=``, …;
        ``a2a``: ``from_agent=``, ``message_type=``, ``payload=``) for the next step boundary;
        returns the message's id."""
        call = Call("POST", _core.execution_path(execution_id, "/inbox"), body=_core.inbox_body(kind, fields))
        return str(self._send(call)["id"])

    def rerun(
        self, execution_id: str, *, idempotency_key: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Execution:
        """A new execution of the same blueprint version and input, linked to its source."""
        body = _core.derived_body(idempotency_key, metadata)
        return cast(Execution, self._send(Call("POST", _core.execution_path(execution_id, "/rerun"), body=body)))

    def fork(
        self,
        execution_id: str,
        from_step: str,
        *,
        state: Any = _core.NO_BODY,
        idempotency_key: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Execution:
        """A new execution that starts from the checkpoint before step ``from_step`` (an id of the
        source's steps), given ``state`` instead when it is passed (None included), linked to its
        source."""
        call = _core.fork_call(execution_id, from_step, state, idempotency_key, metadata)
        return cast(Execution, self._send(call))

    def stream(self, execution_id: str, after: int = 0) -> Iterator[Event]:
        """The execution's events with seq > ``after``, stored then live, until the terminal
        event. A dropped connection is reconnected with ``Last-Event-ID`` (the last seq given
        out), so no event is missed or repeated; an event whose frame was cut off is given out
        whole from the next connection."""
        state = StreamState(after)
        path = _core.execution_path(execution_id, "/stream")
        while not state.finished:
            try:
                ended = yield from self._stream_once(path, execution_id, state)
            except httpx.TransportError as exc:
                delay = state.failed(_core.connection_failed(exc))
            except EnactError as exc:
                delay = state.failed(exc)
            else:
                if ended or state.finished:
                    return
                delay = state.ended_early()
            if delay:
                time.sleep(delay)

    def _stream_once(self, path: str, execution_id: str, state: StreamState) -> Generator[Event, None, bool]:
        """One connection's events; returns True when the server says there is nothing more."""
        with self._http.stream("GET", path, headers=state.headers(), timeout=self._stream_timeout) as response:
            state.answered = True
            if response.status_code == 204:
                return True
            if response.status_code >= 400:
                response.read()
                raise error_from_response(response)
            decoder = SSEDecoder()
            for line in response.iter_lines():
                message = decoder.feed(line)
                if decoder.retry_ms is not None:
                    state.retry_seconds = decoder.retry_ms / 1000
                if message is None:
                    continue
                event = state.decode(message)
                if event is None:
                    continue
                if state.is_gap(event):
                    for missing in self.events(execution_id, after=state.last_seq):
                        if missing["seq"] >= event["seq"]:
                            break
                        state.given(missing)
                        yield missing
                state.given(event)
                yield event
                if state.finished:
                    return True
        return False

    # --- the tenant ----------------------------------------------------------------------------

    def tenant(self) -> dict[str, Any]:
        """The caller's tenant: slug, name, limits and current usage."""
        return cast(dict[str, Any], self._send(Call("GET", "tenant")))

    def blueprints(self) -> builtins.list[Blueprint]:
        return cast(builtins.list[Blueprint], self._send(Call("GET", "blueprints")))
