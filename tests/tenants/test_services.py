from __future__ import annotations

from decimal import Decimal

import pytest

from enact_platform.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from tenants.models import ApiKey, Tenant, TenantDailyUsage, TenantLimits
from tenants.services import (
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    tenant_consume_execution_quota,
    tenant_create,
    tenant_set_limits,
)

pytestmark = pytest.mark.django_db


def test_a_new_tenant_gets_default_limits() -> None:
    tenant = tenant_create(slug="initech", name="Initech")
    limits = TenantLimits.objects.get(tenant=tenant)
    assert (tenant.slug, tenant.name, tenant.status) == ("initech", "Initech", "active")
    assert (limits.max_steps, limits.max_concurrent_executions, limits.max_cost_usd) == (1000, 5, Decimal("10.0000"))
    assert limits.pii_masking is False


@pytest.mark.parametrize("slug", ["", "Upper", "has space", "-dash", "x" * 64, "semi;colon"])
def test_bad_slugs_are_refused(slug: str) -> None:
    with pytest.raises(InvalidInput):
        tenant_create(slug=slug)
    assert Tenant.objects.count() == 0


def test_duplicate_slug_conflicts(tenant_a: Tenant) -> None:
    with pytest.raises(Conflict, match="already exists"):
        tenant_create(slug="acme")
    assert Tenant.objects.count() == 1
    assert TenantLimits.objects.count() == 1


def test_set_limits_validates_everything_before_saving_anything(tenant_a: Tenant) -> None:
    with pytest.raises(InvalidInput) as info:
        tenant_set_limits(tenant=tenant_a, changes={"max_steps": 10, "warning_threshold": 3.0})
    assert "warning_threshold" in info.value.details
    assert TenantLimits.objects.get(tenant=tenant_a).max_steps == 1000

    with pytest.raises(InvalidInput, match="unknown limits: color"):
        tenant_set_limits(tenant=tenant_a, changes={"color": "red"})

    limits = tenant_set_limits(tenant=tenant_a, changes={"max_steps": 10, "max_concurrent_executions": 2})
    assert (limits.max_steps, limits.max_concurrent_executions) == (10, 2)


def test_api_keys_are_shown_once_stored_hashed_and_revocable(tenant_a: Tenant, tenant_b: Tenant) -> None:
    key, raw = api_key_create(tenant=tenant_a, scope="write", name="ci")
    assert raw.startswith(key.prefix + "_")
    assert raw not in key.key_hash
    assert ApiKey.objects.filter(key_hash__contains=raw).count() == 0
    found = api_key_authenticate(raw=raw)
    assert found is not None
    assert (found.pk, found.tenant_id, found.can_write) == (key.pk, tenant_a.pk, True)
    assert found.last_used_at is not None

    assert api_key_authenticate(raw=raw + "x") is None
    assert api_key_authenticate(raw="not-a-key") is None
    with pytest.raises(NotFound):
        api_key_revoke(tenant=tenant_b, key_id=key.pk)
    assert api_key_authenticate(raw=raw) is not None

    api_key_revoke(tenant=tenant_a, key_id=key.pk)
    assert api_key_authenticate(raw=raw) is None


def test_unknown_scope_is_refused(tenant_a: Tenant) -> None:
    with pytest.raises(InvalidInput, match="unknown scope"):
        api_key_create(tenant=tenant_a, scope="admin")
    assert ApiKey.objects.count() == 0


def test_daily_execution_quota_is_consumed_atomically(tenant_a: Tenant) -> None:
    limits = tenant_set_limits(tenant=tenant_a, changes={"executions_per_day": 2})
    tenant_consume_execution_quota(tenant=tenant_a, limits=limits)
    tenant_consume_execution_quota(tenant=tenant_a, limits=limits)
    with pytest.raises(QuotaExceeded, match="execution quota") as info:
        tenant_consume_execution_quota(tenant=tenant_a, limits=limits)
    assert info.value.details == {"limit": "executions_per_day", "maximum": 2}
    assert TenantDailyUsage.objects.get(tenant=tenant_a).executions == 2


def test_spent_token_quota_refuses(tenant_a: Tenant) -> None:
    limits = tenant_set_limits(tenant=tenant_a, changes={"tokens_per_day": 100})
    tenant_consume_execution_quota(tenant=tenant_a, limits=limits)
    TenantDailyUsage.objects.filter(tenant=tenant_a).update(tokens=100)
    with pytest.raises(QuotaExceeded, match="token quota"):
        tenant_consume_execution_quota(tenant=tenant_a, limits=limits)
    assert TenantDailyUsage.objects.get(tenant=tenant_a).executions == 1
