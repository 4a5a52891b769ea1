"""In Chromium: the usage page (today's meters, the charts over time, the period choice), the
schedules page and the webhooks page, at a desk's width and a phone's (390 px), in a reader's
time zone that is not the server's."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from executions.models import Execution, Schedule, WebhookDelivery, WebhookEndpoint
from executions.services.schedules import schedule_create
from tenants.models import Membership, Tenant, TenantDailyUsage, TenantLimits
from tenants.secrets import decrypt, encrypt

from .test_live_pages import _log_in, _screenshot, _user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

ZONE = "America/New_York"
PHONE = {"width": 390, "height": 844}

# Reports each Content Security Policy violation of the document to the test.
LISTEN = """
document.addEventListener("securitypolicyviolation", (e) => window.__violation(e.violatedDirective + " " + e.sample));
"""


@pytest.fixture
def reader(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    """A page in New York's time zone (the server counts in UTC), and the CSP violations it saw."""
    context = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id=ZONE, locale="en-US")
    context.set_default_timeout(20_000)
    violations: list[str] = []
    page = context.new_page()
    page.expose_function("__violation", lambda text: violations.append(text))
    page.add_init_script(LISTEN)
    try:
        yield page, violations
    finally:
        context.close()


def _execution(tenant: Tenant, *, days_ago: int, state: str, blueprint: str = "demo.chain", **usage: Any) -> str:
    execution = Execution.objects.create(tenant=tenant, blueprint=blueprint, state=state, usage=usage)
    at = timezone.now() - timedelta(days=days_ago)
    Execution.objects.filter(pk=execution.pk).update(created_at=at, ended_at=at)
    return execution.pk


def _no_overflow(page: Any) -> None:
    widths = page.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]")
    assert widths[0] <= 390, widths
    assert widths[1] <= 390, widths


def _visible_and_on_top(page: Any, selector: str) -> None:
    """Seen whole across the phone's width, and the topmost thing at its centre (not covered)."""
    node = page.locator(selector).first
    node.scroll_into_view_if_needed()
    expect(node).to_be_visible()
    box = node.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 390 + 0.5, box
    on_top = node.evaluate(
        "n => { const r = n.getBoundingClientRect();"
        " const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);"
        " return !!hit && (n === hit || n.contains(hit)); }"
    )
    assert on_top, selector


