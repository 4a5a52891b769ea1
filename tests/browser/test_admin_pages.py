"""The admin's execution and blueprint pages in Chromium, under the Content Security Policy: the
change page follows pause, resume and cancel (buttons, fields, step rows, words), a failure shows
as it happens, the list shows new executions, and a blueprint's versions read as JSON, a picture
and a diff."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from playwright.sync_api import expect

from executions.models import Blueprint, Execution, Step
from executions.services.blueprints import blueprint_save
from executions.services.controls import execution_provide_input
from executions.services.submit import execution_submit
from tenants.models import Tenant

from ..conftest import wait_until
from .test_csp import watched  # noqa: F401  # the page, with what the browser said against the policy

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-password-for-tests"


def _state(execution_id: str) -> str:
    return Execution.objects.values_list("state", flat=True).get(pk=execution_id)


def _admin_log_in(page: Any, base: str) -> None:
    User.objects.create_superuser("root", password=PASSWORD)
    page.goto(f"{base}/admin/login/")
    page.fill("input[name=username]", "root")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()


def _change(base: str, execution_id: str) -> str:
    return f"{base}/admin/executions/execution/{execution_id.replace('_', '_5F')}/change/"


def _controls(page: Any) -> list[str]:
    return list(page.locator("form.execution-control button").evaluate_all("bs => bs.map(b => b.value)"))


def test_the_change_page_follows_pause_resume_and_cancel(
    live_server_url: str,
    watched: tuple[Any, list[str]],  # noqa: F811
    tenant_a: Tenant,
) -> None:
    page, violations = watched
    running, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 60, "seconds": 0.3})
    assert wait_until(lambda: _state(running.pk) == "running", timeout=20)
    _admin_log_in(page, live_server_url)
    page.goto(_change(live_server_url, running.pk))
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    state, messages = page.locator(".field-state .readonly"), page.locator("ul.messagelist")
    expect(state).to_have_text("Running")
    assert _controls(page) == ["cancel", "pause"]

    page.click("form.execution-control button[value=pause]")
    expect(messages).to_have_text("Pause requested; it pauses at the next step boundary.")
    expect(state).to_have_text("Paused", timeout=15_000)
    expect(messages).to_have_text("Paused at the step boundary.", timeout=10_000)
    expect(page.locator("form.execution-control button[value=pause]")).to_have_count(0)
    expect(page.locator("form.execution-control button[value=resume]")).to_be_visible()
    assert "the execution is" not in messages.inner_text()

    # While paused, the step rows are one per step (server rows adopted, live ones added in place).
    rows = page.locator("#steps-group tbody tr.form-row, #steps-group tbody tr.live-step")
    expect(rows).to_have_count(Step.objects.filter(execution_id=running.pk).count(), timeout=10_000)
    ids = rows.evaluate_all("rs => rs.map(r => r.dataset.step)")
    assert len(ids) == len(set(ids)) > 0
    # A row added live lines up with the server's: the same cells, in the same columns.
    widths = rows.evaluate_all("rs => [...new Set(rs.map(r => r.cells.length))]")
    assert len(widths) == 1, widths
    expect(page.locator("#steps-group tbody tr.add-row")).to_be_hidden()

    page.click("form.execution-control button[value=resume]")
    expect(messages).to_have_text("Resume requested; it goes on from its checkpoint.")
    expect(state).to_have_text("Running", timeout=15_000)
    expect(page.locator("form.execution-control button[value=pause]")).to_be_visible()
    expect(page.locator("form.execution-control button[value=resume]")).to_have_count(0)
    # More steps run: the rows grow, still one per step, in order.
    count = rows.count()
    expect(rows).not_to_have_count(count, timeout=15_000)

    page.once("dialog", lambda dialog: dialog.accept())  # "Cancel this execution?"
    page.click("form.execution-control button[value=cancel]")
    expect(state).to_have_text("Cancelled", timeout=15_000)
    expect(messages).to_have_text("Cancelled.", timeout=10_000)
    expect(page.locator("form.execution-control")).to_have_count(0)
    expect(page.locator(".field-ended_at .readonly")).not_to_have_text("-")
    assert _state(running.pk) == "cancelled"
    page.wait_for_timeout(500)
    ids = rows.evaluate_all("rs => rs.map(r => r.dataset.step)")
    assert len(ids) == len(set(ids)) == Step.objects.filter(execution_id=running.pk).count()
    names = rows.evaluate_all("rs => rs.map(r => r.querySelector('.field-name').textContent.trim())")
    assert names == list(
        Step.objects.filter(execution_id=running.pk).order_by("position").values_list("name", flat=True)
    )
    assert page.url.endswith("/change/")  # no reload: all of it came live
    assert violations == []


def test_a_failure_shows_on_the_change_page_as_it_happens(
    live_server_url: str,
    watched: tuple[Any, list[str]],  # noqa: F811
    tenant_a: Tenant,
) -> None:
    page, violations = watched
    blueprint_save(
        tenant=tenant_a,
        name="breaks-after-approval",
        definition={
            "entry": "ask",
            "nodes": {
                "ask": {"kind": "wait", "config": {"mode": "approval", "prompt": "Go on?"}},
                "count": {
                    "kind": "function",
                    "config": {"function": "demo.word_count", "input": {"text": "{{ input.missing.deeper }}"}},
                },
            },
            "edges": [{"from": "ask", "to": "count"}],
        },
    )
    execution, _ = execution_submit(tenant=tenant_a, blueprint="breaks-after-approval", input={})
    assert wait_until(lambda: _state(execution.pk) == "waiting", timeout=20)
    _admin_log_in(page, live_server_url)
    page.goto(_change(live_server_url, execution.pk))
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    expect(page.locator(".field-error_message .readonly")).to_have_text("-")
    expect(page.locator(".field-ended_at .readonly")).to_have_text("-")

    execution_provide_input(tenant=tenant_a, execution_id=execution.pk, approve=True, actor="test")
    expect(page.locator(".field-state .readonly")).to_have_text("Failed", timeout=20_000)
    error = page.locator(".field-error_message .readonly")
    expect(error).to_contain_text("cannot read 'deeper' of null", timeout=10_000)
    expect(error).to_contain_text("It failed in step step_")
    expect(error).to_contain_text("Kind: validation.")
    expect(page.locator(".field-ended_at .readonly")).not_to_have_text("-")
    expect(page.locator("form.execution-control")).to_have_count(0)
    failed_row = page.locator("#steps-group tbody tr", has_text="count")
    expect(failed_row.locator(".field-state")).to_have_text("failed")
    expect(failed_row.locator(".field-error_message")).to_contain_text("cannot read 'deeper' of null")
    assert violations == []


def test_the_list_shows_new_executions_live(
    live_server_url: str,
    watched: tuple[Any, list[str]],  # noqa: F811
    tenant_a: Tenant,
) -> None:
    page, violations = watched
    old, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    assert wait_until(lambda: _state(old.pk) == "completed", timeout=20)
    _admin_log_in(page, live_server_url)
    page.goto(f"{live_server_url}/admin/executions/execution/")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    page.wait_for_timeout(300)

    new, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 3, "seconds": 0.3})
    row = page.locator(f'#result_list tbody tr:has(input[value="{new.pk}"])')
    expect(row).to_be_visible(timeout=15_000)
    expect(page.locator("#result_list tbody tr").first.locator("input.action-select")).to_have_value(new.pk)
    expect(page.locator("p.executions-new")).to_contain_text("1 new execution since this page was loaded.")
    expect(row.locator(".field-state")).to_have_text("Completed", timeout=20_000)
    expect(page.locator(f'#result_list tr:has(input[value="{old.pk}"]) .field-state')).to_have_text("Completed")

    row.locator(".field-id a").click()
    expect(page.locator(".field-id .readonly")).to_have_text(new.pk)
    page.goto(f"{live_server_url}/admin/executions/execution/")
    expect(page.locator(f'#result_list tr:has(input[value="{new.pk}"]) .field-state')).to_have_text("Completed")
    expect(page.locator("p.executions-new")).to_have_count(0)  # nothing new since this load
    assert violations == []


def test_a_blueprints_versions_as_json_a_picture_and_a_diff(
    live_server_url: str,
    watched: tuple[Any, list[str]],  # noqa: F811
    tenant_a: Tenant,
) -> None:
    page, violations = watched

    def definition(text: str, extra: bool) -> dict[str, Any]:
        nodes: dict[str, Any] = {
            "count": {"kind": "function", "config": {"function": "demo.word_count", "input": {"text": text}}},
            "reply": {"kind": "template", "config": {"template": "{{ state.count.words }} words"}},
        }
        edges = [{"from": "count", "to": "reply"}]
        if extra:
            nodes["again"] = {"kind": "template", "config": {"template": "again"}}
            edges.append({"from": "reply", "to": "again"})
        return {"description": "Counts words", "entry": "count", "nodes": nodes, "edges": edges}

    blueprint_save(tenant=tenant_a, name="count", definition=definition("{{ input.text }}", False))
    blueprint_save(tenant=tenant_a, name="count", definition=definition("{{ input.body }}", True))
    blueprint = Blueprint.objects.get(tenant=tenant_a, name="count")
    _admin_log_in(page, live_server_url)
    page.goto(f"{live_server_url}/admin/executions/blueprint/{blueprint.pk}/change/")

    # The picture: the latest version's three nodes, drawn by the dashboard's drawGraph.
    expect(page.locator("#blueprint-graph svg g.node")).to_have_count(3)
    expect(page.locator('#blueprint-graph g.node[data-node="again"]')).to_have_count(1)
    # The definition, indented and monospaced, each top-level part folding.
    nodes = page.locator('.blueprint-json details[data-key="nodes"]')
    expect(nodes.locator("pre")).to_contain_text('  "count": {\n    "kind": "function",')
    assert "monospace" in nodes.locator("pre").evaluate("p => getComputedStyle(p).fontFamily")
    nodes.locator("summary").click()
    expect(nodes.locator("pre")).to_be_hidden()
    # The diff between version 1 and version 2.
    expect(page.locator("pre.diff .diff-add", has_text='"again"').first).to_be_visible()
    expect(page.locator("pre.diff .diff-del", has_text="input.text")).to_have_count(1)
    assert page.locator("pre.diff .diff-add").first.evaluate("l => getComputedStyle(l).backgroundColor") != (
        "rgba(0, 0, 0, 0)"
    )

    # Version 1: two nodes; comparing it with itself says so.
    page.select_option("#pick-version", "1")
    page.click("#blueprint-definition form button")
    expect(page.locator("#definition-heading")).to_have_text("Version 1")
    expect(page.locator("#blueprint-graph svg g.node")).to_have_count(2)
    page.select_option("#diff-from", "2")
    page.select_option("#diff-to", "2")
    page.click("#blueprint-diff form button")
    expect(page.locator("#blueprint-diff .diff-none")).to_have_text("Pick two different versions to compare.")
    expect(page.locator("#definition-heading")).to_have_text("Version 1")  # the shown version stays
    assert violations == []


def _paused(tenant: Tenant) -> Execution:
    """An execution the worker leaves alone while the test changes it under the page."""
    return Execution.objects.create(tenant=tenant, blueprint="demo.chain", input={"n": 1}, state="paused")


def _changed_after_rendering(page: Any, change: Callable[[], None]) -> None:
    """``change`` runs once the change page was made, as its socket opens: a change whose event
    the page never gets (as if it landed between the page's reads)."""
    done: list[bool] = []

    def handle(socket: Any) -> None:
        if not done:
            change()
            done.append(True)
        socket.connect_to_server()

    page.route_web_socket(lambda url: "/ws/executions/" in url, handle)


def test_the_change_page_starts_from_the_execution_as_it_is_when_its_socket_opens(
    live_server_url: str,
    watched: tuple[Any, list[str]],  # noqa: F811
    tenant_a: Tenant,
) -> None:
    page, violations = watched
    execution = _paused(tenant_a)
    _admin_log_in(page, live_server_url)
    _changed_after_rendering(
        page,
        lambda: Execution.objects.filter(pk=execution.pk).update(state="cancelled", ended_at=timezone.now()),
    )
    page.goto(_change(live_server_url, execution.pk))
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    # Rendered paused (cancel and resume); no event comes, yet the page shows it cancelled.
    expect(page.locator(".field-state .readonly")).to_have_text("Cancelled", timeout=15_000)
    expect(page.locator("form.execution-control")).to_have_count(0)
    expect(page.locator(".field-ended_at .readonly")).not_to_have_text("-")
    assert violations == []


def test_the_change_page_keeps_step_rows_in_order_past_the_live_rows(
    live_server_url: str,
    watched: tuple[Any, list[str]],  # noqa: F811
    tenant_a: Tenant,
) -> None:
    from executions.admin import STEP_ROWS_LIVE

    page, violations = watched
    execution = _paused(tenant_a)
    total = STEP_ROWS_LIVE + 100
    Step.objects.bulk_create(
        Step(execution=execution, id=f"step_{n:05d}", name=f"s{n}", step_type="task", state="running", position=n)
        for n in range(1, total + 1)
    )
    _admin_log_in(page, live_server_url)
    last = f"step_{total:05d}"
    _changed_after_rendering(page, lambda: Step.objects.filter(pk=last).update(state="completed"))
    page.goto(_change(live_server_url, execution.pk), timeout=30_000)
    expect(page.locator("body[data-live=on]")).to_have_count(1, timeout=20_000)
    row = page.locator(f'#steps-group tbody tr[data-step="{last}"]')
    expect(row.locator(".field-state")).to_have_text("completed", timeout=15_000)  # the last step follows
    rows = page.locator("#steps-group tbody tr[data-step]")
    ids = rows.evaluate_all("rs => rs.map(r => r.dataset.step)")
    assert ids == [f"step_{n:05d}" for n in range(1, total + 1)]  # one row per step, in order
    assert violations == []


def test_a_change_page_refused_for_too_many_connections_tries_again(
    live_server_url: str,
    watched: tuple[Any, list[str]],  # noqa: F811
    tenant_a: Tenant,
) -> None:
    page, violations = watched
    execution = _paused(tenant_a)
    _admin_log_in(page, live_server_url)
    attempts: list[str] = []

    def refuse_first(socket: Any) -> None:
        attempts.append(socket.url)
        if len(attempts) == 1:
            socket.close(code=4429, reason="too many live connections")
        else:
            socket.connect_to_server()

    page.route_web_socket(lambda url: "/ws/executions/" in url, refuse_first)
    page.goto(_change(live_server_url, execution.pk))
    for _ in range(40):  # the browser's handlers run while it waits, not while Python sleeps
        if len(attempts) >= 2:
            break
        page.wait_for_timeout(500)
    assert len(attempts) == 2  # asked again, a few seconds later, and only once
    expect(page.locator("body[data-live=on]")).to_have_count(1, timeout=15_000)
    assert violations == []
