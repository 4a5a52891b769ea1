"""The execution page as the server renders it: its summary (origin, times, error in words, the
executions around it), its controls for operators only, and the step JSON its fork form and model
view read (the tenant's own executions only)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from executions.kernel.ids import new_step_id
from executions.models import Execution, ExecutionEvent, Step
from executions.runtime.run import execution_run
from executions.services.blueprints import blueprint_save
from executions.services.derive import execution_fork, execution_rerun
from executions.services.schedules import schedule_create
from executions.services.submit import execution_submit
from executions.views import detail
from tenants.models import Membership, Tenant
from tenants.services import api_key_create, api_key_revoke, membership_set

pytestmark = pytest.mark.django_db(transaction=True)


def _login(tenant: Tenant, role: str, username: str = "dana") -> tuple[Client, User]:
    user = User.objects.create_user(username, password="a-long-password-1")
    membership_set(tenant=tenant, user=user, role=role)
    client = Client()
    client.force_login(user)
    return client, user


def _page_json(html: str) -> dict[str, Any]:
    found = re.search(r'<script id="page" type="application/json">(.*?)</script>', html, re.S)
    assert found is not None
    return json.loads(found.group(1))


def _ran(tenant: Tenant, blueprint: str, input: Any, **extra: Any) -> Execution:
    execution, _ = execution_submit(tenant=tenant, blueprint=blueprint, input=input, **extra)
    execution_run(execution.pk)
    execution.refresh_from_db()
    return execution


def test_the_summary_says_who_started_it_when_and_links_reruns_and_forks(tenant_a: Tenant, enqueued: list[str]) -> None:
    client, user = _login(tenant_a, Membership.Role.OPERATOR)
    first = _ran(tenant_a, "demo.pipeline", {"text": "hello hello world"}, user=user)
    assert first.state == "completed"
    rerun, _ = execution_rerun(tenant=tenant_a, execution_id=first.pk)
    step = first.steps.order_by("position")[1]
    fork, _ = execution_fork(tenant=tenant_a, execution_id=first.pk, from_step=step.pk)

    html = client.get(f"/executions/{first.pk}/").content.decode()
    origin = re.search(r'<dd id="origin"[^>]*>(.*?)</dd>', html, re.S)
    assert origin is not None
    assert "Submitted" in origin.group(1)
    assert "<strong>dana</strong>" in origin.group(1)
    # Times as <time datetime> for the script to write in the reader's zone.
    assert f'<time datetime="{first.started_at.isoformat()}' in html
    assert f'<time datetime="{first.ended_at.isoformat()}' in html
    derived = re.search(r'<ul class="related" id="derived">(.*?)</ul>', html, re.S)
    assert derived is not None
    assert f'href="/executions/{rerun.pk}/"' in derived.group(1)
    assert "a rerun" in derived.group(1)
    assert f'href="/executions/{fork.pk}/"' in derived.group(1)
    assert "a fork" in derived.group(1)
    page = _page_json(html)
    assert page["execution"]["input"] == {"text": "hello hello world"}
    assert page["execution"]["output"] == first.output
    assert page["execution"]["origin"] == "submit"

    forked = client.get(f"/executions/{fork.pk}/").content.decode()
    assert re.search(rf'A fork\s+of <a href="/executions/{first.pk}/" data-link="source">', forked)
    rerun_page = client.get(f"/executions/{rerun.pk}/").content.decode()
    assert re.search(rf'A rerun\s+of <a href="/executions/{first.pk}/"', rerun_page)


def test_a_submission_through_the_api_names_its_key_and_so_do_its_reruns(tenant_a: Tenant, enqueued: list[str]) -> None:
    client, _ = _login(tenant_a, Membership.Role.VIEWER)
    key, raw = api_key_create(tenant=tenant_a, scope="write", name="nightly-batch")
    program = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")
    submitted = program.post(
        "/api/v1/executions", {"blueprint": "demo.chain", "input": {"n": 1}}, content_type="application/json"
    )
    assert submitted.status_code == 201, submitted.json()
    execution_id = submitted.json()["id"]
    assert Execution.objects.get(pk=execution_id).created_by_key == key
    rerun = program.post(f"/api/v1/executions/{execution_id}/rerun", {}, content_type="application/json")
    assert rerun.status_code == 201, rerun.json()

    def origin(pk: str) -> str:
        found = re.search(r'<dd id="origin"[^>]*>(.*?)</dd>', client.get(f"/executions/{pk}/").content.decode(), re.S)
        assert found is not None
        return " ".join(found.group(1).split())

    said = f'through the API with the key <strong id="started-by-key">nightly-batch</strong> <code>{key.prefix}…</code>'
    assert origin(execution_id).startswith(f"Submitted {said}")
    assert said in origin(rerun.json()["id"])
    api_key_revoke(tenant=tenant_a, key_id=key.pk)
    assert origin(execution_id).startswith(f"Submitted {said} (since revoked)")
    # A submission of the command line has neither a person nor a key to name.
    by_hand, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    assert origin(by_hand.pk) == "Submitted from the command line, or with an API key since deleted"


def test_a_scheduled_run_names_its_schedule_and_a_child_its_parent(tenant_a: Tenant, enqueued: list[str]) -> None:
    client, _ = _login(tenant_a, Membership.Role.VIEWER)
    schedule = schedule_create(
        tenant=tenant_a, name="nightly-digest", blueprint="demo.chain", input={"n": 1}, interval_seconds=3600
    )
    fired, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1}, schedule=schedule)
    child, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1}, parent=fired)
    html = client.get(f"/executions/{fired.pk}/").content.decode()
    origin = re.search(r'<dd id="origin"[^>]*>(.*?)</dd>', html, re.S)
    assert origin is not None
    assert "Started by a schedule" in origin.group(1)
    assert "<strong>nightly-digest</strong>" in origin.group(1)
    children = re.search(r'<ul class="related" id="children">(.*?)</ul>', html, re.S)
    assert children is not None
    assert f'href="/executions/{child.pk}/"' in children.group(1)
    child_html = client.get(f"/executions/{child.pk}/").content.decode()
    assert f'href="/executions/{fired.pk}/" data-link="parent"' in child_html


def test_a_failure_is_told_in_words_with_its_category_and_step(tenant_a: Tenant, enqueued: list[str]) -> None:
    client, _ = _login(tenant_a, Membership.Role.VIEWER)
    blueprint_save(
        tenant=tenant_a,
        name="fetcher",
        definition={
            "entry": "fetch",
            "nodes": {"fetch": {"kind": "http", "config": {"url": "https://forbidden.example/x", "method": "GET"}}},
            "edges": [{"from": "fetch", "to": "end"}],
        },
    )
    failed = _ran(tenant_a, "fetcher", {})
    assert failed.state == "failed"
    step = failed.steps.get(name="fetch")
    html = client.get(f"/executions/{failed.pk}/").content.decode()
    box = re.search(r'<div id="error-box"[^>]*>(.*?)</div>', html, re.S)
    assert box is not None
    opening = re.search(r'<div id="error-box"[^>]*>', html)
    assert opening is not None
    assert "hidden" not in opening.group(0)
    assert failed.error["message"] in box.group(1).replace("&#x27;", "'")
    assert f'<strong id="error-category">{failed.error["category"]}</strong>' in box.group(1)
    assert f'data-step-link="{step.pk}">fetch</a>' in box.group(1)
    assert "{&#x27;" not in box.group(1)  # not the raw dict

    fine = _ran(tenant_a, "demo.chain", {"n": 1})
    ok_html = client.get(f"/executions/{fine.pk}/").content.decode()
    assert re.search(r'<div id="error-box"[^>]*hidden', ok_html)


def test_rerun_and_fork_are_offered_to_operators_only(tenant_a: Tenant, enqueued: list[str]) -> None:
    done = _ran(tenant_a, "demo.chain", {"n": 2})
    operator, _ = _login(tenant_a, Membership.Role.OPERATOR, "olga")
    viewer, _ = _login(tenant_a, Membership.Role.VIEWER, "vic")
    html = operator.get(f"/executions/{done.pk}/").content.decode()
    for part in ('id="rerun"', 'id="fork"', 'id="cancel-confirm"'):
        assert part in html
    seen = viewer.get(f"/executions/{done.pk}/").content.decode()
    for part in ('id="rerun"', 'id="fork"', 'id="cancel-confirm"'):
        assert part not in seen


def test_the_step_json_gives_the_state_a_fork_starts_from(
    tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]
) -> None:
    client, _ = _login(tenant_a, Membership.Role.OPERATOR)
    done = _ran(tenant_a, "demo.chain", {"n": 3})
    steps = list(done.steps.order_by("position"))
    body = client.get(f"/executions/{done.pk}/steps/{steps[2].pk}.json").json()
    assert body["forkable"] is True
    assert body["state"] == 2  # two increments ran before the third step
    assert body["step"]["name"] == "n_3"
    first = client.get(f"/executions/{done.pk}/steps/{steps[0].pk}.json").json()
    assert (first["forkable"], first["state"]) == (True, {"n": 3})  # the entry is given the input

    # Another tenant's execution, or a step of another execution, is not there.
    theirs = _ran(tenant_b, "demo.chain", {"n": 1})
    their_step = theirs.steps.get()
    assert client.get(f"/executions/{theirs.pk}/steps/{their_step.pk}.json").status_code == 404
    assert client.get(f"/executions/{done.pk}/steps/{their_step.pk}.json").status_code == 404
    assert Client().get(f"/executions/{done.pk}/steps/{steps[0].pk}.json").status_code == 302


def test_a_running_execution_cannot_be_forked_and_the_json_says_why(tenant_a: Tenant, enqueued: list[str]) -> None:
    client, _ = _login(tenant_a, Membership.Role.OPERATOR)
    waiting = _ran(tenant_a, "demo.approval", {})
    assert waiting.state == "waiting"
    draft = waiting.steps.get(name="draft")
    Execution.objects.filter(pk=waiting.pk).update(state="running")
    body = client.get(f"/executions/{waiting.pk}/steps/{draft.pk}.json").json()
    assert body["forkable"] is False
    assert "running" in body["reason"]


def test_a_big_graph_and_its_next_node_are_in_the_page(tenant_a: Tenant, enqueued: list[str]) -> None:
    client, _ = _login(tenant_a, Membership.Role.VIEWER)
    big, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 120})
    page = _page_json(client.get(f"/executions/{big.pk}/").content.decode())
    assert len(page["graph"]["nodes"]) == 120
    assert page["next_nodes"] == []
    waiting = _ran(tenant_a, "demo.approval", {})
    page = _page_json(client.get(f"/executions/{waiting.pk}/").content.decode())
    assert page["next_nodes"] == ["approve"]  # asked, and runs again with the answer
    assert page["steps"][-1]["output"]["interrupted"] == "approval"


def test_a_big_step_output_stays_out_of_the_page_and_is_read_whole_on_request(
    tenant_a: Tenant, enqueued: list[str]
) -> None:
    client, _ = _login(tenant_a, Membership.Role.VIEWER)
    execution = _ran(tenant_a, "demo.pipeline", {"text": "hello hello world"})
    small, big = execution.steps.order_by("position")[:2]
    reply = {"text": "x" * 50_000}
    big.output = reply
    big.save(update_fields=["output"])

    html = client.get(f"/executions/{execution.pk}/").content.decode()
    assert "x" * 3000 not in html
    steps = {s["id"]: s for s in _page_json(html)["steps"]}
    assert steps[big.pk]["output"] is None
    assert steps[big.pk]["output_cut"] is True
    assert steps[big.pk]["output_preview"].startswith('{"text":"xxx')
    assert steps[small.pk]["output"] == small.output  # a small one comes whole
    assert "output_cut" not in steps[small.pk]

    whole = client.get(f"/executions/{execution.pk}/steps/{big.pk}.json").json()
    assert whole["step"]["output"] == reply


def _model_step(execution: Execution, position: int, text: str) -> Step:
    """A model's step added to a finished execution, as the runtime stores one that ended."""
    return Step.objects.create(
        id=new_step_id(),
        execution=execution,
        position=position,
        name=f"ask_{position}",
        step_type="llm_node",
        state="completed",
        output={"text": text, "model": "test-model"},
    )


