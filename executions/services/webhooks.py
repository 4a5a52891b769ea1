"""Webhooks: a tenant's URLs called with a signed POST when its executions end or wait for a person.

- **Endpoints** (``WebhookEndpoint``): a URL, the event types it wants (``WEBHOOK_EVENTS``), an
  active flag and a secret made at creation, shown once and kept encrypted (``tenants.secrets``).
- **Per-submission** ``webhook``: a URL given with one submission, called when that execution
  ends. If it is the URL of one of the tenant's active endpoints, that endpoint's secret signs
  it (and the endpoint gets one delivery per event, not two); otherwise the tenant's signing
  secret does (``WebhookSigningSecret``, made at the first such submission; ``signing_secret_rotate``
  shows a new one).
- **Hosts**: a URL's host must be one the tenant's tool policy allows (``tool_allowed_domains``),
  checked when it is registered or submitted (400) and again before every send. A host that is,
  or resolves to, a private, loopback, link-local or otherwise non-public address is sent to only
  if the policy names it exactly (``127.0.0.1:8080``, ``hooks.internal``; a ``*.`` pattern is
  not enough). A send connects to the address it checked (``send_address``), not to whatever
  the name resolves to a moment later.
- **Delivery**: the outbox (``persistence/webhooks.py``) records a pending delivery per URL when
  the event is stored; the worker processes' senders (``runtime/webhooks.py``) claim due ones
  (``FOR NO KEY UPDATE SKIP LOCKED`` on PostgreSQL, and a compare-and-set of ``next_attempt_at``
  everywhere, which is the claim's lease) and POST the body. 2xx: delivered. 408, 429, 5xx or
  no answer: tried again after ``retry_delay`` (``Retry-After`` honoured), up to
  ``ENACT_WEBHOOK_MAX_ATTEMPTS`` in all (about 21 hours with the defaults), then failed. Any
  other answer: failed at once. Every attempt is recorded (``WebhookAttempt``).
- **Signature**: ``Enact-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>``;
  ``verify_signature`` is what a receiver runs (it refuses timestamps more than 5 minutes off).

Signing is ``hmac`` of the standard library: the scheme is a line, and the Standard Webhooks
library signs another header format. Retries are rows with a due time, not a retry library's
loop: a delivery outlives the process that first tried it.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import json
import random
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from enact_platform.errors import InvalidInput, NotFound
from enact_platform.locks import locked
from executions.blueprints.tools import PrivateAddress, connect_address, host_matches, pinned
from executions.kernel import ids
from executions.kernel.events import EXECUTION_STATE_AFTER, EventType, iso_timestamp
from executions.models import (
    Execution,
    ExecutionEvent,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSigningSecret,
)
from executions.persistence.webhooks import WEBHOOK_EVENTS
from tenants.models import Tenant, TenantLimits
from tenants.secrets import decrypt, encrypt

SIGNATURE_HEADER = "Enact-Signature"
TOLERANCE_SECONDS = 300  # a receiver refuses a signature whose timestamp is further off than this
MAX_URL = 2000
RESPONSE_KEPT = 1000  # the first characters of an answer recorded with its attempt
LONGEST_DELAY = 6 * 3600.0
RETRY_FACTOR = 3.0
JITTER = 0.25  # each delay is drawn from ±25 % of its nominal length
RETRIED_STATUSES = frozenset({408, 429})
EDITABLE = ("url", "events", "description", "active")


def _field_error(field: str, problem: str) -> InvalidInput:
    return InvalidInput(f"{field}: {problem}", details={"field": field, "problem": problem})


# --- signatures ----------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Enact-Signature`` header of ``body`` sent at ``timestamp`` (Unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(
    secret: str, header: str, body: bytes, *, tolerance: int = TOLERANCE_SECONDS, now: float | None = None
) -> bool:
    """What a receiver runs on the raw body: True if one ``v1`` of ``header`` is the body's
    HMAC-SHA256 under ``secret`` and its ``t`` is within ``tolerance`` seconds of now (an older
    request replayed, or a newer one forged, is refused)."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields.get("t", [""])[0])
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, given) for given in fields.get("v1", []))


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