def test_the_usage_page_meters_charts_and_period(
    live_server_url: str, reader: tuple[Any, list[str]], tenant_a: Tenant, tenant_b: Tenant
) -> None:
    page, violations = reader
    limits = TenantLimits.objects.get(tenant=tenant_a)
    limits.tokens_per_day, limits.cost_per_day_usd, limits.max_storage_bytes = 10_000_000, Decimal("100"), 1024**3
    limits.save()
    Tenant.objects.filter(pk=tenant_a.pk).update(storage_bytes=1024**3)
    TenantDailyUsage.objects.create(
        tenant=tenant_a, day=timezone.now().date(), executions=1234, tokens=8_500_000, cost_usd=Decimal("12.5")
    )
    for days_ago in (0, 0, 3, 12):
        _execution(tenant_a, days_ago=days_ago, state="completed", input_tokens=1000, output_tokens=200, cost_usd=0.4)
    failed = [_execution(tenant_a, days_ago=d, state="failed", blueprint="demo.slow", cost_usd=2) for d in (0, 3, 3)]
    _execution(tenant_a, days_ago=1, state="cancelled", blueprint="demo.pipeline")
    _execution(tenant_a, days_ago=45, state="failed", blueprint="demo.old")  # only in the 90 days
    _execution(tenant_b, days_ago=0, state="failed", blueprint="globex.hidden")
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    _log_in(page, live_server_url, "olga")
    page.goto(f"{live_server_url}/usage/")

    # Each meter spans the card; its fill is the share used; the numbers are written for people.
    card = page.locator("#today").bounding_box()
    assert card is not None
    meters = page.locator('.meter[role="progressbar"]')
    expect(meters).to_have_count(5)  # running now, executions, tokens, cost, storage
    for i in range(meters.count()):
        box = meters.nth(i).bounding_box()
        assert box is not None
        assert box["width"] >= card["width"] / 2, box
    tokens = page.locator('[data-meter="Tokens today"]')
    expect(tokens).to_contain_text("8,500,000")
    expect(tokens).to_contain_text("85 %")
    expect(tokens).to_contain_text("Near the limit")
    track, fill = tokens.locator(".meter").bounding_box(), tokens.locator(".meter-fill").bounding_box()
    assert track is not None
    assert fill is not None
    assert abs(fill["width"] / track["width"] - 0.85) < 0.02
    storage = page.locator('[data-meter="Storage"]')
    expect(storage).to_contain_text("1 GiB")
    expect(storage).to_contain_text("Limit reached")
    expect(storage).not_to_contain_text("1073741824")
    expect(storage.locator(".meter")).to_have_attribute("aria-valuemax", str(1024**3))
    expect(page.locator('[data-meter="Cost today"]')).to_contain_text("$12.50 of $100.00 · 12 %")

    # Executions per day, failures in red and visible; the day's figures read out when touched.
    chart = page.locator("#executions-per-day")
    expect(chart.locator(".day")).to_have_count(30)
    today = chart.locator(".day").last
    expect(today).to_have_attribute("aria-label", re.compile(r": 2 completed, 1 failed, 0 cancelled"))
    red = today.locator(".seg.failed")
    box = red.bounding_box()
    assert box is not None
    assert box["height"] > 10
    assert red.evaluate("n => getComputedStyle(n).backgroundColor") == "rgb(197, 48, 48)"
    three_days_ago = chart.locator(".day").nth(26)
    three_days_ago.click()
    expect(chart.locator(".readout")).to_contain_text("1 completed, 2 failed")
    tallest = three_days_ago.locator(".stack").bounding_box()
    assert tallest is not None
    assert abs(tallest["height"] - (three_days_ago.locator(".seg.completed").bounding_box() or {})["height"] * 3) < 3
    expect(page.locator("#tokens-per-day .day").last).to_have_attribute("aria-label", re.compile(r"2,400 tokens"))
    expect(page.locator("#cost-per-day .day").last).to_have_attribute("aria-label", re.compile(r"\$2\.80"))
    expect(page.locator("#over-time")).to_contain_text("days in UTC")

    # The table alternative, and the blueprints sorted by executions.
    expect(page.locator(".as-table table")).to_be_hidden()
    page.click(".as-table summary")
    expect(page.locator(".as-table tbody tr")).to_have_count(30)
    rows = page.locator("#per-blueprint tbody tr")
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.blueprint)") == ["demo.chain", "demo.slow", "demo.pipeline"]
    expect(page.locator("#per-blueprint")).not_to_contain_text("globex.hidden")
    _screenshot(page, "usage.png")

    page.click(".periods a:text('90 days')")
    page.wait_for_url(re.compile(r"days=90"))
    expect(page.locator("#executions-per-day .day")).to_have_count(90)
    expect(page.locator("#per-blueprint")).to_contain_text("demo.old")
    page.click(".periods a:text('7 days')")
    expect(page.locator("#executions-per-day .day")).to_have_count(7)
    expect(page.locator(".periods a[aria-current=page]")).to_have_text("7 days")
    expect(page.locator("#per-blueprint")).not_to_contain_text("demo.old")
    assert failed[0] not in page.content()  # aggregates only, no rows

    page.set_viewport_size(PHONE)
    page.goto(f"{live_server_url}/usage/")
    _no_overflow(page)
    _visible_and_on_top(page, '[data-meter="Tokens today"] .meter')
    card = page.locator("#today").bounding_box()
    box = page.locator('[data-meter="Tokens today"] .meter').bounding_box()
    assert card is not None
    assert box is not None
    assert box["width"] >= card["width"] / 2
    _visible_and_on_top(page, "#executions-per-day .days")
    _visible_and_on_top(page, ".periods a[aria-current=page]")
    page.click(".as-table summary")
    _no_overflow(page)  # the wide table scrolls inside its card
    _visible_and_on_top(page, "#per-blueprint tbody tr th")
    _screenshot(page, "usage-phone.png")
    assert violations == []


