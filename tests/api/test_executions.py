"""The executions endpoints of /api/v1/: success and failure paths, each with the error body."""

from __future__ import annotations

from typing import Any

import pytest

from executions import selectors
from executions.models import Execution, InboxMessage
from tenants.models import Tenant, TenantDailyUsage
from tenants.services import tenant_set_limits

from .conftest import Api, error_of

pytestmark = pytest.mark.django_db


def submit(api: Api, blueprint: str = "demo.chain", input: Any = None, **extra: Any) -> Any:
    return api.post("executions", {"blueprint": blueprint, "input": {"n": 2} if input is None else input, **extra})


# --- submission --------------------------------------------------------------------------------


def test_submit_creates_a_queued_execution_and_enqueues_it(
    api_a: Api, enqueued: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = submit(api_a, metadata={"source": "test"})
    assert response.status_code == 201
    body = response.json()
    assert body["state"] == "queued"
    assert body["blueprint"] == "demo.chain"
    assert body["input"] == {"n": 2}
    assert body["metadata"] == {"source": "test"}
    assert body["last_seq"] == 0
    assert body["parent_id"] is None
    assert enqueued == [body["id"]]
    assert Execution.objects.get(pk=body["id"]).tenant == api_a.tenant


def test_a_repeated_idempotency_key_returns_the_first_execution(
    api_a: Api, enqueued: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        first = submit(api_a, idempotency_key="order-42")
        again = submit(api_a, input={"n": 5}, idempotency_key="order-42")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["input"] == {"n": 2}
    assert Execution.objects.count() == 1
    assert len(enqueued) == 1


def test_idempotency_keys_are_per_tenant(api_a: Api, api_b: Api, enqueued: list[str]) -> None:
    a = submit(api_a, idempotency_key="same")
    b = submit(api_b, idempotency_key="same")
    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"input": {"n": 2}}, "blueprint"),
        ({"blueprint": "demo.chain", "input": {"n": 2}, "colour": "red"}, "colour"),
        ({"blueprint": 7, "input": {}}, "blueprint"),
        ({"blueprint": "demo.chain", "idempotency_key": ["x"]}, "idempotency_key"),
        ({"blueprint": "demo.chain", "metadata": "nope"}, "metadata"),
        ({"blueprint": "demo.chain", "version": 0}, "version"),
        ({"blueprint": "demo.chain", "version": "one"}, "version"),
    ],
)
def test_submit_refuses_a_malformed_body(api_a: Api, enqueued: list[str], body: dict[str, Any], where: str) -> None:
    response = api_a.post("executions", body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert where in error["details"]["fields"]
    assert Execution.objects.count() == 0
    assert enqueued == []


@pytest.mark.parametrize(
    "raw", [b"{not json", b'{"blueprint": "demo.chain",}', b"\xff\xfe", b'{"blueprint": NaN}', b"[1, 2]", b'"text"']
)
def test_submit_refuses_what_is_not_a_json_object(api_a: Api, enqueued: list[str], raw: bytes) -> None:
    response = api_a.post("executions", raw=raw)
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_input"
    assert Execution.objects.count() == 0


def test_submit_refuses_an_unknown_blueprint_and_input_its_schema_refuses(api_a: Api, enqueued: list[str]) -> None:
    unknown = submit(api_a, blueprint="demo.nope")
    assert unknown.status_code == 400
    assert "demo.chain" in error_of(unknown)["details"]["blueprints"]
    wrong = submit(api_a, blueprint="demo.pipeline", input={"text": 3})
    assert wrong.status_code == 400
    assert "input.text" in error_of(wrong)["message"]
    other_version = submit(api_a, version=99)
    assert other_version.status_code == 404
    assert error_of(other_version)["details"] == {"versions": [1]}
    assert Execution.objects.count() == 0


def test_an_oversized_body_is_refused_with_413(api_a: Api, enqueued: list[str], settings: Any) -> None:
    settings.ENACT_API_MAX_BODY_BYTES = 2048
    response = submit(api_a, blueprint="demo.pipeline", input={"text": "x" * 4000})
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert Execution.objects.count() == 0


def test_input_over_the_tenants_limit_is_refused_with_413(api_a: Api, enqueued: list[str]) -> None:
    tenant_set_limits(tenant=api_a.tenant, changes={"max_input_bytes": 100})
    response = submit(api_a, blueprint="demo.pipeline", input={"text": "x" * 200})
    assert response.status_code == 413
    assert error_of(response)["details"]["maximum"] == 100
    assert Execution.objects.count() == 0


def test_a_spent_day_quota_answers_429(api_a: Api, enqueued: list[str]) -> None:
    tenant_set_limits(tenant=api_a.tenant, changes={"executions_per_day": 1})
    assert submit(api_a).status_code == 201
    refused = submit(api_a)
    assert refused.status_code == 429
    assert error_of(refused)["code"] == "quota_exceeded"
    assert Execution.objects.count() == 1
    assert TenantDailyUsage.objects.get(tenant=api_a.tenant).executions == 1


def test_a_suspended_tenant_submits_nothing(api_a: Api, enqueued: list[str]) -> None:
    Tenant.objects.filter(pk=api_a.tenant.pk).update(status=Tenant.Status.SUSPENDED)
    response = submit(api_a)
    assert response.status_code == 429
    assert "suspended" in error_of(response)["message"]
    assert Execution.objects.count() == 0


# --- reading ------------------------------------------------------------------------------------


def test_list_is_newest_first_with_a_cursor(api_a: Api, enqueued: list[str]) -> None:
    ids = [submit(api_a, input={"n": i + 1}).json()["id"] for i in range(5)]
    first = api_a.get("executions", {"limit": 2})
    assert first.status_code == 200
    page = first.json()
    assert [e["id"] for e in page["results"]] == ids[::-1][:2]
    seen = [e["id"] for e in page["results"]]
    while page["next"]:
        page = api_a.client.get(page["next"], headers={"Authorization": f"Bearer {api_a.key}"}).json()
        seen += [e["id"] for e in page["results"]]
    assert seen == ids[::-1]


def test_list_filters(api_a: Api, enqueued: list[str]) -> None:
    chain = submit(api_a).json()["id"]
    pipeline = submit(api_a, blueprint="demo.pipeline", input={"text": "hi"}).json()["id"]
    api_a.post(f"executions/{chain}/cancel", {})

    def ids(**query: str) -> list[str]:
        response = api_a.get("executions", query)
        assert response.status_code == 200, response.json()
        return [e["id"] for e in response.json()["results"]]

    assert ids(state="cancelled") == [chain]
    assert ids(blueprint="demo.pipeline") == [pipeline]
    assert ids(q=pipeline) == [pipeline]
    assert ids(q="pipeline") == [pipeline]
    created = Execution.objects.get(pk=chain).created_at
    assert ids(created_before=created.isoformat()) == []
    assert set(ids(created_after="2000-01-01T00:00:00Z")) == {chain, pipeline}


@pytest.mark.parametrize(
    "query",
    [
        {"state": "sleeping"},
        {"created_after": "yesterday"},
        {"cursor": "garbage"},
        {"limit": "0"},
        {"limit": "x"},
        {"limit": "¹"},
    ],
)
def test_list_refuses_bad_filters(api_a: Api, query: dict[str, str]) -> None:
    response = api_a.get("executions", query)
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_input"


def test_list_shows_only_the_callers_tenant(api_a: Api, api_b: Api, enqueued: list[str]) -> None:
    mine = submit(api_a).json()["id"]
    submit(api_b)
    assert [e["id"] for e in api_a.get("executions").json()["results"]] == [mine]


def test_detail_steps_events_of_a_queued_execution(api_a: Api, enqueued: list[str]) -> None:
    execution_id = submit(api_a).json()["id"]
    detail = api_a.get(f"executions/{execution_id}")
    assert detail.status_code == 200
    assert detail.json()["id"] == execution_id
    assert api_a.get(f"executions/{execution_id}/steps").json() == {"results": [], "next": None}
    assert api_a.get(f"executions/{execution_id}/events").json() == {"results": [], "next": None}
    assert api_a.get(f"executions/{execution_id}/artifacts").json() == []


@pytest.mark.parametrize("query", [{"after": "-1"}, {"after": "x"}, {"limit": "0"}, {"limit": "5000"}, {"sort": "x"}])
def test_events_refuses_bad_paging(api_a: Api, enqueued: list[str], query: dict[str, str]) -> None:
    execution_id = submit(api_a).json()["id"]
    response = api_a.get(f"executions/{execution_id}/events", query)
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_input"


def test_tenant_shows_limits_and_usage(api_a: Api, enqueued: list[str]) -> None:
    submit(api_a)
    body = api_a.get("tenant").json()
    assert (body["slug"], body["name"], body["status"]) == ("acme", "Acme", "active")
    assert body["limits"]["max_concurrent_executions"] == 5
    assert body["limits"]["requests_per_minute"] == 600
    assert body["usage"]["executions_today"] == 1
    assert body["usage"]["queued_executions"] + body["usage"]["running_executions"] == 1


def test_blueprints_are_the_registered_graphs(api_a: Api) -> None:
    names = {b["name"] for b in api_a.get("blueprints").json()}
    assert {"demo.pipeline", "demo.slow", "demo.fanout", "demo.approval", "demo.flaky", "demo.chain"} <= names
    chain = api_a.get("blueprints/demo.chain").json()
    assert chain["input_schema"]["properties"]["n"]["type"] == "integer"
    assert chain["version"] == 1
    missing = api_a.get("blueprints/demo.none")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"


# --- controls -----------------------------------------------------------------------------------


def test_cancel_a_queued_execution_then_again(api_a: Api, enqueued: list[str]) -> None:
    execution_id = submit(api_a).json()["id"]
    first = api_a.post(f"executions/{execution_id}/cancel", {"reason": "not needed"})
    assert first.status_code == 202
    assert first.json()["state"] == "cancelled"
    again = api_a.post(f"executions/{execution_id}/cancel", {})
    assert again.status_code == 200
    assert again.json()["state"] == "cancelled"
    events = api_a.get(f"executions/{execution_id}/events").json()["results"]
    assert [e["type"] for e in events] == ["data-execution-cancelled"]
    assert events[0]["seq"] == 1


def test_cancel_refuses_a_bad_body(api_a: Api, enqueued: list[str]) -> None:
    execution_id = submit(api_a).json()["id"]
    for body in ({"reason": 5}, {"reason": "x" * 501}, {"why": "x"}):
        response = api_a.post(f"executions/{execution_id}/cancel", body)
        assert response.status_code == 400, body
    assert Execution.objects.get(pk=execution_id).state == "queued"


def test_pause_resume_input_are_refused_in_the_wrong_state(api_a: Api, enqueued: list[str]) -> None:
    execution_id = submit(api_a).json()["id"]
    for action, body in (("pause", {}), ("resume", {}), ("input", {"input": 1})):
        response = api_a.post(f"executions/{execution_id}/{action}", body)
        assert response.status_code == 409, action
        assert error_of(response)["details"]["state"] == "queued"
    assert Execution.objects.get(pk=execution_id).state == "queued"
    assert not Execution.objects.get(pk=execution_id).resume_requested


def test_inbox_takes_guidance_and_refuses_bad_messages(api_a: Api, enqueued: list[str]) -> None:
    execution_id = submit(api_a).json()["id"]
    posted = api_a.post(f"executions/{execution_id}/inbox", {"kind": "guidance", "content": "be brief"})
    assert posted.status_code == 202
    assert posted.json()["id"].startswith("msg_")
    for body in ({"kind": "shout", "content": "x"}, {"content": "x"}, {"kind": "guidance"}, [1]):
        response = api_a.post(f"executions/{execution_id}/inbox", body)
        assert response.status_code == 400, body
    assert InboxMessage.objects.filter(execution_id=execution_id).count() == 1


def test_bulk_cancel_by_ids_and_by_filter(api_a: Api, api_b: Api, enqueued: list[str]) -> None:
    a1, a2, a3 = (submit(api_a).json()["id"] for _ in range(3))
    b1 = submit(api_b).json()["id"]
    by_ids = api_a.post("executions/cancel", {"ids": [a1, b1, "exec_nope"]})
    assert by_ids.status_code == 200
    assert by_ids.json() == {"cancelled": 1, "cancel_requested": 0, "already_terminal": 0, "not_found": 2}
    by_filter = api_a.post("executions/cancel", {"filter": {"state": "queued", "blueprint": "demo.chain"}})
    assert by_filter.json() == {"cancelled": 2, "cancel_requested": 0, "already_terminal": 0, "not_found": 0}
    assert set(Execution.objects.filter(state="cancelled").values_list("pk", flat=True)) == {a1, a2, a3}
    assert Execution.objects.get(pk=b1).state == "queued"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": ["a"], "filter": {"state": "queued"}},
        {"ids": "exec_x"},
        {"filter": {}},
        {"filter": {"state": "sleeping"}},
        {"filter": {"colour": "red"}},
        {"ids": ["x"] * 1001},
    ],
)
def test_bulk_cancel_refuses_bad_bodies(api_a: Api, enqueued: list[str], body: dict[str, Any]) -> None:
    execution_id = submit(api_a).json()["id"]
    response = api_a.post("executions/cancel", body)
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_input"
    assert Execution.objects.get(pk=execution_id).state == "queued"


