"""Tenants, their limits, who belongs to them, and how programs authenticate as them."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import date
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    # Bytes of artifact content the tenant stores now; moved only with F() updates.
    storage_bytes = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE


POSITIVE = [MinValueValidator(1)]
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_HOST_PATTERN = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[0-9]{1,5})?$")


def default_tool_methods() -> list[str]:
    return ["GET", "POST"]


def validate_host_patterns(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("must be a list of host names")
    bad = [v for v in value if not _HOST_PATTERN.match(v)]
    if bad:
        raise ValidationError(f"not a host name or *.domain pattern: {', '.join(bad)}")


def validate_http_methods(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("must be a list of HTTP methods")
    bad = [v for v in value if v not in HTTP_METHODS]
    if bad:
        raise ValidationError(f"unknown HTTP methods: {', '.join(bad)}; allowed: {', '.join(HTTP_METHODS)}")


class TenantLimits(models.Model):
    """Every limit of a tenant. Empty means unlimited, except where a default protects the platform."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="limits", primary_key=True)

    # Per execution (checked by the kernel before every step).
    max_steps = models.PositiveIntegerField(null=True, blank=True, default=1000, validators=POSITIVE)
    max_tokens = models.PositiveBigIntegerField(null=True, blank=True, default=1_000_000, validators=POSITIVE)
    max_wall_time_s = models.FloatField(null=True, blank=True, default=3600.0, validators=[MinValueValidator(0.001)])
    max_cost_usd = models.DecimalField(
        null=True,
        blank=True,
        default=Decimal("10"),
        max_digits=12,
        decimal_places=4,
        validators=[MinValueValidator(Decimal("0"))],
    )
    max_discovered_steps = models.PositiveIntegerField(null=True, blank=True, default=100)
    max_discovery_depth = models.PositiveIntegerField(null=True, blank=True, default=5)
    idle_timeout_s = models.FloatField(null=True, blank=True, default=300.0, validators=[MinValueValidator(0.001)])
    max_step_repetitions = models.PositiveIntegerField(null=True, blank=True, default=100, validators=POSITIVE)
    cost_alert_threshold_usd = models.DecimalField(null=True, blank=True, max_digits=12, decimal_places=4)
    warning_threshold = models.FloatField(default=0.8, validators=[MinValueValidator(0.0), MaxValueValidator(1.0)])
    max_concurrent_branches = models.PositiveIntegerField(default=8, validators=POSITIVE)

    # Across the tenant (checked at submission and dispatch).
    max_concurrent_executions = models.PositiveIntegerField(default=5, validators=POSITIVE)
    # Executions waiting for a slot at most: past it a submission is refused (429), not stored.
    max_queued = models.PositiveIntegerField(default=1000, validators=POSITIVE)
    # Its share of the workers' slots against other tenants with work waiting: a tenant of weight
    # 3 gets three slots for each one a tenant of weight 1 gets.
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(1000)])
    executions_per_day = models.PositiveIntegerField(null=True, blank=True, default=10_000)
    tokens_per_day = models.PositiveBigIntegerField(null=True, blank=True, default=10_000_000)
    cost_per_day_usd = models.DecimalField(
        null=True, blank=True, default=Decimal("100"), max_digits=12, decimal_places=4
    )
    max_input_bytes = models.PositiveIntegerField(default=256 * 1024, validators=POSITIVE)
    max_artifact_bytes = models.PositiveIntegerField(default=10 * 1024 * 1024, validators=POSITIVE)
    max_storage_bytes = models.PositiveBigIntegerField(null=True, blank=True, default=1024 * 1024 * 1024)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True, default=600)
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        default=None,
        validators=POSITIVE,
        help_text="Ended executions older than this many days are deleted, with their events and artifacts. "
        "Empty: kept.",
    )

    # Tool policy: what ``http`` nodes, and the http tools of an agent, may call.
    tool_allowed_domains = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_host_patterns],
        help_text='Hosts tools may call: exact ("api.example.com", "127.0.0.1:8080") or "*.example.com". '
        "Empty: no HTTP tool may run.",
    )
    tool_trusted_domains = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_host_patterns],
        help_text="Of the allowed hosts, those called without approval; a call to any other waits for an operator.",
    )
    tool_allowed_methods = models.JSONField(
        default=default_tool_methods,
        blank=True,
        validators=[validate_http_methods],
        help_text="HTTP methods tools may use.",
    )
    tool_timeout_s = models.FloatField(default=10.0, validators=[MinValueValidator(0.1), MaxValueValidator(300.0)])
    tool_max_response_bytes = models.PositiveIntegerField(default=1024 * 1024, validators=POSITIVE)

    pii_masking = models.BooleanField(
        default=False, help_text="Mask e-mails, phone and card numbers in streamed content."
    )

    class Durability(models.TextChoices):
        SYNC = "sync", "sync: each step is stored before the next starts"
        ASYNC = "async", "async: steps are stored in the background, in order (PostgreSQL)"

    durability = models.CharField(
        max_length=8,
        choices=Durability.choices,
        default=Durability.SYNC,
        help_text="With async, a step may start before the previous one is stored, and a worker "
        "that dies runs those steps again; events are still published only once stored. "
        "Async takes effect on PostgreSQL only.",
    )

    class Meta:
        verbose_name = "limits"
        verbose_name_plural = "limits"

    def __str__(self) -> str:
        return f"limits of {self.tenant_id}"


class TenantDailyUsage(models.Model):
    """What a tenant used on one UTC day; quotas are consumed from it with conditional F() updates."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="daily_usage")
    day = models.DateField(default=date.today)
    executions = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    cost_usd = models.DecimalField(default=Decimal("0"), max_digits=14, decimal_places=6)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "day"], name="one_usage_row_per_tenant_day")]

    def __str__(self) -> str:
        return f"{self.tenant_id} on {self.day}"


class Membership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer"
        OPERATOR = "operator"
        ADMIN = "admin"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="one_membership_per_user_tenant")]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant_id} ({self.role})"

    @property
    def can_operate(self) -> bool:
        return self.role in (self.Role.OPERATOR, self.Role.ADMIN)


API_KEY_PREFIX = "enact"


def hash_api_key(raw: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(raw.encode()).hexdigest()


def generate_api_key() -> tuple[str, str]:
    """A new raw key and its public prefix (shown in lists so people can tell keys apart)."""
    lookup = secrets.token_hex(4)
    return f"{API_KEY_PREFIX}_{lookup}_{secrets.token_urlsafe(32)}", f"{API_KEY_PREFIX}_{lookup}"


class ApiKey(models.Model):
    class Scope(models.TextChoices):
        READ = "read"
        WRITE = "write"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)
    prefix = models.CharField(max_length=32, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.scope}, {self.tenant_id})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    @property
    def can_write(self) -> bool:
        return self.scope == self.Scope.WRITE


class TenantSecret(models.Model):
    """A provider key or other secret of a tenant, encrypted at rest (``tenants.secrets``).

    Written, replaced or deleted; never shown again after it is saved."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="secrets")
    name = models.CharField(
        max_length=100,
        validators=[RegexValidator(r"^[A-Za-z_][A-Za-z0-9_]*$", "letters, digits and _, not starting with a digit")],
    )
    ciphertext = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="one_secret_name_per_tenant")]

    def __str__(self) -> str:
        return f"{self.name} of {self.tenant_id}"
