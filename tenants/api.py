"""The caller's tenant: who it is, its limits and what it uses now."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from enact_platform.api.auth import request_caller
from enact_platform.api.schema import READ_ERRORS
from tenants.models import TenantLimits
from tenants.selectors import tenant_usage

# Every limit an operator sets, as the API shows it (admin-only fields stay in the admin).
LIMIT_FIELDS = [
    f.name for f in TenantLimits._meta.get_fields() if f.concrete and f.name not in ("tenant", "updated_at")
]


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


class TenantView(APIView):
    @extend_schema(
        responses={
            200: inline_serializer(
                "Tenant",
                {
                    "slug": serializers.CharField(),
                    "name": serializers.CharField(),
                    "status": serializers.CharField(),
                    "limits": serializers.DictField(),
                    "usage": serializers.DictField(),
                },
            ),
            **READ_ERRORS,
        }
    )
    def get(self, request: Request) -> Response:
        tenant = request_caller(request).tenant
        limits = TenantLimits.objects.get(tenant=tenant)
        return Response(
            {
                "slug": tenant.slug,
                "name": tenant.name,
                "status": tenant.status,
                "limits": {name: _number(getattr(limits, name)) for name in LIMIT_FIELDS},
                "usage": tenant_usage(tenant=tenant),
            }
        )