def test_unknown_paths_and_methods_answer_with_the_error_body(api_a: Api) -> None:
    missing = api_a.get("nothing/here")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"
    wrong_method = api_a.delete("executions")
    assert wrong_method.status_code == 405
    assert error_of(wrong_method)["code"] == "method_not_allowed"


def test_schema_and_docs_are_served(anonymous: Api) -> None:
    schema = anonymous.client.get("/api/schema/", headers={"Accept": "application/json"})
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/executions/{execution_id}/stream" in paths
    assert "post" in paths["/api/v1/executions"]
    docs = anonymous.client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content


# --- inputs that once reached the database or the renderer ---------------------------------------


def _cursor(position: str) -> str:
    import base64

    return base64.b64encode(f"p={position}".encode()).decode()


def test_a_forged_cursor_is_refused(api_a: Api, enqueued: list[str]) -> None:
    submit(api_a)
    response = api_a.get("executions", {"cursor": _cursor("garbage")})
    assert response.status_code == 400
    assert error_of(response)["message"] == "invalid cursor"


def test_a_cursor_at_the_end_of_time_is_a_page_or_refused_never_a_crash(api_a: Api, enqueued: list[str]) -> None:
    submit(api_a)
    response = api_a.get("executions", {"cursor": _cursor("9999-12-31 23:59:59-01:00")})
    # PostgreSQL has year 10000 (past every row: a full page); SQLite's driver overflows (refused).
    if response.status_code == 200:
        assert len(response.json()["results"]) == 1
    else:
        assert (response.status_code, error_of(response)["message"]) == (400, "invalid cursor")


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000,
        b'{"blueprint": "demo.chain", "input": {"n": 1}, "metadata": {"x": 1e999}}',
        b'{"blueprint": "demo.chain", "input": {"n": -1e400}}',
    ],
)
def test_json_that_python_reads_but_json_does_not_allow_is_refused(api_a: Api, enqueued: list[str], raw: bytes) -> None:
    response = api_a.post("executions", raw=raw)
    assert response.status_code == 400
    assert error_of(response)["message"].startswith("malformed JSON")
    assert Execution.objects.count() == 0


