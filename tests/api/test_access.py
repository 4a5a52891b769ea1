"""Who may call what: keys and their scopes, sessions and roles, tenants, request rates."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from executions.models import Artifact, Execution, InboxMessage
from executions.services.submit import execution_submit
from tenants.models import ApiKey, Membership, Tenant
from tenants.services import api_key_revoke, membership_set, tenant_set_limits

from .conftest import Api, error_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def foreign(api_b: Api, enqueued: list[str]) -> dict[str, str]:
    """Ids of tenant B: an execution and an artifact."""
    execution, _ = execution_submit(tenant=api_b.tenant, blueprint="demo.chain", input={"n": 1})
    artifact = Artifact.objects.create(
        id="art_0000000000000000000000000A",
        execution=execution,
        tenant=api_b.tenant,
        name="secret.txt",
        artifact_type="text",
        content_type="text/plain",
        size=6,
        sha256="0" * 64,
        content=b"secret",
    )
    return {"execution": execution.pk, "artifact": artifact.pk}


# Every endpoint that names a resource: (method, path, body).
RESOURCE_ENDPOINTS = [
    ("get", "executions/{execution}", None),
    ("get", "executions/{execution}/steps", None),
    ("get", "executions/{execution}/events", None),
    ("get", "executions/{execution}/stream", None),
    ("get", "executions/{execution}/artifacts", None),
    ("post", "executions/{execution}/cancel", {"reason": "mine now"}),
    ("post", "executions/{execution}/pause", {}),
    ("post", "executions/{execution}/resume", {}),
    ("post", "executions/{execution}/input", {"input": 1, "approve": True}),
    ("post", "executions/{execution}/inbox", {"kind": "guidance", "content": "hello"}),
    ("get", "artifacts/{artifact}", None),
    ("get", "artifacts/{artifact}/content", None),
]


def _call(api: Api, method: str, path: str, body: Any) -> Any:
    return api.get(path) if method == "get" else api.post(path, body)


def _snapshot() -> list[Any]:
    executions = list(Execution.objects.order_by("pk").values())
    return [executions, InboxMessage.objects.count(), Artifact.objects.count()]


@pytest.mark.parametrize(("method", "template", "body"), RESOURCE_ENDPOINTS)
def test_another_tenants_resources_are_not_found(
    api_a: Api, foreign: dict[str, str], method: str, template: str, body: Any
) -> None:
    before = _snapshot()
    response = _call(api_a, method, template.format(**foreign), body)
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "not_found"
    assert foreign["execution"] not in json.dumps(error) or "execution" not in template
    assert b"secret" not in response.content
    assert _snapshot() == before


@pytest.mark.parametrize(("method", "template", "body"), RESOURCE_ENDPOINTS)
@pytest.mark.parametrize("bad_id", ["nope", "exec_short", "art_" + "x" * 27, "exec_" + "0" * 27, "%00", "a" * 300])
def test_malformed_and_unknown_ids_are_not_found(
    api_a: Api, method: str, template: str, body: Any, bad_id: str
) -> None:
    path = template.format(execution=bad_id, artifact=bad_id)
    response = _call(api_a, method, path, body)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_a_foreign_id_in_a_bulk_cancel_is_counted_not_found(api_a: Api, foreign: dict[str, str]) -> None:
    response = api_a.post("executions/cancel", {"ids": [foreign["execution"]]})
    assert response.json()["not_found"] == 1
    assert Execution.objects.get(pk=foreign["execution"]).state == "queued"


# --- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [None, "Bearer", "Bearer enact_nope_nope", "Bearer " + "x" * 500, "Basic dXNlcjpwYXNz", "Token abc"]
)
def test_no_or_a_bad_key_is_unauthenticated(tenant_a: Tenant, header: str | None) -> None:
    client = Client()
    headers = {"Authorization": header} if header else {}
    for method, path in (("get", "/api/v1/executions"), ("post", "/api/v1/executions"), ("get", "/api/v1/tenant")):
        response = getattr(client, method)(path, headers=headers)
        assert response.status_code == 401, (header, path)
        assert error_of(response)["code"] == "unauthenticated"
        assert response["WWW-Authenticate"]
    assert Execution.objects.count() == 0


def test_a_revoked_key_fails(api_a: Api) -> None:
    assert api_a.get("executions").status_code == 200
    key = ApiKey.objects.get(tenant=api_a.tenant, scope="write")
    api_key_revoke(tenant=api_a.tenant, key_id=key.pk)
    response = api_a.get("executions")
    assert response.status_code == 401
    assert error_of(response)["code"] == "unauthenticated"


def test_a_read_key_reads_but_cannot_write(reader_a: Api, api_a: Api, enqueued: list[str]) -> None:
    execution_id = api_a.post("executions", {"blueprint": "demo.chain", "input": {"n": 1}}).json()["id"]
    assert reader_a.get(f"executions/{execution_id}").status_code == 200
    writes = [
        ("executions", {"blueprint": "demo.chain", "input": {"n": 1}}),
        (f"executions/{execution_id}/cancel", {}),
        (f"executions/{execution_id}/pause", {}),
        (f"executions/{execution_id}/resume", {}),
        (f"executions/{execution_id}/input", {"input": 1}),
        (f"executions/{execution_id}/inbox", {"kind": "guidance", "content": "x"}),
        ("executions/cancel", {"ids": [execution_id]}),
    ]
    before = _snapshot()
    for path, body in writes:
        response = reader_a.post(path, body)
        assert response.status_code == 403, path
        assert error_of(response) == {
            "code": "forbidden",
            "message": "this API key is read-only",
            "details": {"scope": "read"},
        }
    assert _snapshot() == before


def test_a_key_records_when_it_was_last_used(api_a: Api) -> None:
    key = ApiKey.objects.get(tenant=api_a.tenant, scope="write")
    assert key.last_used_at is None
    api_a.get("tenant")
    key.refresh_from_db()
    assert key.last_used_at is not None
    assert (timezone.now() - key.last_used_at).total_seconds() < 60


# --- sessions -------------------------------------------------------------------------------------


def _session(tenant: Tenant, role: str, username: str = "dana") -> Client:
    user = User.objects.create_user(username, password="pw-long-enough-123")
    membership_set(tenant=tenant, user=user, role=role)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def _csrf(client: Client) -> str:
    client.get("/admin/login/")
    return client.cookies["csrftoken"].value


def test_a_viewer_session_reads_but_cannot_write(tenant_a: Tenant, enqueued: list[str]) -> None:
    client = _session(tenant_a, Membership.Role.VIEWER)
    assert client.get("/api/v1/executions").status_code == 200
    token = _csrf(client)
    body = json.dumps({"blueprint": "demo.chain", "input": {"n": 1}})
    response = client.post("/api/v1/executions", body, content_type="application/json", headers={"X-CSRFToken": token})
    assert response.status_code == 403
    assert error_of(response)["code"] == "forbidden"
    assert Execution.objects.count() == 0


def test_an_operator_session_writes_with_its_csrf_token(tenant_a: Tenant, enqueued: list[str]) -> None:
    client = _session(tenant_a, Membership.Role.OPERATOR)
    body = json.dumps({"blueprint": "demo.chain", "input": {"n": 1}})
    without = client.post("/api/v1/executions", body, content_type="application/json")
    assert without.status_code == 403
    assert "CSRF" in error_of(without)["message"]
    token = _csrf(client)
    response = client.post("/api/v1/executions", body, content_type="application/json", headers={"X-CSRFToken": token})
    assert response.status_code == 201
    assert Execution.objects.get().created_by.username == "dana"


def test_a_member_of_two_tenants_names_one(tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]) -> None:
    client = _session(tenant_a, Membership.Role.VIEWER)
    membership_set(tenant=tenant_b, user=User.objects.get(username="dana"), role="viewer")
    unnamed = client.get("/api/v1/tenant")
    assert unnamed.status_code == 400
    assert error_of(unnamed)["details"]["tenants"] == ["acme", "globex"]
    assert client.get("/api/v1/tenant", headers={"X-Tenant": "globex"}).json()["slug"] == "globex"
    stranger = Tenant.objects.create(slug="initech", name="Initech")
    refused = client.get("/api/v1/tenant", headers={"X-Tenant": stranger.slug})
    assert refused.status_code == 404


def test_a_session_without_a_tenant_is_refused(db: None) -> None:
    client = Client()
    client.force_login(User.objects.create_user("lonely"))
    response = client.get("/api/v1/executions")
    assert response.status_code == 400
    assert error_of(response)["details"]["tenants"] == []


# --- request rate ---------------------------------------------------------------------------------


def test_requests_over_the_tenants_rate_get_429_with_retry_after(
    api_a: Api, reader_a: Api, api_b: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Mid-window, so that the minute cannot turn over between the requests.
    monkeypatch.setattr("enact_platform.api.throttling.time.time", lambda: 1_800_000_030.0)
    tenant_set_limits(tenant=api_a.tenant, changes={"requests_per_minute": 3})
    assert [api_a.get("tenant").status_code for _ in range(3)] == [200, 200, 200]
    refused = api_a.get("tenant")
    assert refused.status_code == 429
    error = error_of(refused)
    assert error["code"] == "rate_limited"
    assert refused["Retry-After"] == "30"
    assert error["details"]["retry_after"] == int(refused["Retry-After"])
    # The count is per key: the tenant's other key, and other tenants, go on.
    assert reader_a.get("tenant").status_code == 200
    assert api_b.get("tenant").status_code == 200


def test_no_rate_limit_when_the_tenant_has_none(api_a: Api) -> None:
    tenant_set_limits(tenant=api_a.tenant, changes={"requests_per_minute": None})
    assert {api_a.get("tenant").status_code for _ in range(20)} == {200}
