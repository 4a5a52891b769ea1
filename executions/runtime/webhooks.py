"""The webhook sender: a thread in each worker process that claims due deliveries
(``services.webhooks.deliveries_claim``) and sends them on a few threads of its own, then sleeps
until the next one is due, a wake-up (``wakeups.webhooks_due``: a delivery was recorded) or
``ENACT_WEBHOOK_POLL_SECONDS``. Every worker process of every cluster runs one; the claim makes
sure each attempt is made by one of them."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from executions import wakeups
from executions.persistence.connections import give_back
from executions.services.webhooks import deliveries_claim, deliveries_next_due, delivery_send

logger = logging.getLogger(__name__)

SENDERS = 4  # deliveries sent at once by one process: a slow receiver holds up one of them
MIN_SLEEP = 0.05


def _send(delivery_id: str, lease: object) -> None:
    try:
        close_old_connections()
        delivery = delivery_send(delivery_id, lease)  # type: ignore[arg-type]
        if delivery is not None:
            logger.info("webhook delivery %s: %s after %s attempts", delivery.pk, delivery.state, delivery.attempts)
    except Exception:
        logger.exception("sending webhook delivery %s failed", delivery_id)
    finally:
        give_back()


class Sender:
    def __init__(self) -> None:
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pool: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self.__init__()  # type: ignore[misc]  # in a forked process: threads of its own
        self._pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="enact-webhook")
        wakeups.listen(on_webhooks=self.wake)
        threading.Thread(target=self._run, name="enact-webhooks", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def tick(self) -> float:
        """Send what is due (waiting for those sends); returns how long to sleep before the next look."""
        cap = settings.ENACT_WEBHOOK_POLL_SECONDS
        assert self._pool is not None
        try:
            close_old_connections()
            claimed = deliveries_claim(limit=SENDERS)
            give_back()
            for done in [self._pool.submit(_send, delivery_id, lease) for delivery_id, lease in claimed]:
                done.result()
            if len(claimed) == SENDERS:
                return 0.0  # maybe more are due
            due = deliveries_next_due()
        except Exception:
            logger.exception("sending webhooks failed")
            return cap
        finally:
            give_back()
        if due is None:
            return cap
        return min(cap, max(MIN_SLEEP, (due - timezone.now()).total_seconds() + 0.002))

    def _run(self) -> None:
        while not self._stopping.is_set():
            wait = self.tick()
            if wait > 0:
                self._wake.wait(wait)
            self._wake.clear()


sender = Sender()