@pytest.mark.parametrize(
    ("path", "raw", "message"),
    [
        ("executions", rb'{"blueprint": "demo.chain", "input": {"n": 1}, "metadata": {"a": "x\u0000"}}', "NUL"),
        ("executions", rb'{"blueprint": "demo.chain", "input": {"n": 1}, "metadata": {"\u0000": 1}}', "NUL"),
        ("executions", rb'{"blueprint": "demo.chain", "input": {"n": 1}, "metadata": {"a": ["\ud800"]}}', "surrogate"),
        ("inbox", rb'{"kind": "a2a", "from_agent": "\u0000?", "message_type": "x", "content": "y"}', "NUL"),
        ("inbox", rb'{"kind": "guidance", "content": "\udfff"}', "surrogate"),
    ],
)
def test_text_no_database_can_store_is_refused_and_nothing_is_written(
    api_a: Api, enqueued: list[str], path: str, raw: bytes, message: str
) -> None:
    """PostgreSQL refuses NUL in text and jsonb, and lone surrogates are not UTF-8: both are
    bad input (400), never a server error half way through a write."""
    target = "executions"
    if path == "inbox":
        target = f"executions/{submit(api_a).json()['id']}/inbox"
    before = (Execution.objects.count(), InboxMessage.objects.count())
    response = api_a.post(target, raw=raw)
    assert response.status_code == 400
    assert (error_of(response)["code"], message in error_of(response)["message"]) == ("invalid_input", True)
    assert (Execution.objects.count(), InboxMessage.objects.count()) == before


