"""Webhooks end to end: real worker clusters (django-q2) send to a real HTTP receiver on a thread."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from executions.models import Execution, WebhookAttempt, WebhookDelivery
from executions.runtime.run import execution_run
from executions.services import webhooks
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import tenant_set_limits
from tests.webhook_receiver import receiver

from ..conftest import wait_until
from .test_processes import Cluster, _log

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    started: list[Cluster] = []

    def start(**options: Any) -> Cluster:
        started.append(Cluster(tmp_path / f"cluster-{len(started)}.log", **options))
        return started[-1]

    yield start
    for running in started:
        running.stop()


FAST = {"ENACT_WEBHOOK_RETRY_SECONDS": "0.3", "ENACT_WEBHOOK_POLL_SECONDS": "0.2"}


def states() -> dict[str, int]:
    return dict(Counter(WebhookDelivery.objects.values_list("state", flat=True)))


def test_a_completed_execution_is_one_signed_post_to_the_receiver(
    tenant_a: Tenant, cluster: Callable[..., Cluster]
) -> None:
    with receiver() as hooks:
        tenant_set_limits(tenant=tenant_a, changes={"tool_allowed_domains": [hooks.host]})
        endpoint, secret = webhooks.webhook_create(tenant=tenant_a, url=hooks.url, events=["data-execution-end"])
        workers = cluster(extra=FAST)
        execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 2})
        assert wait_until(lambda: states() == {"delivered": 1}, timeout=60), _log(workers)
        assert wait_until(lambda: hooks.count() >= 1, timeout=5)
        (request,) = hooks.received
        assert webhooks.verify_signature(secret, request.headers["enact-signature"], request.body)
        body = json.loads(request.body)
        assert (body["type"], body["execution"]["id"], body["execution"]["state"]) == (
            "data-execution-end",
            execution.pk,
            "completed",
        )
        assert body["execution"]["output"] == 2
        delivery = WebhookDelivery.objects.get()
        assert (delivery.endpoint_id, delivery.attempts, request.headers["enact-delivery"]) == (
            endpoint.pk,
            1,
            delivery.pk,
        )


def test_a_receiver_that_answers_500_twice_gets_three_attempts_and_the_delivery_ends_delivered(
    tenant_a: Tenant, cluster: Callable[..., Cluster]
) -> None:
    with receiver([(500, {}), (500, {})]) as hooks:
        tenant_set_limits(tenant=tenant_a, changes={"tool_allowed_domains": [hooks.host]})
        secret = webhooks.signing_secret_rotate(tenant=tenant_a)
        workers = cluster(extra=FAST)
        # The submission's own webhook, signed with the tenant's signing secret.
        execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1}, webhook=hooks.url)
        assert wait_until(lambda: states() == {"delivered": 1}, timeout=60), _log(workers)
        delivery = WebhookDelivery.objects.get()
        assert delivery.attempts == 3
        log = list(WebhookAttempt.objects.filter(delivery=delivery).values_list("number", "status_code"))
        assert log == [(1, 500), (2, 500), (3, 200)]
        assert hooks.count() == 3
        assert len({r.body for r in hooks.received}) == 1
        for request in hooks.received:
            assert webhooks.verify_signature(secret, request.headers["enact-signature"], request.body)


@pytest.mark.skipif(
    not str(settings.DATABASES["default"]["ENGINE"]).endswith("postgresql"), reason="PostgreSQL's locks"
)
def test_two_clusters_on_postgresql_never_send_one_delivery_twice(
    tenant_a: Tenant, cluster: Callable[..., Cluster], enqueued: list[str]
) -> None:
    n = 40
    with receiver() as hooks:
        tenant_set_limits(
            tenant=tenant_a, changes={"tool_allowed_domains": [hooks.host], "max_concurrent_executions": 50}
        )
        webhooks.webhook_create(tenant=tenant_a, url=hooks.url, events=["data-execution-end"])
        # Run here, before any worker starts: both clusters find every delivery due at once.
        ids = [execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})[0].pk for _ in range(n)]
        for execution_id in ids:
            assert execution_run(execution_id) == "completed"
        assert states() == {"pending": n}
        first, second = cluster(extra=FAST), cluster(extra=FAST)
        done = wait_until(lambda: states() == {"delivered": n}, timeout=120)
        assert done, (states(), _log(first), _log(second))
        sent = Counter(r.headers["enact-delivery"] for r in hooks.received)
        assert len(sent) == n
        assert set(sent.values()) == {1}, [d for d, c in sent.items() if c > 1]
        assert set(WebhookDelivery.objects.values_list("execution_id", flat=True)) == set(ids)
        assert set(WebhookDelivery.objects.values_list("attempts", flat=True)) == {1}
        assert Execution.objects.filter(state="completed").count() == n
