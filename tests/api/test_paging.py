"""An execution's steps and events page like every list of the API: ``{"results", "next"}``,
``next`` a URL with a cursor that continues after the last item; with 100,000 events a page is
read by its position in the log (no count of them all, no reading them all)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions.kernel.ids import IdKind, new_id
from executions.models import Execution, ExecutionEvent, Step
from executions.services.submit import execution_submit
from tenants.models import Tenant

from .conftest import Api, error_of

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _execution_with(tenant: Tenant, events: int, steps: int = 0) -> Execution:
    execution, _ = execution_submit(tenant=tenant, blueprint="demo.chain", input={"n": 1})
    batch = 5000
    for start in range(1, events + 1, batch):
        ExecutionEvent.objects.bulk_create(
            ExecutionEvent(
                id=new_id(IdKind.EVENT), execution=execution, tenant=tenant, seq=seq, type="data-step-start",
                timestamp=NOW, data={"n": seq},
            )
            for seq in range(start, min(start + batch, events + 1))
        )  # fmt: skip
    Step.objects.bulk_create(
        Step(
            id=new_id(IdKind.STEP),
            execution=execution,
            position=p,
            name=f"s{p}",
            step_type="function",
            state="completed",
        )
        for p in range(steps)
    )
    return execution


def _walk(api: Api, first: str, params: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], int]:
    """Every item, following ``next``; and how many pages it took."""
    page = api.get(first, params)
    assert page.status_code == 200, page.content[:300]
    body = page.json()
    assert set(body) == {"results", "next"}
    items, pages = list(body["results"]), 1
    while body["next"] is not None:
        assert body["next"].startswith("http://testserver/api/v1/")
        assert "cursor=" in body["next"]
        body = api.get(body["next"].removeprefix("http://testserver")).json()
        items.extend(body["results"])
        pages += 1
    return items, pages


def test_events_page_with_a_cursor(api_a: Api, enqueued: list[str]) -> None:
    execution = _execution_with(api_a.tenant, events=2500)
    events, pages = _walk(api_a, f"executions/{execution.pk}/events")
    assert [e["seq"] for e in events] == list(range(1, 2501))
    assert pages == 3  # 1,000 a page by default
    events, pages = _walk(api_a, f"executions/{execution.pk}/events", {"after": 2000, "limit": 200})
    assert [e["seq"] for e in events] == list(range(2001, 2501))
    assert pages == 3
    empty = api_a.get(f"executions/{execution.pk}/events", {"after": 2500}).json()
    assert empty == {"results": [], "next": None}


def test_steps_page_with_a_cursor(api_a: Api, enqueued: list[str]) -> None:
    execution = _execution_with(api_a.tenant, events=0, steps=250)
    steps, pages = _walk(api_a, f"executions/{execution.pk}/steps", {"limit": 100})
    assert [s["position"] for s in steps] == list(range(250))
    assert pages == 3
    first = api_a.get(f"executions/{execution.pk}/steps").json()
    assert [s["position"] for s in first["results"]] == list(range(100))


@pytest.mark.parametrize("path", ["events", "steps"])
@pytest.mark.parametrize("query", [{"cursor": "garbage"}, {"cursor": "cD1hYmM="}, {"limit": "0"}, {"limit": "x"}])
def test_bad_paging_is_invalid_input(api_a: Api, enqueued: list[str], path: str, query: dict[str, str]) -> None:
    execution = _execution_with(api_a.tenant, events=3, steps=3)
    response = api_a.get(f"executions/{execution.pk}/{path}", query)
    assert response.status_code == 400, response.content[:300]
    assert error_of(response)["code"] == "invalid_input"


def test_a_page_of_100000_events_reads_one_page(api_a: Api, enqueued: list[str]) -> None:
    execution = _execution_with(api_a.tenant, events=100_000)
    body = api_a.get(f"executions/{execution.pk}/events", {"after": 98_000}).json()
    with CaptureQueriesContext(connection) as queries:
        page = api_a.get(body["next"].removeprefix("http://testserver")).json()
    assert [e["seq"] for e in page["results"]] == list(range(99_001, 100_001))
    assert page["next"] is None
    sql = [q["sql"].upper() for q in queries.captured_queries]
    assert not any("COUNT(" in q for q in sql), sql
    on_events = [q for q in sql if "EXECUTIONEVENT" in q]
    assert len(on_events) == 1, on_events
    assert "LIMIT" in on_events[0]
    assert '"SEQ" >' in on_events[0]


def test_the_schema_says_they_page(api_a: Api) -> None:
    schema = api_a.get("/api/schema/", headers={"Accept": "application/json"}).json()
    for path in ("/api/v1/executions/{execution_id}/events", "/api/v1/executions/{execution_id}/steps"):
        operation = schema["paths"][path]["get"]
        ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        page = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert set(page["required"]) >= {"results", "next"}, page
        assert page["properties"]["next"]["nullable"] is True
        assert {p["name"] for p in operation["parameters"]} >= {"cursor", "limit"}
