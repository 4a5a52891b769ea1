"""/api/v1/webhooks: create (the secret shown once), list (cursor pages), get, patch, delete,
deliveries, rotate-secret, the tenant's signing secret; a submission's ``webhook``. Bad input
answers 400 naming the field and stores nothing; another tenant's webhook answers 404."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.utils import timezone

from executions.models import Execution, WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookSigningSecret
from tenants.secrets import decrypt
from tenants.services import tenant_set_limits
from tests.api.conftest import Api, error_of

pytestmark = pytest.mark.django_db

HOOK: dict[str, Any] = {
    "url": "https://hooks.example.com/enact",
    "events": ["data-execution-end", "data-execution-failed"],
}


@pytest.fixture(autouse=True)
def allowed_hosts(api_a: Api, api_b: Api) -> None:
    for api in (api_a, api_b):
        tenant_set_limits(tenant=api.tenant, changes={"tool_allowed_domains": ["hooks.example.com", "10.1.2.3"]})


def patch(api: Api, path: str, body: Any) -> Any:
    return api.client.patch(
        f"/api/v1/{path}", json.dumps(body), content_type="application/json", headers=api._headers(None)
    )


def create(api: Api, **changes: Any) -> dict[str, Any]:
    response = api.post("webhooks", {**HOOK, **changes})
    assert response.status_code == 201, response.json()
    return dict(response.json())


def test_create_answers_201_with_the_secret_once_and_keeps_it_encrypted(api_a: Api) -> None:
    body = create(api_a, description="billing")
    assert body["id"].startswith("wh_")
    assert {k: body[k] for k in ("url", "events", "description", "active")} == {
        **HOOK,
        "description": "billing",
        "active": True,
    }
    assert body["secret"].startswith("whsec_")
    stored = WebhookEndpoint.objects.get(pk=body["id"])
    assert body["secret"] not in stored.secret_ciphertext
    assert decrypt(stored.secret_ciphertext) == body["secret"]
    again = api_a.get(f"webhooks/{body['id']}").json()
    assert "secret" not in again
    assert again == {k: v for k, v in body.items() if k != "secret"}
    assert api_a.get("webhooks").json()["results"] == [again]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"url": "ftp://hooks.example.com/x"}, "url", "http or https"),
        ({"url": "not a url"}, "url", "http or https"),
        ({"url": "https://user:pw@hooks.example.com/"}, "url", "user name"),
        ({"url": "https://evil.example.org/hook"}, "url", "not in the tenant's allowed domains"),
        ({"url": "http://127.0.0.1:9/hook"}, "url", "not in the tenant's allowed domains"),
        ({"events": ["data-execution-exploded"]}, "events", "not a valid choice"),
        ({"events": []}, "events", ""),
        ({"events": "data-execution-end"}, "events", ""),
        ({"secret": "mine"}, "secret", "unknown field"),
        ({"active": "yes"}, "active", ""),
    ],
)
def test_bad_input_answers_400_naming_the_field_and_stores_nothing(
    api_a: Api, change: dict[str, Any], field: str, words: str
) -> None:
    response = api_a.post("webhooks", {**HOOK, **change})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert field in json.dumps(error)
    assert words in json.dumps(error)
    assert not WebhookEndpoint.objects.exists()


def test_a_private_address_needs_the_policy_to_name_it_exactly(api_a: Api) -> None:
    # "10.1.2.3" is named exactly: allowed. A wildcard covering a private name is not enough.
    assert api_a.post("webhooks", {**HOOK, "url": "http://10.1.2.3:8080/h"}).status_code == 201
    tenant_set_limits(tenant=api_a.tenant, changes={"tool_allowed_domains": ["*.localhost"]})
    response = api_a.post("webhooks", {**HOOK, "url": "http://hooks.localhost/h"})
    assert response.status_code == 400
    assert "private or loopback" in error_of(response)["message"]
    assert WebhookEndpoint.objects.count() == 1


def test_patch_changes_the_given_fields_and_refuses_bad_ones_changing_nothing(api_a: Api) -> None:
    hook = create(api_a)
    response = patch(api_a, f"webhooks/{hook['id']}", {"active": False, "events": ["data-execution-waiting"]})
    assert response.status_code == 200, response.json()
    assert (response.json()["active"], response.json()["events"]) == (False, ["data-execution-waiting"])
    for bad in ({"url": "https://evil.example.org/"}, {"events": ["nope"]}, {"colour": "red"}):
        response = patch(api_a, f"webhooks/{hook['id']}", bad)
        assert response.status_code == 400, bad
    stored = WebhookEndpoint.objects.get(pk=hook["id"])
    assert (stored.url, stored.events, stored.active) == (HOOK["url"], ["data-execution-waiting"], False)


def test_rotate_secret_shows_a_new_one(api_a: Api) -> None:
    hook = create(api_a)
    response = api_a.post(f"webhooks/{hook['id']}/rotate-secret")
    assert response.status_code == 200
    assert response.json()["secret"] not in ("", hook["secret"])
    assert decrypt(WebhookEndpoint.objects.get(pk=hook["id"]).secret_ciphertext) == response.json()["secret"]


def test_list_pages_with_a_cursor(api_a: Api) -> None:
    made = [create(api_a, description=str(i))["id"] for i in range(5)]
    seen: list[str] = []
    page = api_a.get("webhooks", {"limit": 2}).json()
    while True:
        assert len(page["results"]) <= 2
        seen += [hook["id"] for hook in page["results"]]
        if not page["next"]:
            break
        page = api_a.client.get(page["next"], headers=api_a._headers(None)).json()
    assert seen == made[::-1]
    assert api_a.get("webhooks", {"colour": "red"}).status_code == 400


def test_another_tenants_webhook_answers_404_to_everything(api_a: Api, api_b: Api) -> None:
    hook = create(api_a)
    path = f"webhooks/{hook['id']}"
    for response in (
        api_b.get(path),
        patch(api_b, path, {"active": False}),
        patch(api_b, path, {"bogus": 1}),  # 404 before 400: nothing said about the fields
        api_b.delete(path),
        api_b.get(f"{path}/deliveries"),
        api_b.post(f"{path}/rotate-secret"),
        api_a.get("webhooks/wh_nope"),
    ):
        assert response.status_code == 404
        assert error_of(response)["code"] == "not_found"
    assert api_b.get("webhooks").json()["results"] == []
    stored = WebhookEndpoint.objects.get(pk=hook["id"])
    assert stored.active
    assert decrypt(stored.secret_ciphertext) == hook["secret"]


def test_delete_removes_it(api_a: Api) -> None:
    hook = create(api_a)
    assert api_a.delete(f"webhooks/{hook['id']}").status_code == 204
    assert api_a.get(f"webhooks/{hook['id']}").status_code == 404


def test_a_read_key_cannot_create(reader_a: Api) -> None:
    assert reader_a.post("webhooks", HOOK).status_code == 403
    assert not WebhookEndpoint.objects.exists()


def test_deliveries_show_each_attempt(api_a: Api, enqueued: list[str]) -> None:
    hook = create(api_a)
    execution = Execution.objects.create(tenant=api_a.tenant, blueprint="demo.chain", state="completed")
    delivery = WebhookDelivery.objects.create(
        tenant=api_a.tenant,
        endpoint_id=hook["id"],
        execution=execution,
        url=HOOK["url"],
        event_type="data-execution-end",
        event_id="evt_x",
        attempts=1,
        last_status=500,
    )
    WebhookAttempt.objects.create(
        delivery=delivery, number=1, started_at=timezone.now(), status_code=500, response_body="oops", duration_ms=12
    )
    page = api_a.get(f"webhooks/{hook['id']}/deliveries").json()
    (row,) = page["results"]
    assert (row["id"], row["webhook_id"], row["execution_id"], row["event"], row["state"]) == (
        delivery.pk,
        hook["id"],
        execution.pk,
        "data-execution-end",
        "pending",
    )
    assert [(a["number"], a["status_code"], a["response_body"]) for a in row["attempt_log"]] == [(1, 500, "oops")]


def test_a_submission_webhook_host_is_checked_and_a_refusal_stores_nothing(api_a: Api, enqueued: list[str]) -> None:
    submit = {"blueprint": "demo.chain", "input": {"n": 1}}
    response = api_a.post("executions", {**submit, "webhook": "https://evil.example.org/h"})
    assert response.status_code == 400
    assert error_of(response)["details"]["field"] == "webhook"
    assert api_a.post("executions", {**submit, "webhook": 5}).status_code == 400
    assert not Execution.objects.exists()
    response = api_a.post("executions", {**submit, "webhook": "https://hooks.example.com/run"})
    assert response.status_code == 201, response.json()
    assert Execution.objects.get(pk=response.json()["id"]).webhook == "https://hooks.example.com/run"


def test_the_signing_secret_is_the_tenants_own(api_a: Api, api_b: Api) -> None:
    first = api_a.post("webhooks/signing-secret").json()["secret"]
    second = api_a.post("webhooks/signing-secret").json()["secret"]
    assert first != second
    assert decrypt(WebhookSigningSecret.objects.get(tenant=api_a.tenant).secret_ciphertext) == second
    assert not WebhookSigningSecret.objects.filter(tenant=api_b.tenant).exists()


def test_every_delivery_of_the_tenant_lists_by_execution_and_state(api_a: Api, api_b: Api) -> None:
    mine = Execution.objects.create(tenant=api_a.tenant, blueprint="demo.chain", state="completed")
    other = Execution.objects.create(tenant=api_a.tenant, blueprint="demo.chain", state="completed")
    theirs = Execution.objects.create(tenant=api_b.tenant, blueprint="demo.chain", state="completed")
    made = {}
    for name, execution, state in (
        ("mine", mine, "pending"),
        ("other", other, "failed"),
        ("theirs", theirs, "pending"),
    ):
        made[name] = WebhookDelivery.objects.create(
            tenant=execution.tenant,
            execution=execution,
            url="https://hooks.example.com/run",
            event_type="data-execution-end",
            event_id=f"evt_{name}",
            state=state,
        ).pk
    listed = [row["id"] for row in api_a.get("webhooks/deliveries").json()["results"]]
    assert sorted(listed) == sorted([made["mine"], made["other"]])
    by_execution = api_a.get("webhooks/deliveries", {"execution": mine.pk}).json()["results"]
    assert [(row["id"], row["webhook_id"]) for row in by_execution] == [(made["mine"], None)]
    assert [row["id"] for row in api_a.get("webhooks/deliveries", {"state": "failed"}).json()["results"]] == [
        made["other"]
    ]
    assert api_b.get("webhooks/deliveries", {"execution": mine.pk}).json()["results"] == []
    assert api_a.get("webhooks/deliveries", {"state": "lost"}).status_code == 400
    assert api_a.get("webhooks/deliveries", {"colour": "red"}).status_code == 400
