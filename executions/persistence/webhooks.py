"""The webhook outbox: when an execution's event that webhooks follow is stored, one pending
delivery per URL that wants it (the tenant's active endpoints that list the event, and the
execution's own ``webhook``), then a wake-up for the worker processes' senders
(``runtime/webhooks.py``). Called after the event's transaction commits, so a run pays one small
read and one insert, and only at its ends and waits; sending is never on its path."""

from __future__ import annotations

import logging

from executions import wakeups
from executions.kernel.events import EventType
from executions.models import WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

# The events webhooks can follow: an execution ended (completed, failed, cancelled) or waits for
# a person (input, approval, a cost alert).
WEBHOOK_EVENTS: tuple[str, ...] = (
    EventType.EXECUTION_END.value,
    EventType.EXECUTION_FAILED.value,
    EventType.EXECUTION_CANCELLED.value,
    EventType.EXECUTION_WAITING.value,
)
# What a per-submission ``webhook`` is called for: the end, whichever it is.
SUBMISSION_EVENTS: frozenset[str] = frozenset(WEBHOOK_EVENTS[:3])


def deliveries_enqueue(*, tenant_id: int, execution_id: str, event_type: str, event_id: str, webhook: str) -> int:
    """Record the pending deliveries of one stored event; returns how many. A URL gets one
    delivery per event however many endpoints name it (``webhook`` among them)."""
    rows: dict[str, WebhookDelivery] = {}
    for endpoint_id, url, events in WebhookEndpoint.objects.filter(tenant_id=tenant_id, active=True).values_list(
        "id", "url", "events"
    ):
        if event_type in (events or ()) and url not in rows:
            rows[url] = _delivery(tenant_id, execution_id, event_type, event_id, url, endpoint_id)
    if webhook and event_type in SUBMISSION_EVENTS and webhook not in rows:
        rows[webhook] = _delivery(tenant_id, execution_id, event_type, event_id, webhook, None)
    if not rows:
        return 0
    WebhookDelivery.objects.bulk_create(list(rows.values()), ignore_conflicts=True)
    wakeups.webhooks_due()
    return len(rows)


def deliveries_enqueue_quietly(**event: str | int) -> None:
    """``deliveries_enqueue`` after a commit: a failure here is logged, never raised into the run
    whose event it was (the event is stored; only its webhooks are lost)."""
    try:
        deliveries_enqueue(**event)  # type: ignore[arg-type]
    except Exception:
        logger.exception("recording the webhook deliveries of %s failed", event.get("event_id"))


def _delivery(
    tenant_id: int, execution_id: str, event_type: str, event_id: str, url: str, endpoint_id: str | None
) -> WebhookDelivery:
    return WebhookDelivery(
        tenant_id=tenant_id,
        execution_id=execution_id,
        event_type=event_type,
        event_id=event_id,
        url=url,
        endpoint_id=endpoint_id,
    )
