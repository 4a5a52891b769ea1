"""The usage, schedules and webhooks pages as the server renders them, and the usage-over-time
query under them (the browser tests in tests/browser/test_usage_and_tenant_pages.py drive them)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from executions.models import Execution, Schedule, WebhookDelivery, WebhookEndpoint
from executions.services.schedules import schedule_create
from executions.stats import usage_over_time
from tenants.models import Membership, Tenant, TenantDailyUsage, TenantLimits
from tenants.secrets import decrypt, encrypt
from tenants.services import membership_set

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 12, 5, 15, 0, tzinfo=UTC)


def _login(tenant: Tenant, role: str, username: str = "dana") -> Client:
    user = User.objects.create_user(username, password="a-long-password-1")
    membership_set(tenant=tenant, user=user, role=role)
    client = Client()
    client.force_login(user)
    return client


def _section(html: str, marker: str) -> str:
    """From ``marker`` (``data-x="id"``) to the next element marked ``data-x``, or the end."""
    start = html.index(marker)
    following = html.find(marker.split("=")[0] + "=", start + len(marker))
    return html[start : following if following >= 0 else len(html)]


def _execution(tenant: Tenant, *, at: datetime, state: str, blueprint: str = "demo.chain", **usage: Any) -> Execution:
    execution = Execution.objects.create(tenant=tenant, blueprint=blueprint, state=state, usage=usage)
    Execution.objects.filter(pk=execution.pk).update(created_at=at)  # created_at is set on insert
    return execution


# --- usage over time --------------------------------------------------------------------------------


def test_usage_over_time_counts_outcomes_tokens_and_cost_per_utc_day_and_per_blueprint(
    tenant_a: Tenant, tenant_b: Tenant, django_assert_num_queries: Any
) -> None:
    today, yesterday = NOW - timedelta(hours=2), NOW - timedelta(days=1)
    _execution(tenant_a, at=today, state="completed", input_tokens=100, output_tokens=20, cost_usd=0.5)
    _execution(tenant_a, at=today, state="failed", input_tokens=10, output_tokens=5, cost_usd=0.25)
    _execution(tenant_a, at=today, state="running", blueprint="demo.slow")
    _execution(tenant_a, at=yesterday, state="cancelled", input_tokens=1000, output_tokens=0, cost_usd=2)
    _execution(tenant_a, at=yesterday, state="failed", blueprint="demo.slow", cost_usd=1.5)
    # The first minute of today (UTC) is today; the last of the day before the period is out.
    _execution(tenant_a, at=NOW.replace(hour=0, minute=0, second=30), state="completed")
    _execution(tenant_a, at=NOW.replace(hour=0, minute=0) - timedelta(days=6, seconds=1), state="completed")
    _execution(tenant_b, at=today, state="failed", input_tokens=999, cost_usd=99)  # another tenant's

    with django_assert_num_queries(1):  # one GROUP BY, whatever the number of executions
        usage = usage_over_time(tenant=tenant_a, days=6, now=NOW)

    assert [d.day.isoformat() for d in usage.days] == [f"2026-11-{d}" for d in (30,)] + [
        f"2026-12-0{d}" for d in range(1, 6)
    ]
    last, before = usage.days[-1], usage.days[-2]
    assert (last.completed, last.failed, last.cancelled, last.other) == (2, 1, 0, 1)
    assert (last.tokens, round(last.cost_usd, 6)) == (135, 0.75)
    assert (before.completed, before.failed, before.cancelled, before.other) == (0, 1, 1, 0)
    assert (before.tokens, round(before.cost_usd, 6)) == (1000, 3.5)
    assert all(d.executions == 0 for d in usage.days[:-2])
    assert [(b.blueprint, b.executions, b.failed) for b in usage.blueprints] == [
        ("demo.chain", 4, 1),
        ("demo.slow", 2, 1),
    ]
    assert usage.total.executions == 6
    assert round(usage.total.cost_usd, 6) == 4.25


# --- the usage page ---------------------------------------------------------------------------------


def _meters(html: str) -> dict[str, str]:
    rows = re.findall(r'<div class="meter-row([^"]*)" data-meter="([^"]+)">(.*?)</div>\s*</div>', html, re.S)
    return {label: f"{level}|{body}" for level, label, body in rows}


def test_the_meters_write_their_numbers_percent_and_state(tenant_a: Tenant) -> None:
    limits = TenantLimits.objects.get(tenant=tenant_a)
    limits.tokens_per_day = 10_000_000
    limits.cost_per_day_usd = Decimal("100")
    limits.executions_per_day = None
    limits.max_storage_bytes = 1024**3
    limits.save()
    Tenant.objects.filter(pk=tenant_a.pk).update(storage_bytes=1024**3)  # the whole allowance
    TenantDailyUsage.objects.create(
        tenant=tenant_a, day=timezone.now().date(), executions=12345, tokens=8_500_000, cost_usd=Decimal("12.5")
    )
    html = _login(tenant_a, Membership.Role.VIEWER).get("/usage/").content.decode()
    meters = _meters(html)

    storage = meters["Storage"]
    shown = storage[storage.index('class="meter-value"') : storage.index('<div class="meter"')]
    assert "1 GiB" in shown
    assert "1073741824" not in shown  # the raw number only in aria-valuenow and -max
    assert storage.startswith(" full|")
    assert "Limit reached" in storage
    assert 'role="progressbar"' in storage
    assert 'aria-valuenow="1073741824"' in storage
    assert 'aria-valuemax="1073741824"' in storage
    assert "100 %" in storage

    tokens = meters["Tokens today"]
    assert "8,500,000" in tokens
    assert "of 10,000,000" in tokens
    assert "85 %" in tokens
    assert tokens.startswith(" warn|")
    assert 'data-width="85"' in tokens

    cost = meters["Cost today"]
    assert "$12.50" in cost
    assert "$100.00" in cost
    assert "12 %" in cost
    assert cost.startswith("|")
    assert "100.0000" not in cost
    assert 'aria-valuenow="12.5" aria-valuemax="100"' in cost

    executions = meters["Executions today"]
    assert "12,345" in executions
    assert "no limit" in executions
    assert 'role="progressbar"' not in executions  # nothing to measure against
    assert "Running now" in meters


def test_the_usage_page_charts_the_period_with_failures_and_a_table(tenant_a: Tenant, tenant_b: Tenant) -> None:
    now = timezone.now()
    _execution(tenant_a, at=now, state="completed", input_tokens=1200, output_tokens=34, cost_usd=0.1234)
    _execution(tenant_a, at=now, state="failed", blueprint="demo.slow", cost_usd=3)
    _execution(tenant_a, at=now - timedelta(days=20), state="cancelled")
    _execution(tenant_b, at=now, state="failed", blueprint="globex.secret")
    client = _login(tenant_a, Membership.Role.VIEWER)

    response = client.get("/usage/")
    html = response.content.decode()
    assert response.context["days"] == 30
    assert "days in UTC" in html
    assert 'aria-current="page">30 days' in html
    charts = {c["id"]: c for c in response.context["charts"]}
    assert set(charts) == {"executions-per-day", "tokens-per-day", "cost-per-day"}
    assert all(len(c["columns"]) == 30 for c in charts.values())
    today = charts["executions-per-day"]["columns"][-1]
    assert today["said"].endswith(": 1 completed, 1 failed, 0 cancelled, 0 not finished")
    assert {s["css"]: s["height"] for s in today["segments"]} == {"completed": 50.0, "failed": 50.0}
    assert 'class="seg failed" data-height="50.0" title="1 failed"' in html  # a failure is visible
    assert "1,234 tokens" in html
    assert f'aria-label="{today["said"]}"' in html
    assert "$3.12" in html  # the day's cost, written as money
    assert "<summary>Show as table</summary>" in html
    assert " style=" not in html  # sizes go through data-* (the CSP refuses inline style)
    names = [b["name"] for b in response.context["blueprints"]]
    assert names == ["demo.chain", "demo.slow"]  # the most executions first; not another tenant's
    assert "globex.secret" not in html

    week = client.get("/usage/", {"days": 7})
    assert week.context["days"] == 7
    assert len(week.context["charts"][0]["columns"]) == 7
    # One execution each in the week: the costlier first.
    assert [b["name"] for b in week.context["blueprints"]] == ["demo.slow", "demo.chain"]
    assert week.context["total"]["executions"] == "2"  # the cancelled one was 20 days ago
    assert client.get("/usage/", {"days": 90}).context["days"] == 90
    assert client.get("/usage/", {"days": "12"}).context["days"] == 30
    assert client.get("/usage/", {"days": "x"}).context["days"] == 30


# --- the schedules page -----------------------------------------------------------------------------


def test_the_schedules_page_shows_recent_firings_the_last_one_linked_and_overlap_in_words(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    hourly = schedule_create(
        tenant=tenant_a, name="hourly", blueprint="demo.chain", input={"n": 1}, interval_seconds=3600, overlap="queue"
    )
    paused = schedule_create(
        tenant=tenant_a, name="resting", blueprint="demo.chain", input={"n": 1}, cron="0 9 * * 1", paused=True
    )
    runs = []
    for hours, state in ((3, "completed"), (2, "failed"), (1, "completed")):
        execution = _execution(tenant_a, at=timezone.now() - timedelta(hours=hours), state=state)
        Execution.objects.filter(pk=execution.pk).update(schedule=hourly)
        runs.append(execution.pk)
    Schedule.objects.filter(pk=hourly.pk).update(last_fired_at=timezone.now() - timedelta(hours=1, seconds=1))
    theirs = schedule_create(
        tenant=tenant_b, name="theirs", blueprint="demo.chain", input={"n": 1}, interval_seconds=60
    )
    their_run = _execution(tenant_b, at=timezone.now(), state="failed")
    Execution.objects.filter(pk=their_run.pk).update(schedule=theirs)

    html = _login(tenant_a, Membership.Role.VIEWER).get("/schedules/").content.decode()
    row = _section(html, f'data-schedule="{hourly.pk}"')
    assert "every hour" in row
    assert "If the previous run is still going, a new run starts anyway." in row
    last_firing = row[row.index('class="last-firing"') : row.index('class="recent"')]
    assert f'href="/executions/{runs[-1]}/"' in last_firing
    assert "state-completed" in last_firing
    recent = row[row.index('class="recent"') :]
    assert list(re.findall(r'href="/executions/(\w+)/"', recent)) == runs[::-1]
    assert 'class="state state-failed">failed<' in recent
    assert row.count("<time") >= 3 + 1 + 3  # next firings, the last firing, recent runs

    resting = _section(html, f'data-schedule="{paused.pk}"')
    assert 'class="state state-paused">paused<' in resting
    assert "None while paused." in resting
    assert "If the previous run is still going, this firing is skipped." in resting
    assert "theirs" not in html
    assert their_run.pk not in html


def test_a_skipped_last_firing_is_said_so(tenant_a: Tenant) -> None:
    often = schedule_create(tenant=tenant_a, name="often", blueprint="demo.chain", input={"n": 1}, interval_seconds=60)
    execution = _execution(tenant_a, at=timezone.now() - timedelta(minutes=5), state="running")
    Execution.objects.filter(pk=execution.pk).update(schedule=often)
    Schedule.objects.filter(pk=often.pk).update(last_fired_at=timezone.now() - timedelta(minutes=1))
    html = _login(tenant_a, Membership.Role.VIEWER).get("/schedules/").content.decode()
    last_firing = html[html.index('class="last-firing"') : html.index('class="recent"')]
    assert "Skipped: the previous run was still going." in last_firing
    assert execution.pk not in last_firing
    assert execution.pk in html  # among the recent runs


# --- the webhooks page ------------------------------------------------------------------------------


def _endpoint(tenant: Tenant, url: str, **fields: Any) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        tenant=tenant,
        url=url,
        events=["data-execution-end", "data-execution-failed"],
        secret_ciphertext=encrypt("s1"),
        **fields,
    )


def _delivery(endpoint: WebhookEndpoint | None, execution: Execution, **fields: Any) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        tenant=execution.tenant,
        endpoint=endpoint,
        execution=execution,
        url=endpoint.url if endpoint else "https://hooks.example.com/own",
        event_type="data-execution-failed",
        event_id=f"evt_{WebhookDelivery.objects.count()}",
        **fields,
    )


@pytest.fixture
def hooks(tenant_a: Tenant, tenant_b: Tenant) -> dict[str, Any]:
    mine = _endpoint(tenant_a, "https://hooks.example.com/acme", description="ops channel")
    quiet = _endpoint(tenant_a, "https://hooks.example.com/quiet", active=False)
    theirs = _endpoint(tenant_b, "https://hooks.example.com/globex-only")
    run = _execution(tenant_a, at=timezone.now(), state="failed")
    their_run = _execution(tenant_b, at=timezone.now(), state="failed")
    retry_at = timezone.now() + timedelta(minutes=7)
    return {
        "mine": mine,
        "quiet": quiet,
        "theirs": theirs,
        "run": run,
        "retrying": _delivery(mine, run, attempts=2, last_status=503, next_attempt_at=retry_at),
        "delivered": _delivery(mine, run, state="delivered", attempts=1, last_status=204, ended_at=timezone.now()),
        "own": _delivery(None, run, state="failed", attempts=1, last_status=410, ended_at=timezone.now()),
        "their_delivery": _delivery(theirs, their_run),
        "retry_at": retry_at,
    }


def test_the_webhooks_page_shows_the_tenants_webhooks_and_their_deliveries(
    tenant_a: Tenant, hooks: dict[str, Any]
) -> None:
    html = _login(tenant_a, Membership.Role.VIEWER).get("/webhooks/").content.decode()
    assert 'href="/webhooks/"' in html  # the nav links to it
    mine = _section(html, f'data-webhook="{hooks["mine"].pk}"')
    assert "https://hooks.example.com/acme" in mine
    assert "ops channel" in mine
    assert 'class="state state-active">active<' in mine
    assert "completed (<code>data-execution-end</code>), failed (<code>data-execution-failed</code>)" in mine
    retrying = mine[mine.index(f'data-delivery="{hooks["retrying"].pk}"') :]
    retrying = retrying[: retrying.index("</tr>")]
    assert f'href="/executions/{hooks["run"].pk}/"' in retrying
    assert 'data-label="Status code"><div>503</div>' in retrying
    assert 'data-label="Attempts"><div>2</div>' in retrying
    assert "state-pending" in retrying
    assert f'datetime="{hooks["retry_at"].isoformat(timespec="microseconds")}' in retrying or (
        f'datetime="{hooks["retry_at"]:%Y-%m-%dT%H:%M:%S}' in retrying
    )
    assert "(a retry)" in retrying
    delivered = mine[mine.index(f'data-delivery="{hooks["delivered"].pk}"') :]
    assert 'data-label="Status code"><div>204</div>' in delivered[: delivered.index("</tr>")]
    assert "state-delivered" in delivered
    assert 'class="state state-inactive">inactive<' in html
    own = html[html.index('id="submission-deliveries"') :]
    assert hooks["own"].pk in own
    assert "hooks.example.com/own" in own
    assert 'data-label="Status code"><div>410</div>' in own
    # Another tenant's webhook and deliveries never show; a viewer gets no controls.
    assert "globex-only" not in html
    assert hooks["their_delivery"].pk not in html
    assert "rotate-secret" not in html


def test_an_operator_rotates_a_secret_once_a_viewer_cannot_and_another_tenants_is_not_found(
    tenant_a: Tenant, hooks: dict[str, Any]
) -> None:
    viewer = _login(tenant_a, Membership.Role.VIEWER, "vic")
    mine, theirs = hooks["mine"], hooks["theirs"]
    assert viewer.post("/webhooks/", {"action": "rotate-secret", "webhook": mine.pk}).status_code == 403
    assert decrypt(WebhookEndpoint.objects.get(pk=mine.pk).secret_ciphertext) == "s1"

    operator = _login(tenant_a, Membership.Role.OPERATOR, "olga")
    page = operator.get("/webhooks/").content.decode()
    assert f'name="webhook" value="{mine.pk}"' in page
    assert 'value="rotate-secret"' in page
    response = operator.post("/webhooks/", {"action": "rotate-secret", "webhook": mine.pk})
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    secret = decrypt(WebhookEndpoint.objects.get(pk=mine.pk).secret_ciphertext)
    assert secret != "s1"
    assert secret.startswith("whsec_")
    assert f"data-secret>{secret}</code>" in response.content.decode()
    assert secret not in operator.get("/webhooks/").content.decode()  # shown that once

    assert operator.post("/webhooks/", {"action": "rotate-secret", "webhook": theirs.pk}).status_code == 404
    assert decrypt(WebhookEndpoint.objects.get(pk=theirs.pk).secret_ciphertext) == "s1"
    assert operator.post("/webhooks/", {"action": "explode", "webhook": mine.pk}).status_code == 404


# --- the number of queries of the schedules and webhooks pages ------------------------------------


def _queries(client: Client, path: str) -> tuple[int, str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    assert response.status_code == 200
    return len(queries), response.content.decode()


def test_the_schedules_page_reads_the_recent_runs_of_all_schedules_at_once(tenant_a: Tenant) -> None:
    client = _login(tenant_a, Membership.Role.VIEWER)
    counts, newest = [], {}
    for total in (2, 20):
        while Schedule.objects.filter(tenant=tenant_a).count() < total:
            n = Schedule.objects.filter(tenant=tenant_a).count()
            schedule = schedule_create(
                tenant=tenant_a, name=f"every-{n}", blueprint="demo.chain", input={"n": 1}, interval_seconds=60 + n
            )
            runs = []
            for minutes in range(7, 0, -1):  # seven runs, the five newest shown
                execution = _execution(tenant_a, at=timezone.now() - timedelta(minutes=minutes + n), state="completed")
                Execution.objects.filter(pk=execution.pk).update(schedule=schedule)
                runs.append(execution.pk)
            newest[schedule.pk] = runs[::-1][:5]
        count, html = _queries(client, "/schedules/")
        counts.append(count)
    assert counts[0] == counts[1], counts  # not one more query per schedule
    for schedule_id, runs in newest.items():
        row = _section(html, f'data-schedule="{schedule_id}"')
        recent = row[row.index('class="recent"') :]
        assert list(re.findall(r'href="/executions/(\w+)/"', recent)) == runs


def test_the_webhooks_page_reads_the_deliveries_of_all_webhooks_at_once(tenant_a: Tenant) -> None:
    client = _login(tenant_a, Membership.Role.VIEWER)
    run = _execution(tenant_a, at=timezone.now(), state="failed")
    _delivery(None, run, state="failed", attempts=1)
    counts, newest = [], {}
    for total in (2, 20):
        while WebhookEndpoint.objects.filter(tenant=tenant_a).count() < total:
            n = WebhookEndpoint.objects.filter(tenant=tenant_a).count()
            endpoint = _endpoint(tenant_a, f"https://hooks.example.com/{n}")
            made = [_delivery(endpoint, run, attempts=1) for _ in range(12)]  # twelve, the ten newest shown
            for age, delivery in enumerate(made[::-1]):
                WebhookDelivery.objects.filter(pk=delivery.pk).update(
                    created_at=timezone.now() - timedelta(minutes=n, seconds=age)
                )
            newest[endpoint.pk] = [d.pk for d in made[::-1][:10]]
        count, html = _queries(client, "/webhooks/")
        counts.append(count)
    assert counts[0] == counts[1], counts  # not one more query per webhook
    for endpoint_id, deliveries in newest.items():
        section = _section(html, f'data-webhook="{endpoint_id}"').split('id="submission-deliveries"')[0]
        assert list(re.findall(r'data-delivery="(\w+)"', section)) == deliveries
