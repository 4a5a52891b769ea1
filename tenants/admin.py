"""The operators' admin for tenants, their limits, memberships and API keys.

Rows are scoped per tenant as ``tenants.admin_scoping`` says: superusers see every tenant, other
staff the tenants they are members of. Every write goes through ``tenants.services``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from enact_platform.errors import PlatformError
from tenants.admin_scoping import (
    NOT_ALLOWED,
    TenantScopedAdmin,
    adopt,
    allows,
    may_manage,
    may_operate,
    report,
    tenant_ids_where,
)
from tenants.models import ApiKey, Membership, Tenant, TenantLimits, TenantSecret
from tenants.selectors import tenant_usage
from tenants.services import (
    _SLUG as TENANT_SLUG,
)
from tenants.services import (
    LIMIT_FIELDS,
    api_key_create,
    api_key_revoke,
    membership_set,
    tenant_create,
    tenant_secret_set,
    tenant_set_limits,
    tenant_set_status,
)

# --- tenants and their limits -----------------------------------------------------------------

PER_EXECUTION_LIMITS = (
    "max_steps",
    "max_tokens",
    "max_wall_time_s",
    "max_cost_usd",
    "max_discovered_steps",
    "max_discovery_depth",
    "idle_timeout_s",
    "max_step_repetitions",
    "cost_alert_threshold_usd",
    "warning_threshold",
    "max_concurrent_branches",
    "pii_masking",
    "durability",
)
TENANT_WIDE_LIMITS = (
    "max_concurrent_executions",
    "max_queued",
    "weight",
    "executions_per_day",
    "tokens_per_day",
    "cost_per_day_usd",
    "max_input_bytes",
    "max_artifact_bytes",
    "max_storage_bytes",
    "requests_per_minute",
    "retention_days",
)
TOOL_POLICY = (
    "tool_allowed_domains",
    "tool_trusted_domains",
    "tool_allowed_methods",
    "tool_timeout_s",
    "tool_max_response_bytes",
)


class TenantLimitsInline(admin.StackedInline):
    model = TenantLimits
    can_delete = False
    extra = 0
    max_num = 1
    fieldsets = [
        ("Per execution (checked before every step)", {"fields": PER_EXECUTION_LIMITS}),
        ("Across the tenant (checked at submission and dispatch)", {"fields": TENANT_WIDE_LIMITS}),
        ("Tool policy (checked before every HTTP tool call)", {"fields": TOOL_POLICY}),
        # A limit added to the model later is editable before anyone files it under a heading.
        (
            "Other",
            {"fields": [f for f in LIMIT_FIELDS if f not in PER_EXECUTION_LIMITS + TENANT_WIDE_LIMITS + TOOL_POLICY]},
        ),
    ]

    def get_fieldsets(self, request: HttpRequest, obj: models.Model | None = None) -> list[tuple[Any, Any]]:
        return [(title, options) for title, options in self.fieldsets if options["fields"]]

    def has_add_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False  # tenant_create made the row; there is never a second one

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        ids = tenant_ids_where(request, may_operate)
        return super().has_change_permission(request, obj) and allows(ids, None if obj is None else obj.pk)


class TenantAddForm(forms.ModelForm):
    """Only what ``tenant_create`` takes; its slug rule is checked here so a bad slug is a form
    error rather than a failure after validation."""

    class Meta:
        model = Tenant
        fields = ["slug", "name"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["name"].required = False
        self.fields["name"].help_text = "Defaults to the slug."

    def clean_slug(self) -> str:
        slug: str = self.cleaned_data["slug"]
        if not TENANT_SLUG.match(slug):
            raise forms.ValidationError(
                "Use lowercase letters, digits and dashes, starting and ending with a letter or digit."
            )
        return slug


def _usage(tenant: Tenant) -> dict[str, Any]:
    # The admin hands every column of a row the same instance, so one selector call serves them all.
    usage: dict[str, Any] | None = tenant.__dict__.get("_admin_usage")
    if usage is None:
        usage = tenant.__dict__["_admin_usage"] = tenant_usage(tenant=tenant)
    return usage


def _money(value: float) -> str:
    return f"${value:,.4f}"


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    tenant_lookup = "pk"
    list_display = [
        "slug",
        "name",
        "status",
        "running_now",
        "queued",
        "executions_today",
        "tokens_today",
        "cost_today",
        "storage",
    ]
    list_filter = ["status"]
    search_fields = ["slug", "name"]
    # Usage costs a few queries per row.
    list_per_page = 50
    actions = ["suspend", "activate"]
    inlines = [TenantLimitsInline]
    CHANGEABLE = ("name",)

    def tenant_id_of(self, obj: models.Model) -> int:
        return obj.pk  # type: ignore[no-any-return]

    def get_fields(self, request: HttpRequest, obj: models.Model | None = None) -> list[str]:
        if obj is None:
            return ["slug", "name"]
        return ["slug", "name", "status", "storage", "created_at", "usage_panel"]

    def get_readonly_fields(self, request: HttpRequest, obj: models.Model | None = None) -> list[str]:
        if obj is None:
            return []
        return ["slug", "status", "storage", "created_at", "usage_panel"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = TenantAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_inlines(self, request: HttpRequest, obj: models.Model | None) -> list[type[admin.options.InlineModelAdmin]]:
        # A new tenant gets its limits from tenant_create; they are edited once it exists.
        return [] if obj is None else list(self.inlines)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A staff user would not be a member of the tenant they created, so only superusers create.
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False  # no service deletes a tenant; suspend it instead

    def save_model(self, request: HttpRequest, obj: Tenant, form: forms.ModelForm, change: bool) -> None:
        if not change:
            adopt(obj, tenant_create(slug=obj.slug, name=obj.name))
            return
        # Only the changed editable columns: a full save would write back a stale status and
        # storage_bytes, which other processes move.
        fields = [name for name in form.changed_data if name in self.CHANGEABLE]
        if fields:
            obj.save(update_fields=fields)

    def save_formset(self, request: HttpRequest, form: forms.ModelForm, formset: Any, change: bool) -> None:
        if formset.model is not TenantLimits:
            super().save_formset(request, form, formset, change)
            return
        # What formset.save() would have recorded, for the admin's change message.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        if not TenantLimitsInline(Tenant, self.admin_site).has_change_permission(request, form.instance):
            return  # a view-only inline posts nothing to save
        for limits_form in formset.forms:
            changes = {name: limits_form.cleaned_data[name] for name in limits_form.changed_data}
            if not changes:
                continue
            try:
                limits = tenant_set_limits(tenant=form.instance, changes=changes)
            except PlatformError as exc:
                messages.error(request, f"Limits not saved: {exc.message} {exc.details or ''}".strip())
            else:
                formset.changed_objects.append((limits, list(changes)))

    # -- usage --

    @admin.display(description="running now")
    def running_now(self, obj: Tenant) -> int:
        return int(_usage(obj)["running_executions"])

    @admin.display(description="queued")
    def queued(self, obj: Tenant) -> int:
        return int(_usage(obj)["queued_executions"])

    @admin.display(description="executions today")
    def executions_today(self, obj: Tenant) -> int:
        return int(_usage(obj)["executions_today"])

    @admin.display(description="tokens today")
    def tokens_today(self, obj: Tenant) -> int:
        return int(_usage(obj)["tokens_today"])

    @admin.display(description="cost today")
    def cost_today(self, obj: Tenant) -> str:
        return _money(_usage(obj)["cost_today_usd"])

    @admin.display(description="storage")
    def storage(self, obj: Tenant) -> str:
        return filesizeformat(_usage(obj)["storage_bytes"])

    @admin.display(description="usage now")
    def usage_panel(self, obj: Tenant) -> SafeString:
        usage = _usage(obj)
        rows = [
            ("Running now", usage["running_executions"]),
            ("Queued", usage["queued_executions"]),
            ("Executions today", usage["executions_today"]),
            ("Tokens today", usage["tokens_today"]),
            ("Cost today", _money(usage["cost_today_usd"])),
            ("Storage", f"{filesizeformat(usage['storage_bytes'])} ({usage['storage_bytes']} bytes)"),
        ]
        body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        return format_html('<table class="tenant-usage">{}</table>', body)

    # -- actions --

    @admin.action(description="Suspend selected tenants", permissions=["operate"])
    def suspend(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set_status(request, queryset, Tenant.Status.SUSPENDED, "Suspended")

    @admin.action(description="Activate selected tenants", permissions=["operate"])
    def activate(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._set_status(request, queryset, Tenant.Status.ACTIVE, "Activated")

    def _set_status(self, request: HttpRequest, tenants: Iterable[Tenant], status: str, outcome: str) -> None:
        done: list[str] = []
        failed: list[tuple[str, str]] = []
        for tenant in tenants:
            if not self.has_operate_permission(request, tenant):
                failed.append((tenant.slug, NOT_ALLOWED))
                continue
            try:
                tenant_set_status(tenant=tenant, status=status)
            except PlatformError as exc:
                failed.append((tenant.slug, exc.message))
            else:
                done.append(tenant.slug)
        report(request, {outcome: done}, failed)


# --- memberships ------------------------------------------------------------------------------


@admin.register(Membership)
class MembershipAdmin(TenantScopedAdmin):
    write_check = staticmethod(may_manage)
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter), "role"]
    search_fields = ["user__username", "tenant__slug"]
    list_select_related = ["user", "tenant"]

    def get_readonly_fields(self, request: HttpRequest, obj: models.Model | None = None) -> list[str]:
        # Moving a membership to another user or tenant is a new membership.
        return ["user", "tenant", "created_at"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Membership, form: forms.ModelForm, change: bool) -> None:
        adopt(obj, membership_set(tenant=obj.tenant, user=obj.user, role=obj.role))


# --- API keys ---------------------------------------------------------------------------------

_RAW_KEY_ATTR = "_enact_admin_raw_api_key"


@admin.register(ApiKey)
class ApiKeyAdmin(TenantScopedAdmin):
    list_display = ["prefix", "name", "tenant", "scope", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter), "scope", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["^prefix", "name"]
    list_select_related = ["tenant"]
    actions = ["revoke"]
    SHOWN = ["prefix", "name", "tenant", "scope", "key_hash", "created_at", "last_used_at", "revoked_at"]

    def get_fields(self, request: HttpRequest, obj: models.Model | None = None) -> list[str]:
        return ["tenant", "name", "scope"] if obj is None else self.SHOWN

    def get_readonly_fields(self, request: HttpRequest, obj: models.Model | None = None) -> list[str]:
        # After creation only the name changes; a key's tenant and scope are what it was issued for.
        return [] if obj is None else [name for name in self.SHOWN if name != "name"]

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False  # revoke instead: the row records that the key existed and when it was last used

    def save_model(self, request: HttpRequest, obj: ApiKey, form: forms.ModelForm, change: bool) -> None:
        if change:
            # Only the name: a full save would write back a stale revoked_at and un-revoke the key.
            if "name" in form.changed_data:
                obj.save(update_fields=["name"])
            return
        key, raw = api_key_create(tenant=obj.tenant, scope=obj.scope, name=obj.name)
        adopt(obj, key)
        # Kept on this request only, for response_add to show; never stored, never put in a message
        # (messages may live in a cookie or the session).
        setattr(request, _RAW_KEY_ATTR, raw)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        raw = getattr(request, _RAW_KEY_ATTR, None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        info = (self.opts.app_label, self.opts.model_name)
        context = {
            **self.admin_site.each_context(request),
            "title": "API key created",
            "opts": self.opts,
            "key": obj,
            "raw_key": raw,
            "change_url": reverse("admin:{}_{}_change".format(*info), args=[obj.pk], current_app=self.admin_site.name),
            "changelist_url": reverse("admin:{}_{}_changelist".format(*info), current_app=self.admin_site.name),
        }
        return TemplateResponse(request, "admin/tenants/apikey/created.html", context)

    @admin.action(description="Revoke selected API keys", permissions=["operate"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        done: dict[str, list[str]] = {"Revoked": [], "Already revoked": []}
        failed: list[tuple[str, str]] = []
        for key in queryset.select_related("tenant"):
            if not self.has_operate_permission(request, key):
                failed.append((key.prefix, NOT_ALLOWED))
                continue
            was_active = key.is_active
            try:
                api_key_revoke(tenant=key.tenant, key_id=key.pk)
            except PlatformError as exc:
                failed.append((key.prefix, exc.message))
            else:
                done["Revoked" if was_active else "Already revoked"].append(key.prefix)
        report(request, done, failed)


# --- secrets ---------------------------------------------------------------------------------------


class TenantSecretForm(forms.ModelForm):
    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        help_text="Stored encrypted; it is never shown again. Enter a new value to replace it.",
    )

    class Meta:
        model = TenantSecret
        fields = ["tenant", "name"]


@admin.register(TenantSecret)
class TenantSecretAdmin(TenantScopedAdmin):
    """Secrets are written, replaced or deleted here, never read: the form has no value to show."""

    form = TenantSecretForm
    list_display = ["name", "tenant", "updated_at"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name"]
    list_select_related = ["tenant"]
    write_check = staticmethod(may_manage)

    def get_readonly_fields(self, request: HttpRequest, obj: models.Model | None = None) -> list[str]:
        return [] if obj is None else ["tenant", "name", "created_at", "updated_at"]

    def save_model(self, request: HttpRequest, obj: TenantSecret, form: forms.ModelForm, change: bool) -> None:
        saved = tenant_secret_set(tenant=obj.tenant, name=obj.name, value=form.cleaned_data["value"])
        adopt(obj, saved)
