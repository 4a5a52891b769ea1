"""Admin pages for webhooks and their deliveries, scoped to the operator's tenants like the others
(``tenants/admin_scoping.py``). Webhooks are made through the API (its answer is the one place
their secret is shown); here an operator switches one off, changes its events, or deletes it,
and reads every delivery with its attempts."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from executions.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tenants.admin_scoping import TenantScopedAdmin


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(TenantScopedAdmin):
    list_display = ("id", "tenant", "url", "events", "active", "created_at")
    list_filter = ("active",)
    search_fields = ("id", "url")
    fields = ("id", "tenant", "url", "events", "description", "active", "created_at", "updated_at")
    readonly_fields = ("id", "tenant", "url", "created_at", "updated_at")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # through the API, whose answer shows the secret once


class WebhookAttemptInline(admin.TabularInline):
    model = WebhookAttempt
    extra = 0
    fields = ("number", "started_at", "status_code", "duration_ms", "error", "response_body")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(TenantScopedAdmin):
    list_display = ("id", "tenant", "event_type", "url", "state", "attempts", "last_status", "created_at")
    list_filter = ("state", "event_type")
    search_fields = ("id", "execution__id", "url")
    list_select_related = ("tenant",)
    fields = (
        "id",
        "tenant",
        "endpoint",
        "execution",
        "url",
        "event_type",
        "event_id",
        "state",
        "attempts",
        "next_attempt_at",
        "last_status",
        "last_error",
        "payload",
        "created_at",
        "ended_at",
    )
    readonly_fields = fields
    inlines = (WebhookAttemptInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
