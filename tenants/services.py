"""Writes for tenants: creation, limits, memberships, API keys, and quota consumption."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from enact_platform.errors import Conflict, InvalidInput, NotFound, QuotaExceeded
from enact_platform.locks import locked
from tenants import secrets
from tenants.models import (
    ApiKey,
    Membership,
    Tenant,
    TenantDailyUsage,
    TenantLimits,
    TenantSecret,
    generate_api_key,
    hash_api_key,
)

_SLUG = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

LIMIT_FIELDS = tuple(
    f.name for f in TenantLimits._meta.get_fields() if getattr(f, "concrete", False) and f.name != "tenant"
)


@transaction.atomic
def tenant_create(*, slug: str, name: str = "") -> Tenant:
    """Create a tenant with default limits."""
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise InvalidInput(f"invalid tenant slug {slug!r}: use lowercase letters, digits and dashes")
    try:
        with transaction.atomic():
            tenant = Tenant.objects.create(slug=slug, name=name or slug)
    except IntegrityError:
        raise Conflict(f"tenant {slug!r} already exists") from None
    TenantLimits.objects.create(tenant=tenant)
    return tenant


@transaction.atomic
def tenant_set_limits(*, tenant: Tenant, changes: dict[str, Any]) -> TenantLimits:
    """Change some limits; all are validated before any is saved."""
    unknown = sorted(set(changes) - set(LIMIT_FIELDS))
    if unknown:
        raise InvalidInput(f"unknown limits: {', '.join(unknown)}", details={"allowed": list(LIMIT_FIELDS)})
    limits = locked(TenantLimits.objects.filter(tenant=tenant)).get()
    for field, value in changes.items():
        setattr(limits, field, value)
    try:
        limits.full_clean()
    except ValidationError as exc:
        raise InvalidInput("invalid limits", details=exc.message_dict) from None
    limits.save(update_fields=list(changes))
    return limits


def tenant_set_status(*, tenant: Tenant, status: str) -> Tenant:
    if status not in Tenant.Status.values:
        raise InvalidInput(f"unknown status {status!r}")
    Tenant.objects.filter(pk=tenant.pk).update(status=status)
    tenant.status = status
    return tenant


def membership_set(*, tenant: Tenant, user: User, role: str) -> Membership:
    if role not in Membership.Role.values:
        raise InvalidInput(f"unknown role {role!r}")
    membership, _ = Membership.objects.update_or_create(tenant=tenant, user=user, defaults={"role": role})
    return membership


def api_key_create(*, tenant: Tenant, scope: str = ApiKey.Scope.READ, name: str = "") -> tuple[ApiKey, str]:
    """A new key; the raw key is returned once and never stored."""
    if scope not in ApiKey.Scope.values:
        raise InvalidInput(f"unknown scope {scope!r}: use read or write")
    raw, prefix = generate_api_key()
    key = ApiKey.objects.create(tenant=tenant, scope=scope, name=name[:100], prefix=prefix, key_hash=hash_api_key(raw))
    return key, raw


def api_key_revoke(*, tenant: Tenant, key_id: int) -> ApiKey:
    key = ApiKey.objects.filter(tenant=tenant, pk=key_id).first()
    if key is None:
        raise NotFound("API key not found")
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db()
    return key


_LAST_USED_GRANULARITY = timedelta(minutes=1)


def api_key_authenticate(*, raw: str) -> ApiKey | None:
    """The active key for ``raw``, or ``None``. Records use at most once a minute per key."""
    if not isinstance(raw, str) or not raw.startswith("enact_") or len(raw) > 200:
        return None
    key = ApiKey.objects.select_related("tenant").filter(key_hash=hash_api_key(raw), revoked_at__isnull=True).first()
    if key is None:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > _LAST_USED_GRANULARITY:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def _today_row(tenant: Tenant) -> TenantDailyUsage:
    day = timezone.now().date()
    row = TenantDailyUsage.objects.filter(tenant=tenant, day=day).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return TenantDailyUsage.objects.create(tenant=tenant, day=day)
    except IntegrityError:  # another submission created it first
        return TenantDailyUsage.objects.get(tenant=tenant, day=day)


def tenant_consume_execution_quota(*, tenant: Tenant, limits: TenantLimits) -> None:
    """Count one execution against today's quota, refusing if the day's quotas are spent.

    The checks and the increment are one conditional UPDATE, so concurrent submissions can never
    overshoot; only after a refusal is the row read, to say which quota it was."""
    rows = TenantDailyUsage.objects.filter(tenant=tenant, day=timezone.now().date())
    if limits.executions_per_day is not None:
        rows = rows.filter(executions__lt=limits.executions_per_day)
    if limits.tokens_per_day is not None:
        rows = rows.filter(tokens__lt=limits.tokens_per_day)
    if limits.cost_per_day_usd is not None:
        rows = rows.filter(cost_usd__lt=limits.cost_per_day_usd)
    if rows.update(executions=F("executions") + 1):
        return
    # Nothing counted: the day's row is new (make it, then try once more), or a quota is spent.
    row = _today_row(tenant)
    if rows.update(executions=F("executions") + 1):
        return
    row.refresh_from_db()
    if limits.tokens_per_day is not None and row.tokens >= limits.tokens_per_day:
        raise QuotaExceeded(
            "today's token quota is spent",
            details={"limit": "tokens_per_day", "used": row.tokens, "maximum": limits.tokens_per_day},
        )
    if limits.cost_per_day_usd is not None and row.cost_usd >= limits.cost_per_day_usd:
        raise QuotaExceeded(
            "today's cost quota is spent",
            details={"limit": "cost_per_day_usd", "used": str(row.cost_usd), "maximum": str(limits.cost_per_day_usd)},
        )
    raise QuotaExceeded(
        "today's execution quota is spent",
        details={"limit": "executions_per_day", "maximum": limits.executions_per_day},
    )


def tenant_record_usage(*, tenant_id: int, tokens: int, cost_usd: float) -> None:
    """Add tokens and cost to today's totals (called as usage events are stored)."""
    if tokens <= 0 and cost_usd <= 0:
        return
    tenant = Tenant(pk=tenant_id)
    row = _today_row(tenant)
    TenantDailyUsage.objects.filter(pk=row.pk).update(
        tokens=F("tokens") + max(0, int(tokens)), cost_usd=F("cost_usd") + Decimal(str(max(0.0, cost_usd)))
    )


