"""Webhooks: signatures and their replay window, the backoff schedule, the outbox (a delivery per
URL when an event is stored), and sending to a real local receiver: delivered, retried, given up,
refused by the tool policy, claimed once."""

from __future__ import annotations

import json
import random
import time
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import httpcore
import pytest
from django.utils import timezone

from executions.models import Execution, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from executions.runtime.run import execution_run
from executions.services import webhooks as svc
from executions.services.controls import execution_cancel
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.secrets import decrypt
from tenants.services import tenant_set_limits
from tests.addresses import connections_to_local, resolving
from tests.webhook_receiver import receiver

SECRET = "whsec_test"


# --- signatures ----------------------------------------------------------------------------------


def test_a_signature_verifies_for_its_body_and_secret_only() -> None:
    body = b'{"id":"whd_1","type":"data-execution-end"}'
    now = 1_800_000_000
    header = svc.signature(SECRET, now, body)
    assert header.startswith(f"t={now},v1=")
    assert svc.verify_signature(SECRET, header, body, now=now)
    assert not svc.verify_signature(SECRET, header, body + b" ", now=now)
    assert not svc.verify_signature("whsec_other", header, body, now=now)
    # The timestamp is signed: moving it breaks the signature.
    moved = header.replace(f"t={now}", f"t={now + 1}")
    assert not svc.verify_signature(SECRET, moved, body, now=now)
    assert not svc.verify_signature(SECRET, "v1=abc", body, now=now)
    assert not svc.verify_signature(SECRET, "t=soon,v1=abc", body, now=now)


def test_a_signature_older_or_newer_than_five_minutes_is_refused_as_a_replay() -> None:
    body = b"{}"
    sent = 1_800_000_000
    header = svc.signature(SECRET, sent, body)
    assert svc.verify_signature(SECRET, header, body, now=sent + 300)
    assert not svc.verify_signature(SECRET, header, body, now=sent + 301)
    assert svc.verify_signature(SECRET, header, body, now=sent - 300)
    assert not svc.verify_signature(SECRET, header, body, now=sent - 301)


def test_one_of_several_v1_signatures_is_enough() -> None:
    body = b"{}"
    header = svc.signature(SECRET, 100, body)
    both = f"{header},v1={'0' * 64}"
    assert svc.verify_signature(SECRET, both, body, now=100)


# --- backoff -------------------------------------------------------------------------------------


def test_the_backoff_triples_from_ten_seconds_to_six_hours_with_jitter_and_spans_about_a_day(
    settings: Any,
) -> None:
    settings.ENACT_WEBHOOK_RETRY_SECONDS = 10.0
    settings.ENACT_WEBHOOK_MAX_ATTEMPTS = 11
    nominal = [10, 30, 90, 270, 810, 2430, 7290, 21600, 21600, 21600]
    rng = random.Random(7)
    delays = [svc.retry_delay(n, rng=rng) for n in range(1, 11)]
    for delay, expected in zip(delays, nominal, strict=True):
        assert expected * 0.75 <= delay <= expected * 1.25
    assert len({round(d / e, 3) for d, e in zip(delays, nominal, strict=True)}) > 5  # jittered, not fixed
    # Ten waits between eleven attempts: from about 16 to about 26 hours, 21 nominally.
    assert 16 * 3600 < sum(delays) < 27 * 3600
    assert sum(nominal) == pytest.approx(21 * 3600, rel=0.01)


def test_retry_after_in_seconds_or_as_a_date_capped_at_six_hours() -> None:
    now = timezone.now().replace(microsecond=0)
    assert svc.retry_after("120") == 120
    assert svc.retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now=now) == 90
    assert svc.retry_after("999999") == 6 * 3600
    assert svc.retry_after("soon") is None
    assert svc.retry_after(None) is None


# --- the outbox ----------------------------------------------------------------------------------


def allow(tenant: Tenant, *hosts: str) -> None:
    tenant_set_limits(tenant=tenant, changes={"tool_allowed_domains": list(hosts)})


def endpoint(tenant: Tenant, url: str, events: list[str] | None = None) -> tuple[WebhookEndpoint, str]:
    return svc.webhook_create(tenant=tenant, url=url, events=events or ["data-execution-end"])


def run(tenant: Tenant, blueprint: str = "demo.chain", input: Any = None, **extra: Any) -> Execution:
    execution, _ = execution_submit(
        tenant=tenant, blueprint=blueprint, input={"n": 1} if input is None else input, **extra
    )
    execution_run(execution.pk)
    execution.refresh_from_db()
    return execution


