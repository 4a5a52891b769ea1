"""Tenant scoping for admin pages: who may see and do what, per tenant.

Superusers see every tenant. Other staff see only the tenants they are members of: Django's
model permissions say what kind of thing a staff user may do, their membership says in which
tenants (viewers see, operators act, admins manage). ``TenantScopedAdmin`` applies that to a
model with a ``tenant``; the tenants' own admin and the executions' admin both build on it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db import models
from django.db.models import QuerySet
from django.forms import ModelChoiceField
from django.http import HttpRequest

from tenants.models import Membership, Tenant

_MEMBERSHIPS_ATTR = "_enact_admin_memberships"


def memberships_of(request: HttpRequest) -> dict[int, Membership]:
    """The requesting user's memberships by tenant id, read once per request (every row of a
    changelist asks)."""
    cached: dict[int, Membership] | None = getattr(request, _MEMBERSHIPS_ATTR, None)
    if cached is None:
        cached = {m.tenant_id: m for m in Membership.objects.filter(user_id=request.user.pk)}
        setattr(request, _MEMBERSHIPS_ATTR, cached)
    return cached


def may_view(membership: Membership) -> bool:
    return True


def may_operate(membership: Membership) -> bool:
    return membership.can_operate


def may_manage(membership: Membership) -> bool:
    # Changing who belongs to a tenant is the admin role's alone, or an operator could promote itself.
    return membership.role == Membership.Role.ADMIN


RoleCheck = Callable[[Membership], bool]


def tenant_ids_where(request: HttpRequest, check: RoleCheck) -> set[int] | None:
    """Ids of the tenants where the user's role passes ``check``; ``None`` means every tenant."""
    if request.user.is_superuser:
        return None
    return {tenant_id for tenant_id, m in memberships_of(request).items() if check(m)}


def visible_tenant_ids(request: HttpRequest) -> set[int] | None:
    return tenant_ids_where(request, may_view)


def allows(ids: set[int] | None, tenant_id: int | None) -> bool:
    """Whether ``ids`` (from :func:`tenant_ids_where`) covers the tenant; with no tenant, any."""
    if ids is None:
        return True
    return bool(ids) if tenant_id is None else tenant_id in ids


def has_model_perm(request: HttpRequest, opts: Any, action: str) -> bool:
    return request.user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")


class TenantScopedAdmin(admin.ModelAdmin):
    """A model admin whose rows belong to a tenant: rows, choices and permissions follow the
    requesting user's memberships."""

    # How the model reaches its tenant in a queryset lookup.
    tenant_lookup = "tenant"
    # Which memberships may change rows (and choose tenants in forms).
    write_check: RoleCheck = staticmethod(may_operate)

    def tenant_id_of(self, obj: models.Model) -> int:
        return obj.tenant_id  # type: ignore[attr-defined,no-any-return]

    def _id_of(self, obj: models.Model | None) -> int | None:
        return None if obj is None else self.tenant_id_of(obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        rows = super().get_queryset(request)
        ids = visible_tenant_ids(request)
        return rows if ids is None else rows.filter(**{f"{self.tenant_lookup}__in": ids})

    def formfield_for_foreignkey(
        self, db_field: models.ForeignKey[Any, Any], request: HttpRequest, **kwargs: Any
    ) -> ModelChoiceField[Any] | None:
        ids = tenant_ids_where(request, self.write_check)
        if db_field.related_model is Tenant and ids is not None:
            kwargs["queryset"] = Tenant.objects.filter(pk__in=ids)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def has_view_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        ids = visible_tenant_ids(request)
        return super().has_view_permission(request, obj) and (obj is None or allows(ids, self._id_of(obj)))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and allows(tenant_ids_where(request, self.write_check), None)

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        ids = tenant_ids_where(request, self.write_check)
        return super().has_change_permission(request, obj) and allows(ids, self._id_of(obj))

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        ids = tenant_ids_where(request, self.write_check)
        return super().has_delete_permission(request, obj) and allows(ids, self._id_of(obj))

    def has_operate_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        """Control actions: the model's change permission and an operating role in the tenant."""
        ids = tenant_ids_where(request, may_operate)
        return has_model_perm(request, self.opts, "change") and allows(ids, self._id_of(obj))


def adopt(obj: models.Model, saved: models.Model) -> None:
    """Make the admin's unsaved instance the row a service created, so the admin's logging and
    redirects that follow see it."""
    for field in obj._meta.concrete_fields:
        setattr(obj, field.attname, getattr(saved, field.attname))
    obj._state.adding = False
    obj._state.db = saved._state.db


def report(request: HttpRequest, done: dict[str, list[str]], failed: list[tuple[str, str]]) -> None:
    """One message per outcome listing the objects it applies to, and one per failure."""
    for outcome, names in done.items():
        if names:
            messages.success(request, f"{outcome}: {', '.join(names)}.")
    for name, reason in failed:
        messages.error(request, f"{name}: {reason}")


NOT_ALLOWED = "your role in this tenant does not allow it"
