"""The asyncio client: ``AsyncClient`` has the methods of ``Client``, awaited; ``list``,
``events``, ``steps`` and ``stream`` are async iterators."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator
from datetime import datetime
from types import TracebackType
from typing import Any, cast

import httpx

from enact_client import _core
from enact_client._core import Call, SSEDecoder, StreamState
from enact_client.errors import EnactError, error_from_response
from enact_client.types import Artifact, Blueprint, BulkCancelResult, Event, Execution, Page, Step


class AsyncClient:
    """The Enact API for asyncio programs: ``AsyncClient("http://127.0.0.1:8000", key)``.

    Every method raises an ``EnactError`` subclass for an error answer (``NotFound``,
    ``InvalidInput``, ``Conflict``, ``RateLimited``, …) and ``ConnectionFailed`` when no answer
    came. Use it as an async context manager, or await ``aclose()``.
    """

    def __init__(
        self,
        url: str,
        key: str | None = None,
        *,
        timeout: float = 30.0,
        stream_read_timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self._stream_timeout = httpx.Timeout(timeout, read=stream_read_timeout)
        self._http = httpx.AsyncClient(
            base_url=_core.api_base(url), headers=_core.headers_for(key), timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> Any:
        try:
            response = await self._http.request(call.method, call.path, **call.request_kwargs())
        except httpx.TransportError as exc:
            raise _core.connection_failed(exc) from exc
        return _core.result(response)

    async def _pages(self, path: str, params: dict[str, str]) -> AsyncIterator[dict[str, Any]]:
        query: dict[str, str] | None = params
        while query is not None:
            page = await self._send(Call("GET", path, params=query))
            yield page
            query = _core.next_params(page)

    # --- executions ----------------------------------------------------------------------------

    async def submit(
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
        return cast(Execution, await self._send(call))

    async def get(self, execution_id: str) -> Execution:
        return cast(Execution, await self._send(Call("GET", _core.execution_path(execution_id))))

    async def list(
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
    ) -> AsyncIterator[Execution]:
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
        async for page in self._pages("executions", params):
            for execution in page["results"]:
                yield execution

    async def page(self, *, cursor: str | None = None, **filters: Any) -> Page[Execution]:
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
        return cast(Page[Execution], await self._send(Call("GET", "executions", params=params)))

    async def events(self, execution_id: str, *, after: int = 0, page_size: int | None = None) -> AsyncIterator[Event]:
        """The stored events with seq > ``after``, in order, every page (no waiting for more)."""
        path = _core.execution_path(execution_id, "/events")
        async for page in self._pages(path, _core.page_params({"after": str(after)}, page_size)):
            for event in page["results"]:
                yield event

    async def steps(self, execution_id: str, *, page_size: int | None = None) -> AsyncIterator[Step]:
        async for page in self._pages(_core.execution_path(execution_id, "/steps"), _core.page_params({}, page_size)):
            for step in page["results"]:
                yield step

    async def artifacts(self, execution_id: str) -> builtins.list[Artifact]:
        return cast(
            builtins.list[Artifact], await self._send(Call("GET", _core.execution_path(execution_id, "/artifacts")))
        )

    async def cancel(self, execution_id: str, reason: str = "") -> Execution:
        """Cancel; idempotent (an execution that has ended is returned as it is)."""
        call = Call("POST", _core.execution_path(execution_id, "/cancel"), body={"reason": reason})
        return cast(Execution, await self._send(call))

    async def cancel_many(
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
        return cast(BulkCancelResult, await self._send(Call("POST", "executions/cancel", body=body)))

    async def pause(self, execution_id: str, reason: str = "") -> Execution:
        call = Call("POST", _core.execution_path(execution_id, "/pause"), body={"reason": reason})
        return cast(Execution, await self._send(call))

    async def resume(self, execution_id: str) -> Execution:
        return cast(Execution, await self._send(Call("POST", _core.execution_path(execution_id, "/resume"), body={})))

    async def answer(self, execution_id: str, input: Any = None, *, approve: bool | None = None) -> Execution:
        """Answer an execution waiting for input (``input``) or an approval (``approve``)."""
        call = Call("POST", _core.execution_path(execution_id, "/input"), body=_core.answer_body(input, approve))
        return cast(Execution, await self._send(call))

    input = answer

    async def inbox(self, execution_id: str, kind: str, **fields: Any) -> str:
        """Post a message (``guidance``: ``content=``; ``evidence``: ``source=``, ``title=``, …;
        ``a2a``: ``from_agent=``, ``message_type=``, ``payload=``) for the next step boundary;
        returns the message's id."""
        call = Call("POST", _core.execution_path(execution_id, "/inbox"), body=_core.inbox_body(kind, fields))
        return str((await self._send(call))["id"])

    async def rerun(
        self, execution_id: str, *, idempotency_key: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Execution:
        """A new execution of the same blueprint version and input, linked to its source."""
        body = _core.derived_body(idempotency_key, metadata)
        return cast(Execution, await self._send(Call("POST", _core.execution_path(execution_id, "/rerun"), body=body)))

    async def fork(
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
        return cast(Execution, await self._send(call))

    async def stream(self, execution_id: str, after: int = 0) -> AsyncIterator[Event]:
        """The execution's events with seq > ``after``, stored then live, until the terminal
        event. A dropped connection is reconnected with ``Last-Event-ID`` (the last seq given
        out), so no event is missed or repeated; an event whose frame was cut off is given out
        whole from the next connection."""
        state = StreamState(after)
        path = _core.execution_path(execution_id, "/stream")
        while not state.finished:
            try:
                async with self._http.stream(
                    "GET", path, headers=state.headers(), timeout=self._stream_timeout
                ) as response:
                    state.answered = True
                    if response.status_code == 204:
                        return
                    if response.status_code >= 400:
                        await response.aread()
                        raise error_from_response(response)
                    decoder = SSEDecoder()
                    async for line in response.aiter_lines():
                        message = decoder.feed(line)
                        if decoder.retry_ms is not None:
                            state.retry_seconds = decoder.retry_ms / 1000
                        event = None if message is None else state.decode(message)
                        if event is None:
                            continue
                        if state.is_gap(event):
                            async for missing in self.events(execution_id, after=state.last_seq):
                                if missing["seq"] >= event["seq"]:
                                    break
                                state.given(missing)
                                yield missing
                        state.given(event)
                        yield event
                        if state.finished:
                            return
            except httpx.TransportError as exc:
                delay = state.failed(_core.connection_failed(exc))
            except EnactError as exc:
                delay = state.failed(exc)
            else:
                delay = state.ended_early()
            if delay:
                await asyncio.sleep(delay)

    # --- the tenant ----------------------------------------------------------------------------

    async def tenant(self) -> dict[str, Any]:
        """The caller's tenant: slug, name, limits and current usage."""
        return cast(dict[str, Any], self._send(Call("GET", "tenant")))

    async def blueprints(self) -> builtins.list[Blueprint]:
        return cast(builtins.list[Blueprint], await self._send(Call("GET", "blueprints")))
