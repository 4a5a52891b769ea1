"""Fair dispatch: which ready execution a free slot takes next (runtime/leases.py), and the
per-tenant cap on waiting executions (services/submit.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from django.utils import timezone

from enact_platform.errors import QuotaExceeded
from executions.models import Execution
from executions.runtime.leases import execution_claim_batch, execution_claim_next, tenants_in_fair_order
from executions.services.submit import execution_submit
from tenants.models import Tenant, TenantDailyUsage
from tenants.services import tenant_create, tenant_set_limits

pytestmark = pytest.mark.django_db

SLOW = {"steps": 1, "seconds": 1}


def flood(tenant: Tenant, count: int) -> list[str]:
    return [execution_submit(tenant=tenant, blueprint="demo.slow", input=SLOW)[0].pk for _ in range(count)]


def claim(count: int) -> list[Execution]:
    claimed = []
    for _ in range(count):
        execution = execution_claim_next(worker="w1")
        if execution is None:
            break
        claimed.append(execution)
    return claimed


def test_a_flood_submitted_first_does_not_hold_back_another_tenants_first_execution(
    tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]
) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 100})
    flood(tenant_a, 60)  # all of the flood first, then the quiet tenant: not interleaved
    quiet = flood(tenant_b, 2)
    order = [e.tenant_id for e in claim(6)]
    # The flood's oldest goes first (nobody runs yet: the oldest ready work breaks the tie), then
    # the quiet tenant, then turns: whoever runs fewer goes next.
    assert order == [tenant_a.pk, tenant_b.pk, tenant_a.pk, tenant_b.pk, tenant_a.pk, tenant_a.pk]
    assert Execution.objects.filter(pk__in=quiet, lease_owner="w1").count() == 2


def test_within_a_tenant_the_oldest_goes_first(tenant_a: Tenant, enqueued: list[str]) -> None:
    ids = flood(tenant_a, 4)
    assert [e.pk for e in claim(4)] == ids[:4]


def test_weights_share_the_slots(tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 100, "weight": 1})
    tenant_set_limits(tenant=tenant_b, changes={"max_concurrent_executions": 100, "weight": 3})
    flood(tenant_a, 40)
    flood(tenant_b, 40)
    shares = Counter(e.tenant_id for e in claim(20))
    assert shares == {tenant_a.pk: 5, tenant_b.pk: 15}


def test_each_tenant_stays_under_its_max_concurrent(tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 2})
    flood(tenant_a, 5)
    assert len(claim(5)) == 2
    assert tenants_in_fair_order() == []  # its work waits, and nobody else has any
    flood(tenant_b, 1)
    assert [e.tenant_id for e in claim(5)] == [tenant_b.pk]


def test_an_orphan_goes_first_and_past_the_tenants_limit(tenant_a: Tenant, enqueued: list[str]) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 1})
    queued, orphan = flood(tenant_a, 2)
    # Its worker died mid-run and the reaper cleared its lease: it holds its tenant's one slot.
    Execution.objects.filter(pk=orphan).update(state=Execution.State.RUNNING, lease_owner="")
    assert [e.pk for e in claim(3)] == [orphan]
    assert Execution.objects.get(pk=queued).lease_owner == ""


def test_paused_with_a_resume_asked_for_is_ready_and_without_it_is_not(tenant_a: Tenant, enqueued: list[str]) -> None:
    paused, resumed = flood(tenant_a, 2)
    Execution.objects.filter(pk__in=[paused, resumed]).update(state=Execution.State.PAUSED)
    Execution.objects.filter(pk=resumed).update(resume_requested=True)
    assert [e.pk for e in claim(3)] == [resumed]


def test_a_leased_execution_is_not_ready(tenant_a: Tenant, enqueued: list[str]) -> None:
    (held,) = flood(tenant_a, 1)
    Execution.objects.filter(pk=held).update(lease_owner="w0", lease_expires_at=timezone.now())
    assert claim(1) == []


def _usage(tenant: Tenant) -> int:
    return sum(TenantDailyUsage.objects.filter(tenant=tenant).values_list("executions", flat=True))


def test_past_max_queued_a_submission_is_refused_and_nothing_is_stored(
    tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]
) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_queued": 3})
    flood(tenant_a, 3)
    before = (Execution.objects.count(), _usage(tenant_a), len(enqueued))
    with pytest.raises(QuotaExceeded) as refused:
        execution_submit(tenant=tenant_a, blueprint="demo.slow", input=SLOW)
    assert refused.value.status == 429
    assert refused.value.details == {"limit": "max_queued", "queued": 3, "maximum": 3}
    assert (Execution.objects.count(), _usage(tenant_a), len(enqueued)) == before
    flood(tenant_b, 1)  # another tenant's cap is its own
    # Once one of them runs, there is room for one more.
    claim(1)
    flood(tenant_a, 1)


def test_the_fair_order_puts_whoever_runs_less_first(tenant_a: Tenant, enqueued: list[str]) -> None:
    other = tenant_create(slug="initech")
    flood(tenant_a, 2)
    flood(other, 1)
    orders: list[Any] = [tenants_in_fair_order()]
    claim(1)  # acme's oldest
    orders.append(tenants_in_fair_order())
    assert orders == [[tenant_a.pk, other.pk], [other.pk, tenant_a.pk]]


def test_a_batch_claims_one_tenants_oldest_up_to_its_free_slots_and_then_the_next_tenants(
    tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]
) -> None:
    tenant_set_limits(tenant=tenant_a, changes={"max_concurrent_executions": 3})
    flooded = flood(tenant_a, 10)
    quiet = flood(tenant_b, 1)
    first = execution_claim_batch(worker="w1", limit=20)
    assert [e.pk for e in first] == flooded[:3]  # the flood's oldest, as many as its limit lets run
    assert [e.pk for e in execution_claim_batch(worker="w1", limit=20)] == quiet
    assert execution_claim_batch(worker="w1", limit=20) == []
    assert Execution.objects.filter(lease_owner="w1").count() == 4
    assert all(e.claims == 1 and e.lease_owner == "w1" for e in first)