def tenant_reserve_storage(*, tenant_id: int, size: int, maximum: int | None) -> bool:
    """Reserve ``size`` bytes of the tenant's storage quota; False if it would not fit."""
    rows = Tenant.objects.filter(pk=tenant_id)
    if maximum is not None:
        rows = rows.filter(Q(storage_bytes__lte=maximum - size))
    return rows.update(storage_bytes=F("storage_bytes") + size) == 1


# --- secrets -------------------------------------------------------------------------------------

SECRET_MAX_CHARS = 8192


def tenant_secret_set(*, tenant: Tenant, name: str, value: str) -> TenantSecret:
    """Store (or replace) a secret, encrypted. The value is never readable through the platform again."""
    if not isinstance(value, str) or not value or len(value) > SECRET_MAX_CHARS:
        raise InvalidInput(f"a secret's value must be text of 1 to {SECRET_MAX_CHARS} characters")
    if not all(32 <= ord(c) < 127 for c in value):
        # It travels in HTTP headers, and a request that refuses it would quote it in its error.
        raise InvalidInput("a secret's value must be printable ASCII (no line breaks or control characters)")
    secret = TenantSecret.objects.filter(tenant=tenant, name=name).first() or TenantSecret(tenant=tenant, name=name)
    try:
        secret.full_clean(exclude=["ciphertext", "tenant"], validate_unique=False)
    except ValidationError as exc:
        raise InvalidInput("invalid secret", details=exc.message_dict) from None
    secret.ciphertext = secrets.encrypt(value)
    secret.save()
    return secret


def tenant_secret_delete(*, tenant: Tenant, name: str) -> None:
    deleted, _ = TenantSecret.objects.filter(tenant=tenant, name=name).delete()
    if not deleted:
        raise NotFound(f"tenant {tenant.slug} has no secret named {name!r}")


def tenant_secrets_plain(*, tenant_id: int, names: set[str]) -> dict[str, str]:
    """The named secrets of a tenant, decrypted, for a worker about to run nodes that use them."""
    rows = TenantSecret.objects.filter(tenant_id=tenant_id, name__in=names)
    return {row.name: secrets.decrypt(row.ciphertext) for row in rows}