def test_inbox_records_who_posted_and_refuses_what_it_cannot_store(api_a: Api, enqueued: list[str]) -> None:
    execution_id = submit(api_a).json()["id"]
    posted = api_a.post(
        f"executions/{execution_id}/inbox", {"kind": "guidance", "content": "x", "sender": "user:admin"}
    )
    assert posted.status_code == 202
    message = InboxMessage.objects.get(pk=posted.json()["id"])
    assert message.actor.startswith("key:")
    assert message.payload["sender"] == message.actor
    evidence = {"kind": "evidence", "source": "s", "title": "t"}
    assert api_a.post(f"executions/{execution_id}/inbox", evidence).status_code == 202
    for bad in (
        {**evidence, "confidence": "nan"},
        {**evidence, "confidence": "inf"},
        {**evidence, "source": "s" * 201},
        {"kind": "a2a", "from_agent": "a" * 300, "message_type": "hello"},
        {"kind": "a2a", "from_agent": 5, "message_type": "hello"},
    ):
        response = api_a.post(f"executions/{execution_id}/inbox", bad)
        assert response.status_code == 400, bad
    assert InboxMessage.objects.filter(execution_id=execution_id).count() == 2


def test_errors_are_json_with_debug_on(api_a: Api, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.DEBUG = True
    missing = api_a.get("no/such/endpoint")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "not_found"

    def broken(**kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(selectors, "execution_list", broken)
    api_a.client.raise_request_exception = False
    crashed = api_a.get("executions")
    assert crashed.status_code == 500
    assert error_of(crashed) == {
        "code": "server_error",
        "message": "the server failed; the error was logged",
        "details": {},
    }
