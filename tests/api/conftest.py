"""An API client per caller: write and read keys of tenant A, a write key of tenant B."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from tenants.models import Tenant


@dataclass
class Api:
    """A test client that sends a Bearer key and JSON, and reads JSON back."""

    client: Client
    key: str
    tenant: Tenant

    def _headers(self, extra: dict[str, str] | None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        return {**headers, **(extra or {})}

    def get(self, path: str, data: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Any:
        return self.client.get(_url(path), data or {}, headers=self._headers(headers))

    def post(self, path: str, body: Any = None, *, raw: bytes | str | None = None, headers: Any = None) -> Any:
        payload = raw if raw is not None else json.dumps({} if body is None else body)
        return self.client.post(_url(path), payload, content_type="application/json", headers=self._headers(headers))

    def put(self, path: str, body: Any = None) -> Any:
        return self.client.put(
            _url(path), json.dumps(body or {}), content_type="application/json", headers=self._headers(None)
        )

    def delete(self, path: str) -> Any:
        return self.client.delete(_url(path), headers=self._headers(None))


def _url(path: str) -> str:
    return path if path.startswith("/") else f"/api/v1/{path}"


def _api(tenant: Tenant, scope: str) -> Api:
    from tenants.services import api_key_create

    _, raw = api_key_create(tenant=tenant, scope=scope, name=f"{scope} key")
    return Api(Client(), raw, tenant)


@pytest.fixture
def api_a(tenant_a: Tenant) -> Api:
    return _api(tenant_a, "write")


@pytest.fixture
def reader_a(tenant_a: Tenant) -> Api:
    return _api(tenant_a, "read")


@pytest.fixture
def api_b(tenant_b: Tenant) -> Api:
    return _api(tenant_b, "write")


@pytest.fixture
def anonymous(tenant_a: Tenant) -> Api:
    return Api(Client(), "", tenant_a)


def error_of(response: Any) -> dict[str, Any]:
    """The error body, checked for the contract's shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body["error"]
