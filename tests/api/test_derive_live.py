"""Rerun and fork against the platform as its start command runs it: a real web server and a real
worker process (the embedded default), driven over HTTP."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..live import platform_up

pytestmark = pytest.mark.slow


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Callable[..., tuple[int, Any]]]:
    with platform_up(tmp_path) as up:
        url, key = up.url, up.key()

        def call(method: str, path: str, body: Any = None) -> tuple[int, Any]:
            request = urllib.request.Request(
                f"{url}/api/v1/{path}",
                method=method,
                data=None if body is None else json.dumps(body).encode(),
                headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    return response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                return error.code, json.loads(error.read())

        yield call


def _ended(call: Callable[..., tuple[int, Any]], execution_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        _, body = call("GET", f"executions/{execution_id}")
        if body["state"] in ("completed", "failed", "cancelled"):
            return body  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"{execution_id} did not end: {body}")


def _all(call: Callable[..., tuple[int, Any]], path: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    while path:
        status, page = call("GET", path)
        assert status == 200, page
        rows += page["results"]
        path = page["next"].split("/api/v1/", 1)[1] if page["next"] else ""
    return rows


def test_fork_a_finished_chain_from_its_third_step_with_an_edited_state(
    platform: Callable[..., tuple[int, Any]],
) -> None:
    call = platform
    status, source = call("POST", "executions", {"blueprint": "demo.chain", "input": {"n": 5}})
    assert status == 201, source
    source = _ended(call, source["id"])
    assert (source["state"], source["output"]) == ("completed", 5)
    source_steps = _all(call, f"executions/{source['id']}/steps")
    source_events = _all(call, f"executions/{source['id']}/events")
    third = source_steps[2]
    assert third["name"] == "n_3"

    status, fork = call("POST", f"executions/{source['id']}/fork", {"from_step": third["id"], "state": 10})
    assert status == 201, fork
    assert (fork["origin"], fork["source_id"]) == ("fork", source["id"])
    fork = _ended(call, fork["id"])
    assert (fork["state"], fork["output"]) == ("completed", 13)

    # Steps 1 and 2 did not run in the fork; step 3 on did, with the edited state.
    steps = _all(call, f"executions/{fork['id']}/steps")
    assert [(s["name"], s["output"], s["attempt"]) for s in steps] == [("n_3", 11, 1), ("n_4", 12, 1), ("n_5", 13, 1)]
    events = _all(call, f"executions/{fork['id']}/events")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "data-execution-start"
    assert events[-1]["type"] == "data-execution-end"
    started = [e["data"]["name"] for e in events if e["type"] == "data-step-start"]
    assert started == ["n_3", "n_4", "n_5"]
    assert fork["last_seq"] == len(events)
    assert fork["usage"]["steps"] == 3

    # The source is as it was.
    status, after = call("GET", f"executions/{source['id']}")
    assert status == 200
    assert after == source
    assert _all(call, f"executions/{source['id']}/steps") == source_steps
    assert _all(call, f"executions/{source['id']}/events") == source_events

    # A rerun runs it all again, from the input.
    status, rerun = call("POST", f"executions/{source['id']}/rerun", {})
    assert status == 201, rerun
    rerun = _ended(call, rerun["id"])
    assert (rerun["origin"], rerun["source_id"], rerun["output"]) == ("rerun", source["id"], 5)
    assert [s["name"] for s in _all(call, f"executions/{rerun['id']}/steps")] == ["n_1", "n_2", "n_3", "n_4", "n_5"]
