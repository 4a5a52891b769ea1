"""Ids: prefix plus 27 base62 characters, validated on input, unique and sorted by minting order,
across threads and across forked processes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from executions.kernel import ids
from executions.kernel.ids import (
    SUFFIX_LENGTH,
    IdKind,
    InvalidId,
    is_valid_id,
    new_artifact_id,
    new_checkpoint_id,
    new_event_id,
    new_execution_id,
    new_id,
    new_message_id,
    new_step_id,
    parse_id,
)

BASE62 = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
VALID_SUFFIX = "0" * 8 + "AbCdEfGhIj" + "z" * 9


def node_part(value: str) -> str:
    """The per-process random part: suffix characters 8 to 18 (after 8 characters of time)."""
    suffix = value.split("_", 1)[1]
    return suffix[8:18]


@pytest.mark.parametrize(
    ("mint", "kind", "prefix"),
    [
        (new_execution_id, IdKind.EXECUTION, "exec_"),
        (new_step_id, IdKind.STEP, "step_"),
        (new_artifact_id, IdKind.ARTIFACT, "artifact_"),
        (new_event_id, IdKind.EVENT, "evt_"),
        (new_checkpoint_id, IdKind.CHECKPOINT, "ckpt_"),
        (new_message_id, IdKind.MESSAGE, "msg_"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_each_kind_has_its_prefix_and_a_27_character_base62_suffix(
    mint: Callable[[], str], kind: IdKind, prefix: str
) -> None:
    value = mint()
    assert value.startswith(prefix)
    suffix = value.removeprefix(prefix)
    assert SUFFIX_LENGTH == 27
    assert len(suffix) == 27
    assert set(suffix) <= BASE62
    assert is_valid_id(value) is True
    assert is_valid_id(value, kind) is True
    assert parse_id(value, kind) == value
    assert new_id(kind).startswith(prefix)


def test_the_prefixes_are_the_spec_prefixes() -> None:
    # The kernel's own, then the platform's: schedules, webhooks and their deliveries.
    assert {kind.value for kind in IdKind} == {"exec", "step", "artifact", "evt", "ckpt", "msg", "sched", "wh", "whd"}


@pytest.mark.parametrize("kind", list(IdKind), ids=str)
def test_an_id_of_another_kind_is_rejected(kind: IdKind) -> None:
    for other in IdKind:
        value = new_id(other)
        assert is_valid_id(value, kind) is (other is kind)
        if other is not kind:
            with pytest.raises(InvalidId) as info:
                parse_id(value, kind)
            assert str(info.value) == f"not a valid {kind.value} id: {value!r}"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "exec_",
        "exec",
        f"exec{VALID_SUFFIX}",  # no separator
        f"exec-{VALID_SUFFIX}",
        f"EXEC_{VALID_SUFFIX}",  # prefixes are lower case
        f"run_{VALID_SUFFIX}",  # unknown prefix
        f"execution_{VALID_SUFFIX}",
        f"_exec_{VALID_SUFFIX}",
        f"exec_{VALID_SUFFIX[:-1]}",  # 26 characters
        f"exec_{VALID_SUFFIX}0",  # 28 characters
        f"exec_{VALID_SUFFIX[:-1]}-",
        f"exec_{VALID_SUFFIX[:-1]}_",
        f"exec_{VALID_SUFFIX[:-1]}+",
        f"exec_{VALID_SUFFIX[:-1]} ",
        f"exec_{VALID_SUFFIX[:-1]}é",
        f"exec_{VALID_SUFFIX[:-1]}٣",  # a non-ASCII digit
        f" exec_{VALID_SUFFIX}",
        f"exec_{VALID_SUFFIX} ",
        f"exec_exec_{VALID_SUFFIX}",
    ],
)
def test_malformed_strings_are_rejected(value: str) -> None:
    assert is_valid_id(value) is False
    assert is_valid_id(value, IdKind.EXECUTION) is False
    with pytest.raises(InvalidId):
        parse_id(value, IdKind.EXECUTION)


def test_an_id_with_a_trailing_newline_is_rejected() -> None:
    # "$" in the id pattern also matches just before a final "\n", so this currently passes validation.
    value = f"exec_{VALID_SUFFIX}\n"
    assert is_valid_id(value) is False
    with pytest.raises(InvalidId):
        parse_id(value, IdKind.EXECUTION)


@pytest.mark.parametrize(
    "value", [None, 123, 1.5, b"exec_" + VALID_SUFFIX.encode(), [f"exec_{VALID_SUFFIX}"], IdKind.EXECUTION]
)
def test_non_strings_are_rejected(value: object) -> None:
    assert is_valid_id(value) is False
    with pytest.raises(InvalidId):
        parse_id(value, IdKind.EXECUTION)


def test_a_well_formed_string_is_valid_even_if_never_minted() -> None:
    assert parse_id(f"exec_{VALID_SUFFIX}", IdKind.EXECUTION) == f"exec_{VALID_SUFFIX}"


def test_invalid_id_is_a_value_error() -> None:
    assert issubclass(InvalidId, ValueError)


def test_100k_ids_are_unique() -> None:
    minted = [new_event_id() for _ in range(100_000)]
    assert len(set(minted)) == 100_000
    assert all(is_valid_id(value, IdKind.EVENT) for value in minted[::997])


def test_ids_sort_in_minting_order_within_a_process() -> None:
    minted = [new_step_id() for _ in range(20_000)]
    assert sorted(minted) == minted
    assert len({node_part(value) for value in minted}) == 1


def test_ids_keep_sorting_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    now_ns = time.time_ns()
    readings = iter([now_ns, now_ns - 5_000_000_000, now_ns - 10_000_000_000, now_ns, now_ns + 1_000_000])
    # Only the ids module sees the fake clock.
    monkeypatch.setattr(ids, "time", SimpleNamespace(time_ns=lambda: next(readings)))
    minted = [new_execution_id() for _ in range(5)]
    monkeypatch.undo()
    assert sorted(minted) == minted
    assert len(set(minted)) == 5


def test_ids_minted_by_concurrent_threads_are_unique() -> None:
    threads_count, per_thread = 8, 5_000
    start = threading.Barrier(threads_count)
    minted: list[list[str]] = [[] for _ in range(threads_count)]

    def mint(slot: list[str]) -> None:
        start.wait()
        slot.extend(new_step_id() for _ in range(per_thread))

    threads = [threading.Thread(target=mint, args=(slot,)) for slot in minted]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    everything = [value for slot in minted for value in slot]
    assert len(everything) == threads_count * per_thread
    assert len(set(everything)) == threads_count * per_thread
    for slot in minted:
        # Each thread sees its own ids in order, however the threads interleave.
        assert sorted(slot) == slot


def run_in_fork(child: Callable[[], bytes], timeout_s: float = 20.0) -> bytes:
    """Fork; run ``child`` in the child process and return what it produced. The child never
    returns into pytest: it always leaves through ``os._exit``."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_fd)
            payload = child()
            view = memoryview(payload)
            while view:
                view = view[os.write(write_fd, view) :]
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return b"".join(chunks)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_mints_with_its_own_node_part() -> None:
    before = [new_execution_id() for _ in range(100)]

    def child() -> bytes:
        return "\n".join(new_execution_id() for _ in range(1_000)).encode()

    child_ids = run_in_fork(child).decode().split("\n")
    after = [new_execution_id() for _ in range(1_000)]

    assert len(child_ids) == 1_000
    assert all(is_valid_id(value, IdKind.EXECUTION) for value in child_ids)
    parent_node = node_part(before[0])
    assert {node_part(value) for value in before + after} == {parent_node}
    child_nodes = {node_part(value) for value in child_ids}
    assert len(child_nodes) == 1
    assert child_nodes != {parent_node}
    assert not set(child_ids) & set(before + after)
    assert sorted(child_ids) == child_ids


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_is_minting_can_still_mint() -> None:
    # fork() copies the minter's lock in whatever state it is in. If another thread is inside
    # mint() at that moment, the child's copy stays locked forever unless the at-fork hook
    # re-creates it. Holding the lock across the fork makes that moment certain.
    def child() -> bytes:
        minted: list[str] = []
        worker = threading.Thread(target=lambda: minted.append(new_execution_id()), daemon=True)
        worker.start()
        worker.join(timeout=3)
        return b"minted" if minted else b"deadlocked"

    holder = ids._minter._lock
    holder.acquire()
    try:
        outcome = run_in_fork(child)
    finally:
        holder.release()
    assert outcome == b"minted"