@pytest.mark.django_db(transaction=True)
def test_an_ended_execution_records_one_pending_delivery_per_subscribed_url(
    tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]
) -> None:
    allow(tenant_a, "hooks.example.com")
    allow(tenant_b, "hooks.example.com")
    ended, _ = endpoint(tenant_a, "https://hooks.example.com/end")
    failed_only, _ = endpoint(tenant_a, "https://hooks.example.com/failed", ["data-execution-failed"])
    inactive, _ = endpoint(tenant_a, "https://hooks.example.com/off")
    svc.webhook_update(tenant=tenant_a, webhook_id=inactive.pk, active=False)
    endpoint(tenant_b, "https://hooks.example.com/other")
    execution = run(tenant_a)
    assert execution.state == "completed"
    deliveries = list(WebhookDelivery.objects.all())
    assert [(d.endpoint_id, d.execution_id, d.event_type, d.state) for d in deliveries] == [
        (ended.pk, execution.pk, "data-execution-end", "pending")
    ]
    assert deliveries[0].tenant_id == tenant_a.pk
    assert deliveries[0].event_id.startswith("evt_")
    assert not WebhookDelivery.objects.filter(endpoint=failed_only).exists()


@pytest.mark.django_db(transaction=True)
def test_waiting_and_cancelled_are_recorded_and_a_submission_webhook_gets_the_end_only(
    tenant_a: Tenant, enqueued: list[str]
) -> None:
    allow(tenant_a, "hooks.example.com")
    every, _ = endpoint(
        tenant_a,
        "https://hooks.example.com/all",
        ["data-execution-waiting", "data-execution-cancelled", "data-execution-end"],
    )
    execution = run(tenant_a, "demo.approval", {}, webhook="https://hooks.example.com/mine")
    assert execution.state == "waiting"
    assert list(WebhookDelivery.objects.values_list("url", "event_type")) == [
        ("https://hooks.example.com/all", "data-execution-waiting")
    ]
    execution_cancel(tenant=tenant_a, execution_id=execution.pk, reason="no")
    execution_run(execution.pk)
    assert Execution.objects.get(pk=execution.pk).state == "cancelled"
    assert sorted(WebhookDelivery.objects.values_list("url", "event_type", "endpoint_id")) == [
        ("https://hooks.example.com/all", "data-execution-cancelled", every.pk),
        ("https://hooks.example.com/all", "data-execution-waiting", every.pk),
        ("https://hooks.example.com/mine", "data-execution-cancelled", None),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_submission_webhook_that_is_an_endpoints_url_is_one_delivery_signed_by_the_endpoint(
    tenant_a: Tenant, enqueued: list[str]
) -> None:
    with receiver() as hooks:
        allow(tenant_a, hooks.host)
        registered, secret = endpoint(tenant_a, hooks.url)
        run(tenant_a, webhook=hooks.url)
        (delivery,) = WebhookDelivery.objects.all()
        assert delivery.endpoint_id == registered.pk
        sent = send_due()
        assert [d.state for d in sent] == ["delivered"]
        (request,) = hooks.received
        assert svc.verify_signature(secret, request.headers["enact-signature"], request.body)


# --- sending -------------------------------------------------------------------------------------


def send_due() -> list[WebhookDelivery]:
    """Claim and send what is due now, as a worker's sender does."""
    sent = []
    for delivery_id, lease in svc.deliveries_claim(limit=100):
        result = svc.delivery_send(delivery_id, lease)
        assert result is not None
        sent.append(result)
    return sent


def make_due(delivery: WebhookDelivery) -> None:
    WebhookDelivery.objects.filter(pk=delivery.pk).update(next_attempt_at=timezone.now())


@pytest.mark.django_db(transaction=True)
def test_a_delivery_is_a_signed_post_of_the_execution_as_it_ended(tenant_a: Tenant, enqueued: list[str]) -> None:
    with receiver() as hooks:
        allow(tenant_a, hooks.host)
        registered, secret = endpoint(tenant_a, hooks.url)
        assert decrypt(WebhookEndpoint.objects.get(pk=registered.pk).secret_ciphertext) == secret
        execution = run(tenant_a, input={"n": 3})
        (delivery,) = send_due()
        assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)
        (request,) = hooks.received
        assert request.path == "/hooks"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["enact-delivery"] == delivery.pk
        assert request.headers["enact-event"] == "data-execution-end"
        assert svc.verify_signature(secret, request.headers["enact-signature"], request.body)
        body = json.loads(request.body)
        assert body["id"] == delivery.pk
        assert body["type"] == "data-execution-end"
        assert body["created_at"]
        assert {k: body["execution"][k] for k in ("id", "state", "blueprint", "output")} == {
            "id": execution.pk,
            "state": "completed",
            "blueprint": "demo.chain",
            "output": 3,
        }
        (attempt,) = WebhookAttempt.objects.filter(delivery_id=delivery.pk)
        assert (attempt.number, attempt.status_code, attempt.response_body, attempt.error) == (1, 200, "answer 200", "")
        assert send_due() == []  # delivered: never sent again