# --- hosts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    host: str
    port: int | None
    default_port: int


def _target(url: Any, field: str = "url") -> Target:
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise _field_error(field, f"an http or https URL of at most {MAX_URL} characters is required")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _field_error(field, f"not a valid URL: {url!r}") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise _field_error(field, f"an http or https URL with a host is required, not {url!r}")
    if parts.username is not None or parts.password is not None:
        raise _field_error(field, "a URL may not carry a user name or password")
    return Target(host, port, 443 if parts.scheme == "https" else 80)


def url_check(tenant_id: int, url: Any, *, field: str = "url") -> str:
    """``url`` if the tenant's tool policy allows its host, else a 400 naming ``field``."""
    _checked(tenant_id, url, field, resolve=False)
    return str(url)


def send_address(tenant_id: int, url: str) -> str | None:
    """Check ``url`` again before a send, its host's addresses looked up too (an OSError if that
    fails), and return the address to connect to: the one that was checked, so that a name which
    resolves elsewhere by the time the request connects (DNS rebinding) cannot take it to a
    private address. None when the URL's host is an address already or the policy names it
    exactly (the request then connects as the URL says)."""
    return _checked(tenant_id, url, "url", resolve=True)


def _checked(tenant_id: int, url: Any, field: str, *, resolve: bool) -> str | None:
    target = _target(url, field)
    patterns = list(TenantLimits.objects.filter(tenant_id=tenant_id).values_list("tool_allowed_domains", flat=True))
    allowed = [str(p) for p in (patterns[0] if patterns else None) or []]
    if not any(host_matches(target.host, target.port, p) for p in allowed):
        raise _field_error(field, f"host {target.host} is not in the tenant's allowed domains (its tool policy)")
    try:
        return connect_address(target.host, target.port, target.default_port, allowed, resolve=resolve)
    except PrivateAddress as refused:
        raise _field_error(field, str(refused)) from None


def _events_check(events: Any) -> list[str]:
    if not isinstance(events, list) or not events:
        raise _field_error("events", f"a non-empty list of: {', '.join(WEBHOOK_EVENTS)}")
    unknown = [e for e in events if e not in WEBHOOK_EVENTS]
    if unknown:
        raise _field_error("events", f"unknown events {unknown!r}; known: {', '.join(WEBHOOK_EVENTS)}")
    return list(dict.fromkeys(events))


# --- endpoints -----------------------------------------------------------------------------------


def webhook_list(*, tenant: Tenant) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(tenant=tenant)


def webhook_get(*, tenant: Tenant, webhook_id: Any) -> WebhookEndpoint:
    """The tenant's endpoint; unknown, malformed and other tenants' ids are alike not found."""
    if ids.is_valid_id(webhook_id, ids.IdKind.WEBHOOK):
        found = WebhookEndpoint.objects.filter(tenant=tenant, pk=webhook_id).first()
        if found is not None:
            return found
    raise NotFound("no such webhook")


