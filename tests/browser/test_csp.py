"""The Content Security Policy, in Chromium: every page of the dashboard and the admin keeps to it
(no inline script, style or handler without a nonce) and still works under it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from executions.models import Execution
from executions.services.submit import execution_submit
from tenants.models import Membership, Tenant
from tenants.services import membership_set, tenant_set_limits

from ..conftest import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-password-for-tests"

# Runs in every document before its own scripts: each violation is reported to the test.
LISTEN = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__reportViolation([e.violatedDirective, e.blockedURI, e.sourceFile + ":" + e.lineNumber, e.sample].join(" | "));
});
"""


@pytest.fixture
def watched(page: Any) -> tuple[Any, list[str]]:
    """The page, and what the browser said against the policy (events and console alike)."""
    violations: list[str] = []

    def report(text: str) -> None:
        violations.append(text)

    page.expose_function("__reportViolation", report)
    page.add_init_script(LISTEN)
    page.on(
        "console",
        lambda message: (
            violations.append("console: " + message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return page, violations


def _state(execution_id: str) -> str:
    return Execution.objects.values_list("state", flat=True).get(pk=execution_id)


def _policy(response: Any) -> str:
    return str(response.headers.get("content-security-policy", ""))


def test_the_dashboard_keeps_to_its_policy_and_works(
    live_server_url: str, watched: tuple[Any, list[str]], tenant_a: Tenant, tenant_b: Tenant
) -> None:
    page, violations = watched
    user = User.objects.create_user("olga", password=PASSWORD)
    membership_set(tenant=tenant_a, user=user, role=Membership.Role.OPERATOR)
    membership_set(tenant=tenant_b, user=user, role=Membership.Role.OPERATOR)
    tenant_set_limits(tenant=tenant_a, changes={"executions_per_day": 10})
    execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": "hello"})

    login = page.goto(f"{live_server_url}/login/")
    policy = _policy(login)
    assert "script-src 'self'" in policy, policy
    assert "'unsafe-inline'" not in policy
    assert "'unsafe-eval'" not in policy
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_contain_text("Executions")
    expect(page.locator("body[data-live=on]")).to_have_count(1)  # the feed's websocket is allowed

    # The tenant switcher (it was an inline handler) still switches.
    page.select_option(".tenant select", "globex")
    page.wait_for_url(re.compile(r"\?tenant=globex"))
    expect(page.locator("h1")).to_contain_text("Globex")
    page.select_option(".tenant select", "acme")
    page.wait_for_url(re.compile(r"\?tenant=acme"))

    # The start form, then the execution's page: graph, timeline and usage bars draw (with styles
    # set from script), events come in over the socket, and the controls act.
    page.select_option("#start-blueprint", "demo.slow")
    expect(page.locator("#start-description")).not_to_be_empty()
    page.fill("#start-input", '{"steps": 30, "seconds": 0.3}')
    page.click("#start-form button[type=submit]")
    page.wait_for_url(re.compile(r"/executions/exec_\w+/$"))
    execution_id = page.url.rstrip("/").rsplit("/", 1)[1]
    expect(page.locator("#graph g.node.state-running")).to_have_count(1)
    expect(page.locator("#events tbody tr").nth(2)).to_be_attached(timeout=20_000)
    bar = page.locator("#waterfall .tl-bar").first
    expect(bar).to_be_attached()
    # Placed on the time axis by custom properties set from script (CSSOM, which the policy allows).
    assert bar.evaluate("b => b.style.getPropertyValue('--d')") != ""
    assert page.locator("#usage .bar-fill").first.evaluate("b => b.style.width").endswith("%")
    page.click('#controls button[data-control="cancel"]')
    page.click("#cancel-yes")  # the page asks first
    expect(page.locator("#state")).to_have_text("cancelled", timeout=10_000)
    assert wait_until(lambda: _state(execution_id) == "cancelled")

    # Usage: its bars and columns are sized without style attributes.
    page.goto(f"{live_server_url}/usage/")
    executions_bar = page.locator(".meter-row", has_text="Executions today").locator(".meter-fill")
    assert executions_bar.evaluate("b => b.getBoundingClientRect().width") > 0
    assert page.locator("#per-hour .col-fill").last.evaluate("c => c.getBoundingClientRect().height") > 0

    # Schedules: the next firings, and Pause as a plain form (no script needed).
    from executions.services.schedules import schedule_create

    schedule_create(tenant=tenant_a, name="nightly", blueprint="demo.chain", input={"n": 1}, cron="30 2 * * *")
    page.goto(f"{live_server_url}/schedules/")
    row = page.locator("tr", has_text="nightly")
    expect(row.locator(".next-runs time:not([data-relative])")).to_have_count(3)
    row.locator("button", has_text="Pause").click()
    expect(page.locator("tr", has_text="nightly").locator(".state-paused")).to_have_text("paused")

    # The API's browsable docs.
    page.goto(f"{live_server_url}/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Enact Platform API", timeout=15_000)

    assert violations == []


def test_the_admin_keeps_to_the_policy_and_works(
    live_server_url: str, watched: tuple[Any, list[str]], tenant_a: Tenant
) -> None:
    page, violations = watched
    User.objects.create_superuser("root", password=PASSWORD)
    running, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 40, "seconds": 0.4})
    assert wait_until(lambda: _state(running.pk) == "running", timeout=20)

    login = page.goto(f"{live_server_url}/admin/login/")
    assert "script-src 'self'" in _policy(login)
    page.fill("input[name=username]", "root")
    page.fill("input[name=password]", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()

    page.goto(f"{live_server_url}/admin/executions/execution/")
    expect(page.locator("body[data-live=on]")).to_have_count(1)

    # The change page follows live; a cancel asks first, and "no" means no.
    page.goto(f"{live_server_url}/admin/executions/execution/{running.pk}/change/")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("form.execution-control button[value=cancel]")
    page.wait_for_timeout(1000)
    assert _state(running.pk) == "running"
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("form.execution-control button[value=cancel]")
    expect(page.locator(".field-state .readonly")).to_have_text("Cancelled", timeout=5_000)
    assert _state(running.pk) == "cancelled"

    # A new API key is shown once, selected when its field is focused.
    page.goto(f"{live_server_url}/admin/tenants/apikey/add/")
    page.select_option("select[name=tenant]", str(tenant_a.pk))
    page.fill("input[name=name]", "ci")
    page.click("input[name=_save]")
    raw = page.locator("#raw-api-key")
    expect(raw).to_be_visible()
    raw.focus()
    assert raw.evaluate("i => i.selectionStart === 0 && i.selectionEnd === i.value.length && i.value.length > 20")

    for path in (
        "/admin/",
        "/admin/tenants/tenant/",
        f"/admin/tenants/tenant/{tenant_a.pk}/change/",
        "/admin/axes/accessattempt/",
    ):
        page.goto(f"{live_server_url}{path}")
        expect(page.locator("#content")).to_be_visible()

    assert violations == []


def test_the_locked_out_page_keeps_to_the_policy(live_server_url: str, watched: tuple[Any, list[str]]) -> None:
    from django.conf import settings

    page, violations = watched
    User.objects.create_user("olga", password=PASSWORD)
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        page.goto(f"{live_server_url}/login/")
        page.fill("input[name=username]", "olga")
        page.fill("input[name=password]", "wrong")
        page.click("button[type=submit]")
    expect(page.locator("#locked-out")).to_contain_text("Too many failed logins")
    assert violations == []