def test_the_model_view_s_step_json_skips_the_fork_state(
    tenant_a: Tenant, enqueued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = _login(tenant_a, Membership.Role.VIEWER)
    execution = _ran(tenant_a, "demo.pipeline", {"text": "hello hello world"})
    step = _model_step(execution, 50, "Ships within a day.")
    url = f"/executions/{execution.pk}/steps/{step.pk}.json"
    with CaptureQueriesContext(connection) as whole:
        assert client.get(url).json()["llm"]["text"] == "Ships within a day."

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the model view does not need the fork state")

    monkeypatch.setattr(detail, "lane_before", refused)
    monkeypatch.setattr(detail, "blueprint_lookup", refused)
    with CaptureQueriesContext(connection) as light:
        body = client.get(url + "?llm=1").json()
    assert body["llm"]["text"] == "Ships within a day."
    assert body["step"]["id"] == step.pk
    assert len(light.captured_queries) < len(whole.captured_queries)


def test_malformed_ids_are_not_found_before_any_query_about_them(tenant_a: Tenant, enqueued: list[str]) -> None:
    client, _ = _login(tenant_a, Membership.Role.VIEWER)
    execution = _ran(tenant_a, "demo.pipeline", {"text": "hello"})
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/executions/exec_%00/").status_code == 404
        assert client.get(f"/executions/{execution.pk}/steps/ab%00c.json").status_code == 404
        assert client.get(f"/executions/{execution.pk}/steps/ab%00c.json?llm=1").status_code == 404
    touched = " ".join(q["sql"] for q in queries.captured_queries)
    assert "executions_executionevent" not in touched
    assert "executions_step" not in touched


def test_reruns_and_forks_listed_are_bounded_and_counted(
    tenant_a: Tenant, enqueued: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, _ = _login(tenant_a, Membership.Role.VIEWER)
    first = _ran(tenant_a, "demo.pipeline", {"text": "hello"})
    for _ in range(3):
        execution_rerun(tenant=tenant_a, execution_id=first.pk)
    monkeypatch.setattr(detail, "DERIVED_SHOWN", 2)
    html = client.get(f"/executions/{first.pk}/").content.decode()
    listed = re.search(r'<ul class="related" id="derived">(.*?)</ul>', html, re.S)
    assert listed is not None
    assert listed.group(1).count("<li>") == 2
    assert "The first 2 of 3 reruns and forks are listed." in html


def test_a_step_s_events_are_read_through_their_index(tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = _ran(tenant_a, "demo.pipeline", {"text": "hello"})
    step = execution.steps.order_by("position").first()
    assert step is not None
    events = ExecutionEvent.objects.filter(execution=execution, step_id=step.pk).order_by("seq").values("seq")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")
        sql, params = events.query.sql_with_params()
        cursor.execute(("EXPLAIN QUERY PLAN " if connection.vendor == "sqlite" else "EXPLAIN ") + sql, params)
        plan = " ".join(str(part) for row in cursor.fetchall() for part in row)
    assert "event_by_step" in plan, plan
