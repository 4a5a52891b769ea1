"""Identifiers: minted here and nowhere else.

An id is a type prefix plus a 27-character base62 suffix that sorts by creation time:
8 characters of milliseconds since the epoch, 10 characters drawn at random once per
process (re-drawn after ``fork``), and a 9-character per-process counter. Ids minted in one
process sort in minting order; ids minted in the same millisecond by different processes
are unique and sort by process.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from enum import StrEnum
from typing import Final

_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_TIME_WIDTH: Final = 8
_NODE_WIDTH: Final = 10
_COUNTER_WIDTH: Final = 9
SUFFIX_LENGTH: Final = _TIME_WIDTH + _NODE_WIDTH + _COUNTER_WIDTH


class IdKind(StrEnum):
    EXECUTION = "exec"
    STEP = "step"
    ARTIFACT = "artifact"
    EVENT = "evt"
    CHECKPOINT = "ckpt"
    MESSAGE = "msg"
    SCHEDULE = "sched"
    WEBHOOK = "wh"
    DELIVERY = "whd"


_ID_RE: Final = re.compile(rf"^(exec|step|artifact|evt|ckpt|msg|sched|wh|whd)_([0-9A-Za-z]{{{SUFFIX_LENGTH}}})$")


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, rem = divmod(value, 62)
        chars.append(_ALPHABET[rem])
    return "".join(reversed(chars))


_PAIRS: Final = tuple(a + b for a in _ALPHABET for b in _ALPHABET)  # 62**2 two-character suffixes


class _Minter:
    """Per-process state for minting; guarded by a lock because nodes run on many threads.

    Minting is on every step's path, so the counter is encoded in two parts: its last two
    characters from a table, the rest cached until it changes (once every 3,844 ids)."""

    def __init__(self) -> None:
        self._reseed()

    def _reseed(self) -> None:
        # A new lock too: a fork while another thread held the old one would leave it held forever.
        self._lock = threading.Lock()
        self._node = _encode(secrets.randbits(59), _NODE_WIDTH)
        # Start the counter at a random point so a restarted process does not replay suffixes.
        self._counter = secrets.randbits(40)
        self._last_ms = -1
        self._time_part = ""
        self._high = -1
        self._prefix = ""

    def mint(self) -> str:
        now_ms = time.time_ns() // 1_000_000
        with self._lock:
            if now_ms > self._last_ms:
                # Never step backwards: a clock adjustment must not break sort order.
                self._last_ms = now_ms
                self._time_part = _encode(now_ms, _TIME_WIDTH)
            self._counter += 1
            high, low = divmod(self._counter, 3844)
            if high != self._high:
                self._high = high
                self._prefix = self._node + _encode(high, _COUNTER_WIDTH - 2)
            return self._time_part + self._prefix + _PAIRS[low]


_minter = _Minter()
if hasattr(os, "register_at_fork"):
    # A forked worker must not share its parent's node part and counter.
    os.register_at_fork(after_in_child=_minter._reseed)


def new_id(kind: IdKind) -> str:
    """Mint a new id of the given kind, e.g. ``exec_0bQ2…``."""
    return f"{kind.value}_{_minter.mint()}"


def new_execution_id() -> str:
    return new_id(IdKind.EXECUTION)


def new_step_id() -> str:
    return new_id(IdKind.STEP)


def new_artifact_id() -> str:
    return new_id(IdKind.ARTIFACT)


def new_event_id() -> str:
    return new_id(IdKind.EVENT)


def new_checkpoint_id() -> str:
    return new_id(IdKind.CHECKPOINT)


def new_message_id() -> str:
    return new_id(IdKind.MESSAGE)


def new_schedule_id() -> str:
    return new_id(IdKind.SCHEDULE)


def new_webhook_id() -> str:
    return new_id(IdKind.WEBHOOK)


def new_delivery_id() -> str:
    return new_id(IdKind.DELIVERY)


class InvalidId(ValueError):
    """A string that is not a well-formed id of the expected kind."""


def is_valid_id(value: object, kind: IdKind | None = None) -> bool:
    if not isinstance(value, str):
        return False
    match = _ID_RE.fullmatch(value)  # not match(): "$" would let a trailing newline through
    if match is None:
        return False
    return kind is None or match.group(1) == kind.value


def parse_id(value: object, kind: IdKind) -> str:
    """Return ``value`` if it is a well-formed id of ``kind``; raise :class:`InvalidId` otherwise."""
    if not is_valid_id(value, kind):
        raise InvalidId(f"not a valid {kind.value} id: {value!r}")
    assert isinstance(value, str)
    return value
