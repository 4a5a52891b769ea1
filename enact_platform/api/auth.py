"""Who is calling, for which tenant, and what they may do.

Programs send ``Authorization: Bearer <key>``: the key names its tenant and its scope. Dashboard
users come with their session (and CSRF); their tenant is the one named by ``X-Tenant`` or their
only one, and their role there decides whether they may write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, permissions
from rest_framework.request import Request

from enact_platform.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from tenants.models import ApiKey, Membership, Tenant
from tenants.selectors import tenant_membership, tenants_for_user
from tenants.services import api_key_authenticate


@dataclass(frozen=True)
class KeyPrincipal:
    """``request.user`` for a request made with an API key."""

    key: ApiKey
    is_authenticated: bool = True
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False
    pk: None = None

    def __str__(self) -> str:
        return f"key {self.key.prefix}"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[KeyPrincipal, ApiKey] | None:
        key = key_from_header(request.META.get("HTTP_AUTHORIZATION", ""))
        return (KeyPrincipal(key), key) if key is not None else None

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class SessionAuthentication(authentication.SessionAuthentication):
    """Django's session, with CSRF on writes, answering 401 (not 403) when it is missing."""

    def authenticate_header(self, request: Request) -> str:
        return 'Session realm="api"'


@dataclass(frozen=True)
class Caller:
    tenant: Tenant
    can_write: bool
    actor: str  # who did it, for event data and audit: "key:<prefix>" or "user:<username>"
    key: ApiKey | None = None


def request_caller(request: Request) -> Caller:
    """The caller's tenant and rights, worked out once per request."""
    cached = getattr(request, "_enact_caller", None)
    if cached is not None:
        return cached
    caller = _caller(request)
    request._enact_caller = caller  # type: ignore[attr-defined]
    return caller


def _caller(request: Request) -> Caller:
    key = request.auth if isinstance(request.auth, ApiKey) else None
    return resolve_caller(
        key=key,
        user=request.user,
        tenant_slug=request.META.get("HTTP_X_TENANT", ""),
    )


def resolve_caller(*, key: ApiKey | None, user: Any, tenant_slug: str) -> Caller:
    """The tenant and rights of a caller with this key, or else this session user."""
    if key is not None:
        return Caller(tenant=key.tenant, can_write=key.can_write, actor=f"key:{key.prefix}", key=key)
    if user is None or not user.is_authenticated:
        raise Unauthenticated("authentication required: an API key (Bearer) or a session")
    slug = tenant_slug.strip()
    if slug:
        tenant = Tenant.objects.select_related("limits").filter(slug=slug).first()
        membership = tenant_membership(user=user, tenant=tenant) if tenant else None
        if tenant is None or (membership is None and not user.is_superuser):
            raise NotFound(f"tenant {slug!r} not found")
    else:
        tenants = tenants_for_user(user=user)
        if len(tenants) != 1:
            raise InvalidInput(
                "name the tenant with the X-Tenant header", details={"tenants": [t.slug for t in tenants]}
            )
        tenant = tenants[0]
        membership = tenant_membership(user=user, tenant=tenant)
    can_write = user.is_superuser or (membership is not None and membership.can_operate)
    return Caller(tenant=tenant, can_write=can_write, actor=f"user:{user.get_username()}")


def key_from_header(header: str) -> ApiKey | None:
    """The key of an ``Authorization: Bearer`` header; :class:`Unauthenticated` for a bad one,
    ``None`` when the header is absent or of another scheme."""
    scheme, _, raw = header.partition(" ")
    if not header or scheme.lower() != "bearer":
        return None
    key = api_key_authenticate(raw=raw.strip())
    if key is None:
        raise Unauthenticated("invalid or revoked API key")
    return key


class TenantScoped(permissions.BasePermission):
    """Any authenticated caller reads; writing needs a write key or an operator's role."""

    def has_permission(self, request: Request, view: Any) -> bool:
        caller = request_caller(request)
        if request.method in permissions.SAFE_METHODS or caller.can_write:
            return True
        if caller.key is not None:
            raise Forbidden("this API key is read-only", details={"scope": caller.key.scope})
        raise Forbidden("your role in this tenant cannot change executions", details={"roles": _write_roles()})


def _write_roles() -> list[str]:
    return [Membership.Role.OPERATOR.value, Membership.Role.ADMIN.value]


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """How the OpenAPI schema describes API keys."""

    target_class = ApiKeyAuthentication
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key of the tenant: `Authorization: Bearer enact_…`. Read keys cannot write.",
        }


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = SessionAuthentication
    name = "session"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "cookie",
            "name": "sessionid",
            "description": "A dashboard session (writes need the CSRF token); the tenant is the X-Tenant header.",
        }
