"""The Python client (``client/``, ``enact_client``) against a real server and worker: every
method, the event stream across connections cut mid-frame, reset, closed and gone silent, list
paging, the typed errors, the async client, and the remote command line."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..test_up import ROOT
from .conftest import CLIENT_DIR, Platform
from .proxy import CuttingProxy, cut_inside_frame

from enact_client import (  # isort: skip  (importable once conftest put client/ on the path)
    AsyncClient,
    Client,
    Conflict,
    EnactError,
    Event,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    Unauthenticated,
)

pytestmark = pytest.mark.slow

SLOW = "demo.slow"


@pytest.fixture
def client(platform: Platform) -> Iterator[Client]:
    with Client(platform.url, platform.keys["write"]) as enact:
        yield enact


def _assert_whole(events: list[Event], *, after: int = 0) -> None:
    """Every seq once, in order, from ``after`` + 1, ending with the terminal event."""
    assert [e["seq"] for e in events] == list(range(after + 1, after + 1 + len(events))), [e["seq"] for e in events]
    assert events[-1]["type"] in ("data-execution-end", "data-execution-failed", "data-execution-cancelled")


def _until(events: Iterator[Event], event_type: str) -> list[Event]:
    seen = []
    for event in events:
        seen.append(event)
        if event["type"] == event_type:
            return seen
    raise AssertionError(f"the stream ended before {event_type}: {[e['type'] for e in seen]}")


# --- submit, get, stream -------------------------------------------------------------------------


def test_submit_and_stream_to_the_end(client: Client) -> None:
    execution = client.submit(SLOW, {"steps": 3, "seconds": 0.3}, metadata={"who": "test"})
    assert execution["state"] == "queued"
    assert execution["metadata"] == {"who": "test"}
    events = list(client.stream(execution["id"]))
    _assert_whole(events)
    assert events[-1]["type"] == "data-execution-end"
    assert sum(e["type"] == "data-step-end" for e in events) == 3
    final = client.get(execution["id"])
    assert final["state"] == "completed"
    assert final["last_seq"] == events[-1]["seq"]
    # From the middle: the rest, and nothing before it; from the end: nothing, at once.
    assert [e["seq"] for e in client.stream(execution["id"], after=4)] == [e["seq"] for e in events[4:]]
    assert list(client.stream(execution["id"], after=events[-1]["seq"])) == []
    # The stored events, paged, are the streamed ones.
    assert list(client.events(execution["id"])) == events
    assert [step["name"] for step in client.steps(execution["id"])] == [
        e["data"].get("name") for e in events if e["type"] == "data-step-start"
    ]


def test_idempotent_submission_returns_the_first_execution(client: Client) -> None:
    first = client.submit("demo.chain", {"n": 1}, idempotency_key="client-idem-1")
    again = client.submit("demo.chain", {"n": 1}, idempotency_key="client-idem-1")
    assert again["id"] == first["id"]


@pytest.mark.parametrize("how", ["rst", "fin"])
def test_stream_cut_inside_a_frame_resumes_with_no_gap_or_repeat(platform: Platform, client: Client, how: str) -> None:
    proxy = CuttingProxy(platform.port, cut_inside_frame(4), how=how)
    try:
        execution = client.submit(SLOW, {"steps": 3, "seconds": 0.3})
        with Client(proxy.url, platform.keys["write"]) as through_proxy:
            events = list(through_proxy.stream(execution["id"]))
    finally:
        proxy.close()
    _assert_whole(events)
    assert events[-1]["type"] == "data-execution-end"
    assert proxy.connections[0].cut
    # The second connection asked for what came after the last whole event, seq 3.
    assert len(proxy.connections) == 2
    assert b"\r\nlast-event-id: 3\r\n" in bytes(proxy.connections[1].request).lower()
    assert events == list(client.events(execution["id"]))


def test_stream_whose_connection_goes_silent_reconnects_after_the_read_timeout(
    platform: Platform, client: Client
) -> None:
    proxy = CuttingProxy(platform.port, cut_inside_frame(3), how="silent")
    try:
        execution = client.submit(SLOW, {"steps": 4, "seconds": 0.5})
        with Client(proxy.url, platform.keys["write"], stream_read_timeout=1.5) as through_proxy:
            started = time.monotonic()
            events = list(through_proxy.stream(execution["id"]))
            took = time.monotonic() - started
    finally:
        proxy.close()
    _assert_whole(events)
    assert len(proxy.connections) == 2
    assert b"\r\nlast-event-id: 2\r\n" in bytes(proxy.connections[1].request).lower()
    assert took < 30


def test_stream_cut_again_and_again_still_gives_every_event_once(platform: Platform, client: Client) -> None:
    # Each of the first three connections is reset inside the frame of its second new event.
    def rule(number: int, answer: bytes) -> int | None:
        if number >= 3:
            return None
        frames = [m.end() for m in re.finditer(rb"\nid: \d+\nevent: ", answer)]
        return frames[1] if len(frames) >= 2 else None

    proxy = CuttingProxy(platform.port, rule)
    try:
        execution = client.submit(SLOW, {"steps": 3, "seconds": 0.2})
        with Client(proxy.url, platform.keys["write"]) as through_proxy:
            events = list(through_proxy.stream(execution["id"]))
    finally:
        proxy.close()
    _assert_whole(events)
    assert len(proxy.connections) == 4


def test_rerun_and_fork_and_their_lineage(client: Client) -> None:
    source = client.submit("demo.chain", {"n": 5})
    assert list(client.stream(source["id"]))[-1]["type"] == "data-execution-end"
    steps = list(client.steps(source["id"], page_size=2))  # three pages of steps
    assert [step["position"] for step in steps] == sorted(step["position"] for step in steps)
    assert len(steps) == 5
    assert len({step["id"] for step in steps}) == 5

    fork = client.fork(source["id"], steps[2]["id"], state=10)
    assert (fork["origin"], fork["source_id"]) == ("fork", source["id"])
    fork_events = list(client.stream(fork["id"]))
    _assert_whole(fork_events)
    assert client.get(fork["id"])["output"] == 13
    # Paged events are the streamed ones, page after page.
    assert list(client.events(fork["id"], page_size=3)) == fork_events

    rerun = client.rerun(source["id"], metadata={"why": "again"})
    assert (rerun["origin"], rerun["source_id"], rerun["metadata"]) == ("rerun", source["id"], {"why": "again"})
    list(client.stream(rerun["id"]))
    assert client.get(rerun["id"])["output"] == client.get(source["id"])["output"] == 5

    derived = {e["id"] for e in client.list(source=source["id"], page_size=1)}
    assert derived == {fork["id"], rerun["id"]}
    assert [e["id"] for e in client.list(source=source["id"], origin="fork")] == [fork["id"]]
    with pytest.raises(InvalidInput) as no_such_step:
        client.fork(source["id"], "step_00000000000000000000000000")
    assert no_such_step.value.status == 400
    with pytest.raises(NotFound):
        client.rerun("exec_00000000000000000000000000")


# --- list ----------------------------------------------------------------------------------------


def test_list_follows_the_cursor_across_pages_with_the_filters(platform: Platform) -> None:
    with Client(platform.url, platform.keys["lister"]) as enact:
        chains = [enact.submit("demo.chain", {"n": 1})["id"] for _ in range(5)]
        others = [enact.submit("demo.pipeline", {"text": "a b"})["id"] for _ in range(2)]
        listed = [e["id"] for e in enact.list(blueprint="demo.chain", page_size=2)]
        assert listed == chains[::-1]  # newest first, every one once, over three pages
        everything = [e["id"] for e in enact.list(page_size=3)]
        assert everything == (chains + others)[::-1]
        first = enact.page(page_size=2)
        assert len(first["results"]) == 2
        assert first["next"] is not None
        # A cursor that was tampered with is refused.
        with pytest.raises(InvalidInput):
            enact.page(cursor="not-a-cursor")


# --- controls ------------------------------------------------------------------------------------


def test_cancel_a_running_execution(client: Client) -> None:
    execution = client.submit(SLOW, {"steps": 20, "seconds": 1})
    stream = client.stream(execution["id"])
    _until(stream, "data-step-start")
    cancelled = client.cancel(execution["id"], "enough")
    assert cancelled["id"] == execution["id"]
    rest = list(stream)
    assert rest[-1]["type"] == "data-execution-cancelled"
    assert client.get(execution["id"])["state"] == "cancelled"
    # Idempotent: cancelling what has ended answers with its state.
    assert client.cancel(execution["id"])["state"] == "cancelled"


def test_pause_and_resume(client: Client) -> None:
    execution = client.submit(SLOW, {"steps": 4, "seconds": 0.4})
    stream = client.stream(execution["id"])
    seen = _until(stream, "data-step-start")
    with pytest.raises(Conflict) as resumed_running:
        client.resume(execution["id"])
    assert resumed_running.value.status == 409
    assert resumed_running.value.code == "conflict"
    client.pause(execution["id"], "a moment")
    seen += _until(stream, "data-execution-paused")
    assert client.get(execution["id"])["state"] == "paused"
    client.resume(execution["id"])
    seen += list(stream)
    _assert_whole(seen)
    assert seen[-1]["type"] == "data-execution-end"
    assert "data-execution-resumed" in [e["type"] for e in seen]


def test_answer_an_approval_and_post_to_the_inbox(client: Client) -> None:
    execution = client.submit("demo.approval", {})
    stream = client.stream(execution["id"])
    _until(stream, "data-execution-waiting")
    assert client.get(execution["id"])["state"] == "waiting"
    client.input(execution["id"], approve=True)  # the same method as answer
    assert list(stream)[-1]["type"] == "data-execution-end"

    running = client.submit(SLOW, {"steps": 3, "seconds": 0.5})
    stream = client.stream(running["id"])
    _until(stream, "data-step-start")
    message_id = client.inbox(running["id"], "guidance", content="mind the gap")
    assert message_id
    rest = list(stream)
    inbox = [e for e in rest if e["type"] == "data-inbox-message"]
    assert inbox, [e["type"] for e in rest]
    assert "mind the gap" in json.dumps(inbox[0]["data"])


# --- errors --------------------------------------------------------------------------------------


def test_typed_errors_carry_the_error_body(platform: Platform, client: Client) -> None:
    with pytest.raises(NotFound) as unknown:
        client.get("exec_00000000000000000000000000")
    assert (unknown.value.status, unknown.value.code) == (404, "not_found")
    assert unknown.value.body["error"]["code"] == "not_found"

    mine = client.submit("demo.chain", {"n": 1})
    with Client(platform.url, platform.keys["other"]) as other:
        with pytest.raises(NotFound):
            other.get(mine["id"])
        with pytest.raises(NotFound):
            other.cancel(mine["id"])
        with pytest.raises(NotFound):
            list(other.stream(mine["id"]))
        with pytest.raises(NotFound):
            list(other.events(mine["id"]))
    # An id with a slash or dots names no other endpoint: it is just not found.
    for odd in ("../executions", "..", "a/b"):
        with pytest.raises(NotFound):
            client.get(odd)

    with pytest.raises(InvalidInput) as bad:
        client.submit(SLOW, {"steps": "many"})
    assert bad.value.status == 400
    assert bad.value.details, bad.value.body
    with pytest.raises(InvalidInput):
        list(client.stream(mine["id"], after=10**6))  # beyond the log

    with Client(platform.url, "ek_not-a-key") as stranger, pytest.raises(Unauthenticated) as who:
        stranger.get(mine["id"])
    assert who.value.status == 401

    with Client(platform.url, platform.keys["read"]) as reader:
        assert reader.get(mine["id"])["id"] == mine["id"]
        with pytest.raises(Forbidden) as read_only:
            reader.cancel(mine["id"])
    assert read_only.value.status == 403

    with pytest.raises(PayloadTooLarge) as large:
        client.submit(SLOW, {"blob": "x" * 1_100_000})
    assert large.value.status == 413


def test_rate_limited_and_quota_exceeded_are_429s_of_their_own(platform: Platform) -> None:
    with Client(platform.url, platform.keys["broke"]) as broke, pytest.raises(QuotaExceeded) as quota:
        broke.submit("demo.chain", {"n": 1})
    assert (quota.value.status, quota.value.code) == (429, "quota_exceeded")

    with Client(platform.url, platform.keys["limited"]) as limited, pytest.raises(RateLimited) as limit:
        _hammer(limited, 10)  # the tenant allows 3 a minute
    assert (limit.value.status, limit.value.code) == (429, "rate_limited")
    assert 0 < limit.value.retry_after <= 60
    assert isinstance(limit.value, EnactError)


def _hammer(client: Client, times: int) -> None:
    for _ in range(times):
        client.tenant()


# --- the async client ----------------------------------------------------------------------------


def test_async_client(platform: Platform) -> None:
    async def scenario() -> None:
        proxy = CuttingProxy(platform.port, cut_inside_frame(5))
        try:
            async with (
                AsyncClient(platform.url, platform.keys["write"]) as enact,
                AsyncClient(proxy.url, platform.keys["write"]) as through_proxy,
            ):
                execution = await enact.submit(SLOW, {"steps": 3, "seconds": 0.3})
                assert (await enact.get(execution["id"]))["id"] == execution["id"]
                # Two streams at once, one of them cut mid-frame: both whole.
                direct, cut = await asyncio.gather(
                    _collect(enact.stream(execution["id"])), _collect(through_proxy.stream(execution["id"]))
                )
                _assert_whole(direct)
                assert cut == direct
                assert len(proxy.connections) == 2
                assert [e async for e in enact.events(execution["id"])] == direct

                older, newer = [(await enact.submit("demo.chain", {"n": 1}))["id"] for _ in range(2)]
                listed = [e["id"] async for e in enact.list(page_size=1, blueprint="demo.chain")]
                assert len(listed) == len(set(listed))
                assert listed.index(newer) < listed.index(older)  # newest first, a page each

                long = await enact.submit(SLOW, {"steps": 20, "seconds": 1})
                stream = enact.stream(long["id"])
                async for event in stream:
                    if event["type"] == "data-step-start":
                        break
                await enact.pause(long["id"])
                async for event in stream:
                    if event["type"] == "data-execution-paused":
                        break
                with pytest.raises(Conflict):
                    await enact.pause(long["id"])  # not legal once paused
                await enact.cancel(long["id"], "done")
                assert [e["type"] async for e in stream][-1] == "data-execution-cancelled"
                with pytest.raises(NotFound):
                    await enact.get("exec_00000000000000000000000000")
        finally:
            proxy.close()

    asyncio.run(scenario())


async def _collect(events: Any) -> list[Event]:
    return [event async for event in events]


# --- the remote command line ---------------------------------------------------------------------


def _remote(platform: Platform, *args: str, manage: bool = False) -> subprocess.CompletedProcess[str]:
    # manage.py finds the client in the repository by itself when it is not installed.
    env = {k: v for k, v in platform.env.items() if k != "PYTHONPATH"}
    command = (
        [sys.executable, "manage.py", "enact", "--url", platform.url, "--key", platform.keys["write"], *args]
        if manage
        else [sys.executable, "-m", "enact_client", *args]
    )
    if not manage:
        env.update(PYTHONPATH=str(CLIENT_DIR), ENACT_URL=platform.url, ENACT_API_KEY=platform.keys["write"])
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_remote_command_line_end_to_end(platform: Platform, client: Client) -> None:
    done = _remote(platform, "submit", SLOW, "--input", '{"steps": 2, "seconds": 0.2}', "--watch")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    execution_id = lines[0]
    assert re.fullmatch(r"exec_[0-9A-Za-z]{27}", execution_id)
    assert lines[-1] == f"{execution_id} completed"
    seqs = [int(line.split()[0]) for line in lines[1:-1]]
    assert seqs == list(range(1, len(seqs) + 1))

    got = _remote(platform, "get", execution_id)
    assert got.returncode == 0, got.stderr
    assert json.loads(got.stdout)["state"] == "completed"

    events = _remote(platform, "events", execution_id, "--after", "2")
    assert [json.loads(line)["seq"] for line in events.stdout.splitlines()] == seqs[2:]

    listed = _remote(platform, "list", "--blueprint", SLOW, "--limit", "1", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [execution_id]

    steps = list(client.steps(execution_id))
    forked = _remote(platform, "fork", execution_id, "--from-step", steps[1]["id"], "--watch")
    assert forked.returncode == 0, forked.stderr
    fork_id = forked.stdout.splitlines()[0]
    assert forked.stdout.splitlines()[-1] == f"{fork_id} completed"
    lineage = _remote(platform, "list", "--source", execution_id, "--origin", "fork")
    assert [line.split("\t")[:2] for line in lineage.stdout.splitlines()] == [[fork_id, "completed"]]

    # Through manage.py enact --url --key: the same command line.
    queued = client.submit(SLOW, {"steps": 20, "seconds": 1})
    cancelled = _remote(platform, "cancel", queued["id"], "--reason", "cli", manage=True)
    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["id"] == queued["id"]
    watched = _remote(platform, "watch", queued["id"], manage=True)
    assert watched.returncode == 1  # it did not complete
    assert watched.stdout.splitlines()[-1] == f"{queued['id']} cancelled"

    missing = _remote(platform, "get", "exec_00000000000000000000000000")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: not_found (404): ")
    bad = _remote(platform, "submit", SLOW, "--input", "{not json")
    assert bad.returncode == 2
    assert "invalid JSON" in bad.stderr


def test_the_client_installs_alone_and_scripts_the_platform_from_a_bare_machine(
    platform: Platform, client: Client, tmp_path: Path
) -> None:
    # A copy of client/ alone, installed into a fresh virtualenv with pip: httpx comes with it,
    # nothing of the server does.
    source = tmp_path / "enact-client"
    shutil.copytree(CLIENT_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    bare = {k: v for k, v in platform.env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "DJANGO_SETTINGS_MODULE")}
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(source)],
        cwd=tmp_path, env=bare, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    python = str(venv / "bin" / "python")
    check = "import importlib.util as u, enact_client; print(u.find_spec('django') is None, u.find_spec('executions') is None)"
    probe = subprocess.run([python, "-c", check], cwd=tmp_path, env=bare, capture_output=True, text=True, timeout=60)
    assert probe.stdout.split() == ["True", "True"], probe.stderr
    typed = subprocess.run(
        [python, "-c", "import enact_client, pathlib; print((pathlib.Path(enact_client.__file__).parent / 'py.typed').exists())"],
        cwd=tmp_path, env=bare, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert typed.stdout.strip() == "True"

    execution = client.submit("demo.chain", {"n": 2})
    remote = subprocess.run(
        [str(venv / "bin" / "enact-remote"), "--url", platform.url, "--key", platform.keys["write"], "watch", execution["id"]],
        cwd=tmp_path, env=bare, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert remote.returncode == 0, remote.stderr
    assert remote.stdout.splitlines()[-1] == f"{execution['id']} completed"