@pytest.mark.django_db(transaction=True)
def test_5xx_and_429_are_retried_honouring_retry_after_until_a_2xx(
    tenant_a: Tenant, enqueued: list[str], settings: Any
) -> None:
    settings.ENACT_WEBHOOK_RETRY_SECONDS = 10.0
    answers = [(500, {}), (429, {"Retry-After": "120"}), (503, {}), (200, {})]
    with receiver(answers) as hooks:
        allow(tenant_a, hooks.host)
        endpoint(tenant_a, hooks.url)
        run(tenant_a)
        (delivery,) = send_due()
        assert (delivery.state, delivery.last_status) == ("pending", 500)
        wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
        assert 7 < wait <= 12.5  # 10 s ± 25 %
        assert send_due() == []  # not due yet
        make_due(delivery)
        (delivery,) = send_due()
        assert (delivery.state, delivery.last_status) == ("pending", 429)
        assert 118 < (delivery.next_attempt_at - timezone.now()).total_seconds() <= 120  # Retry-After
        make_due(delivery)
        send_due()
        make_due(delivery)
        (delivery,) = send_due()
        assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 4, 200)
        log = list(WebhookAttempt.objects.filter(delivery_id=delivery.pk).values_list("number", "status_code"))
        assert log == [(1, 500), (2, 429), (3, 503), (4, 200)]
        # Every retry sends the same body, signed afresh.
        assert len({r.body for r in hooks.received}) == 1


@pytest.mark.django_db(transaction=True)
def test_a_4xx_fails_at_once_and_the_last_attempt_gives_up(
    tenant_a: Tenant, enqueued: list[str], settings: Any
) -> None:
    settings.ENACT_WEBHOOK_MAX_ATTEMPTS = 2
    with receiver([(404, {}), (500, {}), (500, {})]) as hooks:
        allow(tenant_a, hooks.host)
        endpoint(tenant_a, hooks.url)
        run(tenant_a)
        (delivery,) = send_due()
        assert (delivery.state, delivery.attempts, delivery.last_status) == ("failed", 1, 404)
        assert delivery.ended_at is not None
        run(tenant_a)
        (delivery,) = send_due()
        assert delivery.state == "pending"
        make_due(delivery)
        (delivery,) = send_due()
        assert (delivery.state, delivery.attempts) == ("failed", 2)
        assert hooks.count() == 3


@pytest.mark.django_db(transaction=True)
def test_no_answer_is_retried_with_the_error_recorded(tenant_a: Tenant, enqueued: list[str]) -> None:
    with receiver() as hooks:
        allow(tenant_a, hooks.host)
        endpoint(tenant_a, hooks.url)
    # The receiver is gone: nothing listens on its port.
    run(tenant_a)
    (delivery,) = send_due()
    assert (delivery.state, delivery.last_status) == ("pending", None)
    (attempt,) = WebhookAttempt.objects.filter(delivery_id=delivery.pk)
    assert "ConnectError" in attempt.error


