"""Cooperative cancellation: a token that can be waited on, with child tokens."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

logger = logging.getLogger(__name__)

#: The longest any thread of the kernel blocks in one wait (on an event, a queue, a lock); a
#: longer wait is waited in parts. Well below ``threading.TIMEOUT_MAX``, which a longer timeout
#: overflows (``OverflowError``).
LONGEST_WAIT_S: Final = 3_600.0


class CancellationToken:
    """Set once, never reset. Cancelling a token cancels its children; not the other way round."""

    def __init__(self, parent: CancellationToken | None = None) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[str], None]] = []
        self._children: list[CancellationToken] = []
        self.reason: str | None = None
        if parent is not None:
            parent._adopt(self)

    def _adopt(self, child: CancellationToken) -> None:
        with self._lock:
            if not self._event.is_set():
                self._children.append(child)
                return
            reason = self.reason or "cancelled"
        child.cancel(reason)

    def child_token(self) -> CancellationToken:
        return CancellationToken(parent=self)

    def detach(self, child: CancellationToken) -> None:
        """Forget a child that is done with, so a long execution does not collect them."""
        with self._lock:
            if child in self._children:
                self._children.remove(child)

    @property
    def is_cancelled(self) -> bool:
        return self._event.is_set()

    def cancel(self, reason: str = "cancelled") -> bool:
        """Cancel this token and its children. Returns False if it was already cancelled."""
        with self._lock:
            if self._event.is_set():
                return False
            self.reason = reason
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
            children, self._children = self._children, []
        for callback in callbacks:
            try:
                callback(reason)
            except Exception:  # a listener must not stop the cancel from spreading
                logger.exception("cancellation callback failed")
        for child in children:
            child.cancel(reason)
        return True

    def on_cancel(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call ``callback(reason)`` once when cancelled (at once if already). Returns an unsubscribe."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)

                def unsubscribe() -> None:
                    with self._lock:
                        if callback in self._callbacks:
                            self._callbacks.remove(callback)

                return unsubscribe
            reason = self.reason or "cancelled"
        callback(reason)
        return lambda: None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` seconds pass. True if cancelled.

        Node code uses this instead of ``time.sleep`` so a cancel ends the wait at once. A
        timeout longer than a lock can wait (``threading.TIMEOUT_MAX``) is waited in parts.
        """
        if timeout is None or timeout <= LONGEST_WAIT_S:
            return self._event.wait(timeout)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return self._event.is_set()
            if self._event.wait(min(left, LONGEST_WAIT_S)):
                return True

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled(self.reason or "cancelled")


class Cancelled(Exception):
    """Raised by node code that notices its token was cancelled."""
