"""In Chromium, against a running platform: log in, start an execution, watch it live, cancel it
from the dashboard and from the admin; what a viewer and a stranger see."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from executions.models import Execution
from executions.services.controls import execution_cancel
from executions.services.submit import execution_submit
from tenants.models import Membership, Tenant
from tenants.services import membership_set

from ..conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-password-for-tests"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _user(tenant: Tenant, username: str, role: str, **extra: Any) -> User:
    user = User.objects.create_user(username, password=PASSWORD, **extra)
    membership_set(tenant=tenant, user=user, role=role)
    return user


def _log_in(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Executions")


def _screenshot(page: Any, name: str) -> None:
    """With ENACT_SCREENSHOTS=1 the pages are saved for the README."""
    if os.environ.get("ENACT_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


def _state(execution_id: str) -> str:
    return Execution.objects.values_list("state", flat=True).get(pk=execution_id)


def test_start_watch_and_cancel_from_the_dashboard(live_server_url: str, page: Any, tenant_a: Tenant) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    done, _ = execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": "hello hello world"})
    _log_in(page, live_server_url, "olga")
    expect(page.locator(f'tr[data-id="{done.pk}"] .state')).to_have_text("completed", timeout=20_000)

    page.select_option("#start-blueprint", "demo.slow")
    page.fill("#start-input", "not json")
    page.click("#start-form button[type=submit]")
    expect(page.locator("#start-error")).to_contain_text("not valid JSON")
    page.fill("#start-input", json.dumps({"steps": 40}))
    page.click("#start-form button[type=submit]")
    expect(page.locator("#start-error")).to_contain_text("input.seconds is required")
    page.fill("#start-input", json.dumps({"steps": 40, "seconds": 0.4}))
    page.click("#start-form button[type=submit]")

    page.wait_for_url(re.compile(r"/executions/exec_\w+/$"))
    execution_id = page.url.rstrip("/").rsplit("/", 1)[1]
    # Steps appear as they run: the graph's node lights up, rows and log entries come in.
    expect(page.locator("#graph g.node.state-running")).to_have_count(1)
    expect(page.locator("#steps tbody tr").nth(1)).to_be_visible(timeout=20_000)
    expect(page.locator("#events tbody tr").first).to_contain_text("data-execution-start")
    expect(page.locator('#controls button[data-control="resume"]')).to_be_disabled()
    _screenshot(page, "execution.png")

    page.click('#controls button[data-control="cancel"]')
    page.click("#cancel-yes")  # the page asks first
    expect(page.locator("#state")).to_have_text("cancelled", timeout=5_000)
    expect(page.locator("#control-result")).to_have_text("Cancelled.")
    expect(page.locator('#controls button[data-control="cancel"]')).to_be_disabled()
    assert _state(execution_id) == "cancelled"

    page.goto(f"{live_server_url}/usage/")
    expect(page.locator(".meter-row").first).to_contain_text("Running now")
    _screenshot(page, "usage.png")


def test_the_list_updates_live(live_server_url: str, page: Any, tenant_a: Tenant) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    _log_in(page, live_server_url, "olga")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    page.wait_for_timeout(300)  # the relay's first look sets where new executions start
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 3})
    row = page.locator(f'tr[data-id="{execution.pk}"]')
    expect(row).to_be_visible()
    expect(row.locator(".state")).to_have_text("completed", timeout=20_000)
    _screenshot(page, "executions.png")


def test_cancel_from_the_admin_change_page_and_the_list_follows(
    live_server_url: str, page: Any, tenant_a: Tenant
) -> None:
    User.objects.create_superuser("root", password=PASSWORD)
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 40, "seconds": 0.4})
    assert wait_until(lambda: _state(execution.pk) == "running", timeout=20)

    page.goto(f"{live_server_url}/admin/login/")
    page.fill("input[name=username]", "root")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    page.goto(f"{live_server_url}/admin/executions/execution/{execution.pk}/change/")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    before = page.locator("table.event-log tbody tr").count()
    expect(page.locator("table.event-log tbody tr")).not_to_have_count(before, timeout=10_000)  # live rows
    page.once("dialog", lambda dialog: dialog.accept())  # "Cancel this execution?"
    page.click("form.execution-control button[value=cancel]")
    expect(page.locator(".field-state .readonly")).to_have_text("Cancelled", timeout=5_000)
    expect(page.locator("ul.messagelist")).to_contain_text("Cancelled.")
    assert page.url.endswith("/change/")  # no reload: the socket carried the control
    assert _state(execution.pk) == "cancelled"

    other, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 40, "seconds": 0.4})
    assert wait_until(lambda: _state(other.pk) == "running", timeout=20)
    page.goto(f"{live_server_url}/admin/executions/execution/")
    cell = page.locator(f'#result_list tr:has(input[value="{other.pk}"]) .field-state')
    expect(cell).to_have_text("Running")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    execution_cancel(tenant=tenant_a, execution_id=other.pk, reason="from a test")
    expect(cell).to_have_text("Cancelled", timeout=5_000)


def test_a_viewer_sees_no_controls_and_a_stranger_no_page(
    live_server_url: str, page: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    _user(tenant_a, "vic", Membership.Role.VIEWER)
    mine, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 3, "seconds": 0.3})
    theirs, _ = execution_submit(tenant=tenant_b, blueprint="demo.chain", input={"n": 1})
    _log_in(page, live_server_url, "vic")
    expect(page.locator("#start-form")).to_have_count(0)
    page.goto(f"{live_server_url}/executions/{mine.pk}/")
    expect(page.locator("#state")).to_have_text("completed", timeout=20_000)  # a viewer watches live too
    expect(page.locator("#controls")).to_have_count(0)
    expect(page.locator("#guidance")).to_have_count(0)
    response = page.goto(f"{live_server_url}/executions/{theirs.pk}/")
    assert response is not None
    assert response.status == 404


def test_a_lost_connection_shows_and_comes_back_without_losing_events(
    platform: Any, page: Any, tenant_a: Tenant
) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 8, "seconds": 0.5})
    _log_in(page, platform.url, "olga")
    page.goto(f"{platform.url}/executions/{execution.pk}/")
    expect(page.locator("#events tbody tr").nth(2)).to_be_attached(timeout=20_000)
    platform.stop_web()  # the web server goes away while the worker goes on
    expect(page.locator("#connection")).to_be_visible()
    page.wait_for_timeout(1500)
    platform.start_web()
    expect(page.locator("#connection")).to_be_hidden(timeout=15_000)
    expect(page.locator("#state")).to_have_text("completed", timeout=30_000)
    seqs = [int(s) for s in page.locator("#events tbody tr").evaluate_all("rows => rows.map(r => r.dataset.seq)")]
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) == Execution.objects.get(pk=execution.pk).events.count()


def test_approve_a_waiting_execution_send_guidance_and_read_artifacts(
    live_server_url: str, page: Any, tenant_a: Tenant
) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    waiting, _ = execution_submit(tenant=tenant_a, blueprint="demo.approval", input={})
    assert wait_until(lambda: _state(waiting.pk) == "waiting", timeout=20)
    _log_in(page, live_server_url, "olga")
    page.goto(f"{live_server_url}/executions/{waiting.pk}/")
    expect(page.locator("#answer")).to_be_visible()
    expect(page.locator("#answer-prompt")).to_contain_text("Approve publishing")
    expect(page.locator('#controls button[data-control="pause"]')).to_be_disabled()
    page.fill("#guidance-text", "mention the numbers")
    page.click("#guidance button[type=submit]")
    expect(page.locator("#control-result")).to_contain_text("Guidance sent")
    page.click('#answer button[data-answer="approve"]')
    expect(page.locator("#state")).to_have_text("completed", timeout=20_000)
    expect(page.locator("#answer")).to_be_hidden()
    assert Execution.objects.get(pk=waiting.pk).output["published"] is True

    pipeline, _ = execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": "hello hello world"})
    assert wait_until(lambda: _state(pipeline.pk) == "completed", timeout=20)
    page.goto(f"{live_server_url}/executions/{pipeline.pk}/")
    text_artifact = page.locator('#artifacts li[data-type^="text/"] a').first
    text_artifact.click()
    expect(page.locator("#artifact-view pre")).not_to_be_empty()
    page.locator('#artifacts li[data-type*="json"] a').first.click()
    expect(page.locator("#artifact-view pre")).to_contain_text("{")


def test_the_demo_blueprint_from_the_start_form_to_its_approval(
    live_server_url: str, page: Any, tenant_a: Tenant
) -> None:
    """An agent with a tool, a map over another blueprint, a router and an approval, all offline."""
    from executions.services.blueprints import blueprints_install_demo

    blueprints_install_demo(tenant=tenant_a)
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    _log_in(page, live_server_url, "olga")
    page.select_option("#start-blueprint", "demo-triage")
    page.fill(
        "#start-input", json.dumps({"request": "Please approve my refund", "items": ["late parcel", "broken lid"]})
    )
    page.click("#start-form button[type=submit]")
    page.wait_for_url(re.compile(r"/executions/exec_\w+/$"), timeout=20_000)
    execution_id = page.url.rstrip("/").rsplit("/", 1)[1]

    # The graph shows the blueprint's nodes; the agent's streamed text and its tool call are logged.
    expect(page.locator("#graph g.node")).to_have_count(5)
    expect(page.locator("#answer")).to_be_visible(timeout=30_000)
    expect(page.locator("#answer-prompt")).to_have_text("Publish the answer to: Please approve my refund?")
    expect(page.locator("#events tbody")).to_contain_text("data-tool-output-available")
    expect(page.locator("#events tbody")).to_contain_text("data-text-delta")
    page.click('#answer button[data-answer="approve"]')
    expect(page.locator("#state")).to_have_text("completed", timeout=20_000)

    output = Execution.objects.get(pk=execution_id).output
    assert output["publish"]["approved"] is True
    assert "Refunds are paid within 5 working days" in output["publish"]["answer"]
    assert output["route"]["route"] == "review"
