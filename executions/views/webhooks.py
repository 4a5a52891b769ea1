"""The tenant's webhooks and what was sent to them. Everyone of the tenant reads; an operator can
give a webhook a new secret here (shown once, on the answer to that POST only)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache

from enact_platform.errors import NotFound
from executions.models import WebhookDelivery, WebhookEndpoint
from executions.services import webhooks
from executions.views.common import Seat, no_tenant, render_page, seat_for

RECENT = 10
EVENT_WORDS = {
    "data-execution-end": "completed",
    "data-execution-failed": "failed",
    "data-execution-cancelled": "cancelled",
    "data-execution-waiting": "waiting for a person",
}


def _delivery(delivery: WebhookDelivery) -> dict[str, Any]:
    pending = delivery.state == WebhookDelivery.State.PENDING
    return {
        "delivery": delivery,
        "event_words": EVENT_WORDS.get(delivery.event_type, delivery.event_type),
        "next_try": delivery.next_attempt_at if pending else None,
        "retrying": pending and delivery.attempts > 0,
    }


def _endpoint(endpoint: WebhookEndpoint, recent: list[WebhookDelivery]) -> dict[str, Any]:
    return {
        "endpoint": endpoint,
        "events": [(event, EVENT_WORDS.get(event, event)) for event in endpoint.events or ()],
        "deliveries": [_delivery(d) for d in recent],
    }


def _page(request: HttpRequest, seat: Seat, *, new_secret: tuple[str, str] | None = None) -> HttpResponse:
    listed = list(webhooks.webhook_list(tenant=seat.tenant))
    recent = webhooks.webhooks_recent_deliveries(tenant=seat.tenant, webhook_ids=[e.pk for e in listed], limit=RECENT)
    endpoints = [_endpoint(e, recent[e.pk]) for e in listed]
    # The page shows no attempts: none read.
    own = webhooks.deliveries_list(tenant=seat.tenant).filter(endpoint__isnull=True).prefetch_related(None)[:RECENT]
    return render_page(
        request,
        "dashboard/webhooks.html",
        seat,
        endpoints=endpoints,
        submission_deliveries=[_delivery(d) for d in own],
        new_secret=new_secret,
        recent=RECENT,
    )


@never_cache
@login_required
def webhooks_page(request: HttpRequest) -> HttpResponse:
    """GET: the webhooks, each with its latest deliveries. POST (an operator's): ``action`` is
    ``rotate-secret`` for ``webhook``; the answer is the page with the new secret shown once."""
    seat = seat_for(request)
    if seat is None:
        return no_tenant(request)
    if request.method != "POST":
        return _page(request, seat)
    if not seat.can_operate:
        return HttpResponse("your role may not change webhooks", status=403)
    if request.POST.get("action") != "rotate-secret":
        raise Http404("no such action")
    try:
        endpoint, secret = webhooks.webhook_rotate_secret(tenant=seat.tenant, webhook_id=request.POST.get("webhook"))
    except NotFound:
        raise Http404("no such webhook") from None
    return _page(request, seat, new_secret=(endpoint.pk, secret))