def test_the_schedules_page_in_the_readers_time_zone_with_recent_runs(
    live_server_url: str, reader: tuple[Any, list[str]], tenant_a: Tenant, tenant_b: Tenant
) -> None:
    page, violations = reader
    nightly = schedule_create(
        tenant=tenant_a,
        name="nightly",
        blueprint="demo.chain",
        input={"n": 1},
        cron="30 2 * * *",
        timezone="Europe/Paris",
        overlap="cancel_previous",
    )
    runs = []
    for days_ago, state in ((2, "completed"), (1, "failed")):
        run = _execution(tenant_a, days_ago=days_ago, state=state)
        Execution.objects.filter(pk=run).update(schedule=nightly)
        runs.append(run)
    fired = Execution.objects.get(pk=runs[-1]).created_at
    Schedule.objects.filter(pk=nightly.pk).update(last_fired_at=fired - timedelta(milliseconds=5))
    schedule_create(tenant=tenant_b, name="their-schedule", blueprint="demo.chain", input={"n": 1}, cron="0 1 * * *")
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    _log_in(page, live_server_url, "olga")
    page.goto(f"{live_server_url}/schedules/")

    row = page.locator(f'tr[data-schedule="{nightly.pk}"]')
    expect(page.locator(".zone-note")).to_contain_text(ZONE)
    first = row.locator(".next-runs time").first
    expect(first).to_contain_text(re.compile(r"\bE[SD]T\b"))  # New York's clock, the zone named
    expect(first).not_to_contain_text("UTC")
    expect(row.locator(".next-runs time[data-relative]")).to_contain_text(re.compile(r"^in "))
    expect(row).to_contain_text("If the previous run is still going, it is cancelled and a new run starts.")
    expect(row.locator(".recent .state")).to_have_text(["failed", "completed"])
    expect(row.locator(".last-firing .state")).to_have_text("failed")
    expect(page.locator("body")).not_to_contain_text("their-schedule")

    page.set_viewport_size(PHONE)
    page.reload()
    _no_overflow(page)
    _visible_and_on_top(page, f'tr[data-schedule="{nightly.pk}"] .next-runs time')
    _visible_and_on_top(page, f'tr[data-schedule="{nightly.pk}"] button')
    _screenshot(page, "schedules-phone.png")
    page.click(f'tr[data-schedule="{nightly.pk}"] button:text("Pause")')
    expect(row.locator(".state-paused")).to_have_text("paused")
    expect(row.locator("button")).to_have_text("Resume")
    assert Schedule.objects.get(pk=nightly.pk).paused
    _no_overflow(page)

    row.locator(".last-firing a").click()
    page.wait_for_url(f"{live_server_url}/executions/{runs[-1]}/")
    assert violations == []


def test_the_webhooks_page_deliveries_and_a_new_secret(
    live_server_url: str, reader: tuple[Any, list[str]], tenant_a: Tenant, tenant_b: Tenant
) -> None:
    page, violations = reader
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant_a,
        url="https://hooks.example.com/a-rather-long-path/for-the-acme-tenant/receiver",
        events=["data-execution-end", "data-execution-failed"],
        secret_ciphertext=encrypt("old-secret"),
    )
    theirs = WebhookEndpoint.objects.create(
        tenant=tenant_b, url="https://globex.example.com/hook", events=["data-execution-end"], secret_ciphertext="x"
    )
    run = _execution(tenant_a, days_ago=0, state="failed")
    retry_at = timezone.now() + timedelta(hours=2)
    WebhookDelivery.objects.create(
        tenant=tenant_a,
        endpoint=endpoint,
        execution_id=run,
        url=endpoint.url,
        event_type="data-execution-failed",
        event_id="evt_1",
        attempts=3,
        last_status=503,
        next_attempt_at=retry_at,
    )
    _user(tenant_a, "vic", Membership.Role.VIEWER)
    _user(tenant_a, "olga", Membership.Role.OPERATOR)

    _log_in(page, live_server_url, "vic")
    page.click("header.top nav a:text('Webhooks')")
    hook = page.locator(f'[data-webhook="{endpoint.pk}"]')
    expect(hook).to_contain_text("Called when an execution is completed")
    delivery = hook.locator("tbody tr").first
    expect(delivery).to_contain_text("503")
    expect(delivery.locator("time").first).to_contain_text(re.compile(r"\bE[SD]T\b"))
    expect(delivery.locator("a")).to_have_attribute("href", f"/executions/{run}/")
    expect(page.locator("button:text('Rotate the secret')")).to_have_count(0)  # a viewer reads
    expect(page.locator("body")).not_to_contain_text("globex.example.com")

    page.set_viewport_size(PHONE)
    page.reload()
    _no_overflow(page)
    _visible_and_on_top(page, f'[data-webhook="{endpoint.pk}"] .webhook-url')
    # Each delivery reflows into label and value lines: all of it readable without scrolling.
    _visible_and_on_top(page, f'[data-webhook="{endpoint.pk}"] tbody td[data-label="Status code"] div')
    _visible_and_on_top(page, f'[data-webhook="{endpoint.pk}"] tbody td[data-label="Next try"] time')
    _visible_and_on_top(page, f'[data-webhook="{endpoint.pk}"] tbody td[data-label="Execution"] a')
    _screenshot(page, "webhooks-phone.png")

    page.context.clear_cookies()
    _log_in(page, live_server_url, "olga")
    page.goto(f"{live_server_url}/webhooks/")
    _visible_and_on_top(page, f'[data-webhook="{endpoint.pk}"] button:text("Rotate the secret")')
    page.click(f'[data-webhook="{endpoint.pk}"] button:text("Rotate the secret")')
    secret = page.locator("[data-secret]")
    expect(secret).to_have_text(re.compile(r"^whsec_"))
    assert decrypt(WebhookEndpoint.objects.get(pk=endpoint.pk).secret_ciphertext) == secret.inner_text()
    expect(page.locator(".new-secret button.copy")).to_be_visible()
    _no_overflow(page)
    assert WebhookEndpoint.objects.get(pk=theirs.pk).secret_ciphertext == "x"
    assert violations == []