def webhook_create(
    *, tenant: Tenant, url: Any, events: Any, description: str = "", active: bool = True
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (in plain text: shown once). Nothing is stored if refused."""
    events = _events_check(events)
    url = url_check(tenant.pk, url)
    secret = new_secret()
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant,
        url=url,
        events=events,
        description=description,
        active=active,
        secret_ciphertext=encrypt(secret),
    )
    return endpoint, secret


def webhook_update(*, tenant: Tenant, webhook_id: Any, **fields: Any) -> WebhookEndpoint:
    endpoint = webhook_get(tenant=tenant, webhook_id=webhook_id)
    unknown = set(fields) - set(EDITABLE)
    if unknown:
        raise InvalidInput(f"unknown fields: {', '.join(sorted(unknown))}")
    if "events" in fields:
        fields["events"] = _events_check(fields["events"])
    if "url" in fields:
        fields["url"] = url_check(tenant.pk, fields["url"])
    for name, value in fields.items():
        setattr(endpoint, name, value)
    endpoint.save()
    return endpoint


def webhook_delete(*, tenant: Tenant, webhook_id: Any) -> None:
    webhook_get(tenant=tenant, webhook_id=webhook_id).delete()


def webhook_rotate_secret(*, tenant: Tenant, webhook_id: Any) -> tuple[WebhookEndpoint, str]:
    """A new secret for the endpoint (shown once); the old one signs nothing more."""
    endpoint = webhook_get(tenant=tenant, webhook_id=webhook_id)
    secret = new_secret()
    endpoint.secret_ciphertext = encrypt(secret)
    endpoint.save(update_fields=["secret_ciphertext", "updated_at"])
    return endpoint, secret


def webhook_deliveries(*, tenant: Tenant, webhook_id: Any) -> QuerySet[WebhookDelivery]:
    endpoint = webhook_get(tenant=tenant, webhook_id=webhook_id)
    return WebhookDelivery.objects.filter(tenant=tenant, endpoint=endpoint).prefetch_related("attempt_log")


def webhooks_recent_deliveries(
    *, tenant: Tenant, webhook_ids: list[str], limit: int = 10
) -> dict[str, list[WebhookDelivery]]:
    """Each endpoint's latest deliveries, newest first, keyed by endpoint id: one query however
    many endpoints (each endpoint's rows numbered, the first ``limit`` kept), no attempts."""
    rows = (
        WebhookDelivery.objects.filter(tenant=tenant, endpoint_id__in=webhook_ids)
        .annotate(
            recent_rank=Window(
                RowNumber(), partition_by=[F("endpoint_id")], order_by=[F("created_at").desc(), F("id").desc()]
            )
        )
        .filter(recent_rank__lte=limit)
        .order_by("endpoint_id", "-created_at", "-id")
    )
    found: dict[str, list[WebhookDelivery]] = {webhook_id: [] for webhook_id in webhook_ids}
    for delivery in rows:
        found[delivery.endpoint_id].append(delivery)
    return found


def deliveries_list(
    *, tenant: Tenant, execution_id: str | None = None, state: str | None = None
) -> QuerySet[WebhookDelivery]:
    """Every delivery of the tenant (its webhooks' and its submissions' own), newest first."""
    rows = WebhookDelivery.objects.filter(tenant=tenant).prefetch_related("attempt_log")
    if execution_id is not None:
        rows = rows.filter(execution_id=execution_id)
    if state is not None:
        rows = rows.filter(state=state)
    return rows


def signing_secret_rotate(*, tenant: Tenant) -> str:
    """A new signing secret for the tenant's per-submission webhooks (shown once)."""
    secret = new_secret()
    WebhookSigningSecret.objects.update_or_create(tenant=tenant, defaults={"secret_ciphertext": encrypt(secret)})
    return secret


def _signing_secret(tenant_id: int) -> str:
    found = WebhookSigningSecret.objects.filter(tenant_id=tenant_id).values_list("secret_ciphertext", flat=True)
    if not found:
        # Made now if the tenant never asked for one: its receivers learn it by rotating it.
        WebhookSigningSecret.objects.get_or_create(
            tenant_id=tenant_id, defaults={"secret_ciphertext": encrypt(new_secret())}
        )
        found = WebhookSigningSecret.objects.filter(tenant_id=tenant_id).values_list("secret_ciphertext", flat=True)
    return decrypt(found[0])


def submission_webhook_check(*, tenant: Tenant, webhook: Any) -> str:
    """A submission's ``webhook``: its host is checked like an endpoint's (400 naming ``webhook``)."""
    return url_check(tenant.pk, webhook, field="webhook")


# --- backoff -------------------------------------------------------------------------------------


def retry_delay(failed_attempts: int, *, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``failed_attempts``-th failed attempt: ``ENACT_WEBHOOK_RETRY_SECONDS``
    times 3 for each earlier failure, at most 6 hours, with ±25 % jitter so receivers that came
    back are not hit by every sender at once."""
    nominal = min(LONGEST_DELAY, settings.ENACT_WEBHOOK_RETRY_SECONDS * RETRY_FACTOR ** max(0, failed_attempts - 1))
    return nominal * (rng or random).uniform(1 - JITTER, 1 + JITTER)


def retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds, or an HTTP date), at most 6 hours; None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(LONGEST_DELAY, float(value))
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return min(LONGEST_DELAY, max(0.0, (when - (now or timezone.now())).total_seconds()))


# --- sending -------------------------------------------------------------------------------------


def _lease() -> timedelta:
    """How long a claim holds: longer than any send (connect, write and read each time out)."""
    return timedelta(seconds=settings.ENACT_WEBHOOK_TIMEOUT_SECONDS * 4 + 30)


def deliveries_claim(*, limit: int = 8) -> list[tuple[str, datetime]]:
    """Claim up to ``limit`` due deliveries for this process: ``(id, lease)`` pairs; the lease is
    the ``next_attempt_at`` the claim set, which the send's record must still find."""
    now = timezone.now()
    lease = now + _lease()
    claimed: list[tuple[str, datetime]] = []
    with transaction.atomic():
        due = WebhookDelivery.objects.filter(state=WebhookDelivery.State.PENDING, next_attempt_at__lte=now)
        rows = list(
            locked(due.order_by("next_attempt_at", "id"), no_key=True, skip_locked=True).values_list(
                "id", "next_attempt_at"
            )[:limit]
        )
        for delivery_id, due_at in rows:
            # Compare and set: on SQLite (no row locks) two workers may read the same row; one wins.
            won = WebhookDelivery.objects.filter(
                pk=delivery_id, state=WebhookDelivery.State.PENDING, next_attempt_at=due_at
            ).update(next_attempt_at=lease)
            if won:
                claimed.append((delivery_id, lease))
    return claimed


def deliveries_next_due() -> datetime | None:
    return (
        WebhookDelivery.objects.filter(state=WebhookDelivery.State.PENDING)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )


def payload(delivery: WebhookDelivery) -> dict[str, Any]:
    """The body: the delivery, the event type, and the execution as the event left it."""
    execution = Execution.objects.get(pk=delivery.execution_id)
    state = EXECUTION_STATE_AFTER[EventType(delivery.event_type)].value
    body: dict[str, Any] = {
        "id": delivery.id,
        "type": delivery.event_type,
        "created_at": iso_timestamp(delivery.created_at),
        "execution": {
            "id": execution.pk,
            "state": state,
            "blueprint": execution.blueprint,
            "version": execution.blueprint_version,
            "origin": execution.origin,
            "metadata": execution.metadata,
            "created_at": iso_timestamp(execution.created_at),
            "ended_at": iso_timestamp(execution.ended_at) if execution.ended_at else None,
            "usage": execution.usage,
        },
    }
    if delivery.event_type == EventType.EXECUTION_END.value:
        body["execution"]["output"] = execution.output
    elif delivery.event_type == EventType.EXECUTION_FAILED.value:
        body["execution"]["error"] = execution.error
    elif delivery.event_type == EventType.EXECUTION_WAITING.value:
        data = ExecutionEvent.objects.filter(id=delivery.event_id).values_list("data", flat=True).first() or {}
        body["execution"]["wait"] = {"reason": data.get("reason"), "detail": data.get("detail")}
    return body


@dataclass
class Outcome:
    status_code: int | None = None
    response_body: str = ""
    error: str = ""
    retry_after: float | None = None
    refused: bool = False  # by the tool policy: no request was made


def _post(url: str, body: bytes, headers: dict[str, str], address: str | None = None) -> Outcome:
    """POST ``body`` to ``url``; connected to ``address`` when given (``send_address``), with the
    URL's host still the request's Host and, over TLS, the name sent and verified (SNI)."""
    # trust_env off: no proxy or .netrc of the worker's environment; redirects are not followed
    # (one could leave the allowed hosts): a 3xx is an answer like a 4xx.
    timeout = settings.ENACT_WEBHOOK_TIMEOUT_SECONDS
    url, headers, extensions = pinned(url, headers, address)  # no user info: a URL with one is refused
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        try:
            with client.stream("POST", url, content=body, headers=headers, extensions=extensions) as response:
                kept = b""
                for chunk in response.iter_bytes():
                    kept += chunk
                    if len(kept) >= RESPONSE_KEPT * 4:
                        break
                return Outcome(
                    status_code=response.status_code,
                    response_body=kept.decode(errors="replace")[:RESPONSE_KEPT],
                    retry_after=retry_after(response.headers.get("retry-after")),
                )
        except httpx.TimeoutException:
            return Outcome(error=f"no answer within {timeout} s")
        except httpx.HTTPError as exc:
            return Outcome(error=f"{type(exc).__name__}: {exc}"[:1000])


def delivery_send(delivery_id: str, lease: datetime, *, rng: random.Random | None = None) -> WebhookDelivery | None:
    """One attempt at a claimed delivery; records it and what comes next. None if the claim was
    lost meanwhile (another worker took the delivery after this one's lease ran out)."""
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.state != WebhookDelivery.State.PENDING or delivery.next_attempt_at != lease:
        return None  # deleted meanwhile (with its webhook or its execution), or taken over
    if delivery.payload is None:
        delivery.payload = payload(delivery)
        WebhookDelivery.objects.filter(pk=delivery_id).update(payload=delivery.payload)
    # Keys sorted: every retry sends the same bytes, whatever order the database kept them in
    # (PostgreSQL's jsonb reorders an object's keys).
    body = json.dumps(delivery.payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()
    started, clock = timezone.now(), time.monotonic()
    try:
        if delivery.endpoint is not None and not delivery.endpoint.active:
            raise InvalidInput("the webhook was switched off")
        address = send_address(delivery.tenant_id, delivery.url)
    except InvalidInput as exc:
        outcome = Outcome(error=f"not sent: {exc.message}", refused=True)
    except OSError as exc:
        outcome = Outcome(error=f"the host cannot be resolved: {exc}")
    else:
        if delivery.endpoint is not None:
            secret = decrypt(delivery.endpoint.secret_ciphertext)
        else:
            secret = _signing_secret(delivery.tenant_id)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Enact-Webhooks/1",
            "Enact-Delivery": delivery.id,
            "Enact-Event": delivery.event_type,
            SIGNATURE_HEADER: signature(secret, int(time.time()), body),
        }
        outcome = _post(delivery.url, body, headers, address)
    return _record(delivery, lease, outcome, started, time.monotonic() - clock, rng)


def _record(
    delivery: WebhookDelivery,
    lease: datetime,
    outcome: Outcome,
    started: datetime,
    seconds: float,
    rng: random.Random | None,
) -> WebhookDelivery | None:
    number = delivery.attempts + 1
    code = outcome.status_code
    fields: dict[str, Any] = {"attempts": number, "last_status": code, "last_error": outcome.error}
    now = timezone.now()
    if code is not None and 200 <= code < 300:
        fields.update(state=WebhookDelivery.State.DELIVERED, ended_at=now)
    elif (
        outcome.refused
        or (code is not None and code < 500 and code not in RETRIED_STATUSES)
        or number >= settings.ENACT_WEBHOOK_MAX_ATTEMPTS
    ):  # refused, an answer that a retry would not change, or the last attempt
        fields.update(state=WebhookDelivery.State.FAILED, ended_at=now)
    else:
        wait = outcome.retry_after if outcome.retry_after is not None else retry_delay(number, rng=rng)
        fields["next_attempt_at"] = now + timedelta(seconds=wait)
    with transaction.atomic():
        kept = WebhookDelivery.objects.filter(
            pk=delivery.pk, state=WebhookDelivery.State.PENDING, next_attempt_at=lease
        ).update(**fields)
        if not kept:
            return None
        WebhookAttempt.objects.create(
            delivery_id=delivery.pk,
            number=number,
            started_at=started,
            status_code=code,
            response_body=outcome.response_body,
            error=outcome.error,
            duration_ms=int(seconds * 1000),
        )
    delivery.refresh_from_db()
    return delivery