@pytest.mark.django_db(transaction=True)
def test_a_host_the_policy_no_longer_allows_is_refused_at_delivery_without_a_request(
    tenant_a: Tenant, enqueued: list[str]
) -> None:
    with receiver() as hooks:
        allow(tenant_a, hooks.host)
        endpoint(tenant_a, hooks.url)
        run(tenant_a)
        allow(tenant_a, "hooks.example.com")
        (delivery,) = send_due()
        assert delivery.state == "failed"
        assert "not in the tenant's allowed domains" in delivery.last_error
        assert hooks.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_webhook_switched_off_after_the_event_is_not_sent_to(tenant_a: Tenant, enqueued: list[str]) -> None:
    with receiver() as hooks:
        allow(tenant_a, hooks.host)
        registered, _ = endpoint(tenant_a, hooks.url)
        run(tenant_a)
        svc.webhook_update(tenant=tenant_a, webhook_id=registered.pk, active=False)
        (delivery,) = send_due()
        assert (delivery.state, delivery.last_error) == ("failed", "not sent: the webhook was switched off")
        assert hooks.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_loopback_host_allowed_only_by_a_wildcard_is_never_sent_to(tenant_a: Tenant, enqueued: list[str]) -> None:
    with receiver() as hooks:
        allow(tenant_a, "*.localhost")
        # Registration refuses it already (localhost is loopback, named by a wildcard only) ...
        with pytest.raises(svc.InvalidInput, match="private or loopback"):
            endpoint(tenant_a, f"http://hooks.localhost:{hooks.port}/hooks")
        # ... and a submission's webhook likewise.
        with pytest.raises(svc.InvalidInput, match="private or loopback"):
            execution_submit(
                tenant=tenant_a, blueprint="demo.chain", input={"n": 1}, webhook=f"http://a.localhost:{hooks.port}/"
            )
        assert not Execution.objects.exists()
        assert hooks.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_name_that_resolves_to_a_private_address_is_refused_when_sent_to(
    tenant_a: Tenant, enqueued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    allow(tenant_a, "*.example.com")
    endpoint(tenant_a, "https://internal.example.com/hooks")  # not resolved at registration
    run(tenant_a)
    looked_up = resolving(monkeypatch, "internal.example.com", ["10.0.0.5"])
    (delivery,) = send_due()
    assert looked_up == ["internal.example.com"]
    assert delivery.state == "failed"
    assert "private or loopback" in delivery.last_error
    assert WebhookAttempt.objects.get(delivery_id=delivery.pk).status_code is None


@pytest.mark.django_db(transaction=True)
def test_a_send_connects_to_the_address_it_checked_not_to_a_later_answer_of_the_name(
    tenant_a: Tenant, enqueued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # DNS rebinding: the name answers a public address when the send is checked and a loopback
    # one a moment later, when the connection would look it up again.
    allow(tenant_a, "*.example.com")
    with receiver() as hooks:
        endpoint(tenant_a, f"http://rebind.example.com:{hooks.port}/hooks")
        run(tenant_a)
        looked_up = resolving(monkeypatch, "rebind.example.com", ["93.184.216.34", "127.0.0.1"])
        connected = connections_to_local(monkeypatch)  # the receiver listens on 127.0.0.1
        (delivery,) = send_due()
        assert delivery.state == "delivered", delivery.last_error
        assert looked_up == ["rebind.example.com"]  # once, by the check
        assert connected == ["93.184.216.34"]  # the checked address, not the name
        (received,) = hooks.received
        assert received.headers["host"] == f"rebind.example.com:{hooks.port}"


def test_over_tls_a_send_to_the_checked_address_still_names_and_verifies_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    class Stream:
        def start_tls(self, ssl_context: Any, server_hostname: str | None = None, timeout: Any = None) -> Any:
            seen["server_hostname"] = server_hostname
            seen["verifies"] = ssl_context.check_hostname
            raise httpcore.ConnectError("stopped here: the handshake is what this test looks at")

        def close(self) -> None:
            pass

    def connect(backend: Any, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        seen["host"], seen["port"] = host, port
        return Stream()

    monkeypatch.setattr(httpcore._backends.sync.SyncBackend, "connect_tcp", connect)
    outcome = svc._post("https://hooks.example.com/end", b"{}", {}, "93.184.216.34")
    assert "stopped here" in outcome.error
    assert seen == {"host": "93.184.216.34", "port": 443, "server_hostname": "hooks.example.com", "verifies": True}


@pytest.mark.django_db(transaction=True)
def test_a_due_delivery_is_claimed_once(tenant_a: Tenant, enqueued: list[str]) -> None:
    allow(tenant_a, "hooks.example.com")
    endpoint(tenant_a, "https://hooks.example.com/end")
    run(tenant_a)
    first = svc.deliveries_claim()
    assert len(first) == 1
    assert svc.deliveries_claim() == []  # its lease holds it
    (delivery_id, lease) = first[0]
    # A lease that ran out lets another worker take it; the first one's record is then refused.
    WebhookDelivery.objects.filter(pk=delivery_id).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    (second,) = svc.deliveries_claim()
    assert second[0] == delivery_id
    assert svc.delivery_send(delivery_id, lease) is None
    assert not WebhookAttempt.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_claimed_delivery_whose_webhook_was_deleted_meanwhile_is_dropped(
    tenant_a: Tenant, enqueued: list[str]
) -> None:
    allow(tenant_a, "hooks.example.com")
    registered, _ = endpoint(tenant_a, "https://hooks.example.com/end")
    run(tenant_a)
    ((delivery_id, lease),) = svc.deliveries_claim()
    svc.webhook_delete(tenant=tenant_a, webhook_id=registered.pk)
    assert svc.delivery_send(delivery_id, lease) is None
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_submission_webhook_is_signed_with_the_tenants_signing_secret(tenant_a: Tenant, enqueued: list[str]) -> None:
    with receiver() as hooks:
        allow(tenant_a, hooks.host)
        secret = svc.signing_secret_rotate(tenant=tenant_a)
        execution = run(tenant_a, webhook=hooks.url)
        assert execution.webhook == hooks.url
        (delivery,) = send_due()
        assert (delivery.state, delivery.endpoint_id) == ("delivered", None)
        (request,) = hooks.received
        assert svc.verify_signature(secret, request.headers["enact-signature"], request.body)
        assert abs(int(request.headers["enact-signature"].split(",")[0][2:]) - time.time()) < 60
