"""The executions list in Chromium against a running platform: filters read in the reader's zone,
children opened under their parent, bulk cancel and rerun, rows that follow the feed (and leave a
state filter), the start form's defaults and wording, the phone's width, and staff's list of
every tenant."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from executions.blueprints.schemas import validate_input
from executions.models import Execution
from executions.services.controls import execution_cancel
from executions.services.submit import execution_submit
from tenants.models import Membership, Tenant

from ..conftest import wait_until
from .test_live_pages import PASSWORD, _log_in, _screenshot, _user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def problems(page: Any) -> list[str]:
    """What went wrong in the page: script errors, and anything the Content Security Policy refused."""
    found: list[str] = []
    page.on("pageerror", lambda error: found.append(f"error: {error}"))
    page.on(
        "console",
        lambda message: found.append("csp: " + message.text) if "Content Security Policy" in message.text else None,
    )
    return found


def _state(execution_id: str) -> str:
    return Execution.objects.values_list("state", flat=True).get(pk=execution_id)


def _no_overflow(page: Any, width: int) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def _uncovered(page: Any, locator: Any) -> None:
    """The element is on screen and is what a tap at its centre reaches."""
    locator.scroll_into_view_if_needed()
    expect(locator).to_be_in_viewport()
    assert locator.evaluate(
        """node => { const r = node.getBoundingClientRect();
                     const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
                     return hit === node || node.contains(hit); }"""
    )


def test_dates_are_read_in_the_readers_zone_and_times_written_in_it(
    live_server_url: str, browser: Any, tenant_a: Tenant, enqueued: list[str]
) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    made = [execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": i + 1})[0] for i in range(4)]
    start = datetime(2026, 3, 1, 9, 58, tzinfo=UTC)  # 10:58 in Paris
    for i, execution in enumerate(made):
        Execution.objects.filter(pk=execution.pk).update(created_at=start + timedelta(minutes=i))
    recent, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 9})
    Execution.objects.filter(pk=recent.pk).update(created_at=datetime.now(UTC) - timedelta(minutes=3))

    context = browser.new_context(viewport={"width": 1400, "height": 900}, timezone_id="Europe/Paris")
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        _log_in(page, live_server_url, "olga")
        expect(page.locator("#zone")).to_have_text("Europe/Paris")
        row = page.locator(f'tr[data-id="{recent.pk}"]')
        expect(row.locator("td.created")).to_contain_text("3 minutes ago")
        expect(row.locator("td.created time").first).to_have_attribute("title", re.compile("Europe/Paris"))

        page.fill('#filters input[name="from"]', "2026-03-01T11:00")
        page.fill('#filters input[name="to"]', "2026-03-01T11:01")
        page.click('#filters button[type="submit"]')
        page.wait_for_url(re.compile(r"tz=Europe%2FParis"))
        shown = page.locator("#executions tbody tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)")
        assert sorted(shown) == sorted([made[2].pk, made[3].pk])  # 10:00 and 10:01 UTC
        expect(page.locator("#range")).to_have_text("1\N{EN DASH}2 of 2")
    finally:
        context.close()


def test_search_finds_text_inside_input_and_metadata(
    live_server_url: str, page: Any, problems: list[str], tenant_a: Tenant, enqueued: list[str]
) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    report, _ = execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": "the Quarterly report"})
    keyed, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 2}, idempotency_key="order-4411")
    tagged, _ = execution_submit(
        tenant=tenant_a, blueprint="demo.chain", input={"n": 1}, metadata={"customer": "Zoë Café"}
    )
    _log_in(page, live_server_url, "olga")
    rows = page.locator("#executions tbody tr[data-id]")
    expect(rows).to_have_count(3)

    def search(text: str) -> list[str]:
        page.fill('#filters input[name="q"]', text)
        page.click('#filters button[type="submit"]')
        page.wait_for_url(re.compile(r"[?&]q="))
        page.wait_for_load_state("domcontentloaded")
        return page.locator("#executions tbody tr[data-id]").evaluate_all("rows => rows.map(r => r.dataset.id)")

    assert search("quarterly") == [report.pk]  # inside the input, any case
    expect(page.locator('#filters input[name="q"]')).to_have_value("quarterly")  # the box keeps what was asked
    assert search("café") == [tagged.pk]  # inside the metadata, beyond ASCII
    assert search("order-4411") == [keyed.pk]  # an idempotency key
    assert search("nowhere-to-be-found") == []
    expect(page.locator("#executions")).to_contain_text("No execution matches these filters.")
    assert problems == []


def test_children_open_under_their_parent(
    live_server_url: str, page: Any, problems: list[str], tenant_a: Tenant
) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    parent, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    kids = [
        execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": i + 1}, parent=parent)[0]
        for i in range(3)
    ]
    _log_in(page, live_server_url, "olga")
    rows = page.locator("#executions tbody tr[data-id]")
    expect(rows).to_have_count(1)
    disclosure = page.locator(f'tr[data-id="{parent.pk}"] button.disclosure')
    expect(disclosure).to_have_text("▸ 3 children")
    disclosure.click()
    expect(rows).to_have_count(4)
    expect(disclosure).to_have_attribute("aria-expanded", "true")
    children = page.locator(f'tr[data-under="{parent.pk}"]')
    assert sorted(children.evaluate_all("rows => rows.map(r => r.dataset.id)")) == sorted(k.pk for k in kids)
    indent = children.first.locator("td.id").evaluate("td => parseFloat(getComputedStyle(td).paddingLeft)")
    top = page.locator(f'tr[data-id="{parent.pk}"] td.id').evaluate(
        "td => parseFloat(getComputedStyle(td).paddingLeft)"
    )
    assert indent > top
    expect(children.first.locator(".state")).to_have_text("completed", timeout=20_000)  # live, like any row
    disclosure.click()
    expect(rows).to_have_count(1)

    disclosure.click()
    expect(rows).to_have_count(4)
    assert problems == []  # on the list (the child's page is its own)
    page.locator(f'tr[data-id="{kids[0].pk}"] td.id a').first.click()
    page.wait_for_url(f"**/executions/{kids[0].pk}/")
    expect(page.locator('a[data-link="parent"]')).to_have_attribute("href", f"/executions/{parent.pk}/")


def test_operators_cancel_and_rerun_what_they_select(
    live_server_url: str, page: Any, problems: list[str], tenant_a: Tenant
) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    done, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    waiting = [execution_submit(tenant=tenant_a, blueprint="demo.approval", input={})[0] for _ in range(2)]
    assert wait_until(lambda: _state(done.pk) == "completed", timeout=20)
    assert wait_until(lambda: all(_state(w.pk) == "waiting" for w in waiting), timeout=20)
    _log_in(page, live_server_url, "olga")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    expect(page.locator(f'tr[data-id="{waiting[0].pk}"] .wait')).to_have_text("waits for approval")

    page.check("#pick-all")
    expect(page.locator("#picked")).to_have_text("3 executions selected.")
    questions: list[str] = []
    page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.accept()))
    page.click("#bulk-cancel")
    expect(page.locator("#bulk-result")).to_have_text("2 cancelled, 1 already finished.")
    assert questions == ["Cancel 3 executions?"]
    assert [_state(w.pk) for w in waiting] == ["cancelled", "cancelled"]
    for w in waiting:
        expect(page.locator(f'tr[data-id="{w.pk}"] .state')).to_have_text("cancelled")
    expect(page.locator("#bulk-cancel")).to_be_disabled()

    page.check(f'tr[data-id="{done.pk}"] input[name="pick"]')
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bulk-rerun")
    expect(page.locator("#bulk-result")).to_have_text("Started 1 rerun.")
    rerun = Execution.objects.get(source_id=done.pk, origin="rerun")
    row = page.locator(f'tr[data-id="{rerun.pk}"]')
    expect(row).to_be_visible()  # it arrived at the top by itself
    expect(row.locator("td.origin")).to_contain_text("rerun of")
    assert page.locator("#executions tbody tr[data-id]").first.get_attribute("data-id") == rerun.pk
    expect(page.locator("#total")).to_have_text("4")

    page.once("dialog", lambda dialog: dialog.dismiss())  # said no: nothing happens
    page.check(f'tr[data-id="{rerun.pk}"] input[name="pick"]')
    page.click("#bulk-cancel")
    page.wait_for_timeout(500)
    expect(page.locator("#bulk-result")).to_have_text("Started 1 rerun.")
    assert Execution.objects.filter(tenant=tenant_a).count() == 4
    assert problems == []


def test_rows_follow_the_feed_and_leave_a_state_filter(
    live_server_url: str, page: Any, problems: list[str], tenant_a: Tenant
) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    first, _ = execution_submit(tenant=tenant_a, blueprint="demo.approval", input={})
    assert wait_until(lambda: _state(first.pk) == "waiting", timeout=20)
    _log_in(page, live_server_url, "olga")
    page.goto(f"{live_server_url}/?state=waiting")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    expect(page.locator("#range")).to_have_text("1\N{EN DASH}1 of 1")
    page.wait_for_timeout(300)

    second, _ = execution_submit(tenant=tenant_a, blueprint="demo.approval", input={})
    arrived = page.locator(f'tr[data-id="{second.pk}"]')
    expect(arrived).to_be_visible(timeout=20_000)  # once it waits, it matches
    expect(arrived.locator(".wait")).to_have_text("waits for approval")
    expect(page.locator("#range")).to_have_text("1\N{EN DASH}2 of 2")
    assert page.locator("#executions tbody tr[data-id]").first.get_attribute("data-id") == second.pk

    execution_cancel(tenant=tenant_a, execution_id=first.pk, reason="from a test")
    gone = page.locator(f'tr[data-id="{first.pk}"]')
    expect(gone).to_have_class(re.compile("leaving"))  # marked first
    expect(gone.locator(".state")).to_have_text("cancelled")
    expect(gone).to_have_count(0, timeout=10_000)
    expect(page.locator("#range")).to_have_text("1\N{EN DASH}1 of 1")
    expect(page.locator("#announcer")).to_contain_text(re.compile(r"changed|no longer"))

    # On a later page new executions are counted, not shown there.
    Execution.objects.bulk_create(
        [Execution(tenant=tenant_a, blueprint="demo.chain", input={"n": 1}, state="completed") for _ in range(30)]
    )
    page.goto(f"{live_server_url}/?size=25&page=2")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    total = int(page.locator("#total").inner_text())
    shown = page.locator("#executions tbody tr[data-id]").count()
    page.wait_for_timeout(300)
    later, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    expect(page.locator("#list-news")).to_contain_text("1 new execution since this page was loaded.")
    expect(page.locator("#total")).to_have_text(str(total + 1))
    expect(page.locator(f'tr[data-id="{later.pk}"]')).to_have_count(0)
    assert page.locator("#executions tbody tr[data-id]").count() == shown

    # Unfiltered, a running row's duration runs.
    slow, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 30, "seconds": 0.3})
    page.goto(f"{live_server_url}/")
    row = page.locator(f'tr[data-id="{slow.pk}"]')
    expect(row.locator("td.duration.live")).to_be_visible(timeout=20_000)
    before = row.locator("td.duration").inner_text()
    page.wait_for_timeout(2200)
    assert row.locator("td.duration").inner_text() != before
    execution_cancel(tenant=tenant_a, execution_id=slow.pk, reason="from a test")
    expect(row.locator(".state")).to_have_text("cancelled")
    expect(row.locator("td.ended time")).to_have_count(1)
    expect(row.locator("td.duration.live")).to_have_count(0)
    assert problems == []


SHAPES = {
    "description": "Takes an input built from its schema alone",
    "input_schema": {
        "type": "object",
        "properties": {
            "mode": {"enum": ["fast", "careful"]},
            "count": {"type": "integer", "minimum": 2, "maximum": 9},
            "ratio": {"type": "number", "default": 0.5},
            "tags": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 3}},
            "owner": {
                "type": "object",
                "properties": {"name": {"type": "string", "minLength": 1}, "vip": {"type": "boolean"}},
                "required": ["name", "vip"],
            },
        },
        "required": ["mode", "count", "tags", "owner"],
        "additionalProperties": False,
    },
    "entry": "done",
    "nodes": {"done": {"kind": "template", "config": {"template": "{{ input.mode }}"}}},
    "edges": [{"from": "done", "to": "end"}],
}


def test_the_start_form_fills_an_input_each_blueprint_takes(live_server_url: str, page: Any, tenant_a: Tenant) -> None:
    from executions.catalog import blueprint_catalog
    from executions.services.blueprints import blueprint_save, blueprints_install_demo

    blueprints_install_demo(tenant=tenant_a)
    blueprint_save(tenant=tenant_a, name="shapes", definition=SHAPES)
    schemas = {entry.name: entry.input_schema for entry in blueprint_catalog(tenant=tenant_a)}
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    _log_in(page, live_server_url, "olga")

    names = page.locator("#start-blueprint option").evaluate_all("options => options.map(o => o.value)")
    # The server offers the tenant's blueprints and its own process's code graphs; this process may
    # have registered more (other tests' graphs), so the offer is within the catalog seen here.
    assert set(names) <= set(schemas)
    assert {"shapes", "demo-triage", "demo-summarize", "demo.pipeline"} <= set(names)
    for name in names:
        page.select_option("#start-blueprint", name)
        validate_input(schemas[name], json.loads(page.input_value("#start-input")))  # raises if refused

    page.select_option("#start-blueprint", "shapes")
    wrong = {
        json.dumps({"mode": "fast", "count": "3", "tags": ["abc"], "owner": {"name": "a", "vip": True}}): (
            "input.count must be an integer"
        ),
        json.dumps({"mode": "fast", "count": 3, "tags": {}, "owner": {"name": "a", "vip": True}}): (
            "input.tags must be an array"
        ),
        json.dumps({"mode": "fast", "count": 3, "tags": ["abc"], "owner": []}): "input.owner must be an object",
        json.dumps({"mode": "slow", "count": 3, "tags": ["abc"], "owner": {"name": "a", "vip": True}}): (
            'input.mode must be one of "fast", "careful"'
        ),
    }
    for text, message in wrong.items():
        page.fill("#start-input", text)
        page.click("#start-form button[type=submit]")
        expect(page.locator("#start-error")).to_have_text(message)

    # The first blueprint with the input it offers starts as it is.
    page.reload()
    first = page.locator("#start-blueprint option").first.get_attribute("value")
    assert page.input_value("#start-blueprint") == first
    page.click("#start-form button[type=submit]")
    page.wait_for_url(re.compile(r"/executions/exec_\w+/$"), timeout=20_000)
    execution_id = page.url.rstrip("/").rsplit("/", 1)[1]
    assert Execution.objects.get(pk=execution_id).blueprint == first


def test_on_a_phone_the_table_has_the_width_and_the_form_waits_under_a_button(
    live_server_url: str, page: Any, tenant_a: Tenant, enqueued: list[str]
) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    for i in range(3):
        execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": f"text {i}"})
    page.set_viewport_size({"width": 390, "height": 844})
    _log_in(page, live_server_url, "olga")
    toggle = page.locator("#start-toggle")
    expect(toggle).to_be_visible()
    expect(page.locator("#start-form")).to_be_hidden()
    _no_overflow(page, 390)
    first_cell = page.locator("#executions tbody tr[data-id]").first.locator("td.id")
    _uncovered(page, first_cell)
    table_width = page.locator("#executions").evaluate("t => t.getBoundingClientRect().width")
    card_width = page.locator("#list").evaluate("c => c.clientWidth")
    assert table_width >= card_width * 0.85  # the table has the card's width, not a share of it
    _screenshot(page, "executions-phone.png")

    toggle.click()
    expect(page.locator("#start-form")).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    _no_overflow(page, 390)
    _uncovered(page, page.locator("#start-form button[type=submit]"))
    _uncovered(page, first_cell)  # the form pushes the table down; it does not lie over it
    toggle.click()
    expect(page.locator("#start-form")).to_be_hidden()

    page.set_viewport_size({"width": 1400, "height": 900})  # wide: the form beside the table, no button
    expect(toggle).to_be_hidden()
    expect(page.locator("#start-form")).to_be_visible()


def test_staff_follow_every_tenant_and_others_see_only_theirs(
    live_server_url: str, page: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    User.objects.create_superuser("root", password=PASSWORD)
    _user(tenant_a, "vic", Membership.Role.VIEWER)
    mine, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    theirs, _ = execution_submit(tenant=tenant_b, blueprint="demo.chain", input={"n": 2})

    _log_in(page, live_server_url, "root")
    page.click("text=All tenants")
    expect(page.locator("h1")).to_contain_text("of all tenants")
    expect(page.locator(f'tr[data-id="{theirs.pk}"] td.tenant')).to_have_text("Globex")
    expect(page.locator(f'tr[data-id="{mine.pk}"] td.tenant')).to_have_text("Acme")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    page.wait_for_timeout(500)
    later, _ = execution_submit(tenant=tenant_b, blueprint="demo.chain", input={"n": 3})
    expect(page.locator(f'tr[data-id="{later.pk}"]')).to_be_visible(timeout=20_000)
    page.select_option('#filters select[name="tenant"]', "acme")
    page.click('#filters button[type="submit"]')
    expect(page.locator(f'tr[data-id="{theirs.pk}"]')).to_have_count(0)
    expect(page.locator(f'tr[data-id="{mine.pk}"]')).to_have_count(1)

    page.context.clear_cookies()
    _log_in(page, live_server_url, "vic")
    expect(page.locator("text=All tenants")).to_have_count(0)
    expect(page.locator('input[name="pick"]')).to_have_count(0)  # a viewer selects nothing
    response = page.goto(f"{live_server_url}/operator/executions/")
    assert response is not None
    assert response.status == 403
    page.goto(f"{live_server_url}/?tenant=*")
    expect(page.locator(f'tr[data-id="{mine.pk}"]')).to_have_count(1)
    expect(page.locator(f'tr[data-id="{theirs.pk}"]')).to_have_count(0)


def _held(tenant: Tenant, n: int, start: datetime, **fields: Any) -> list[Execution]:
    """``n`` executions a second apart (the newest last), held by a worker elsewhere: nothing
    here runs them, and their state stays as written."""
    rows = Execution.objects.bulk_create(
        [
            Execution(
                tenant=tenant,
                blueprint="demo.chain",
                input={"n": i},
                lease_owner="elsewhere",
                lease_expires_at=datetime.now(UTC) + timedelta(days=1),
                **fields,
            )
            for i in range(n)
        ]
    )
    for i, row in enumerate(rows):
        Execution.objects.filter(pk=row.pk).update(created_at=start + timedelta(seconds=i))
    return [Execution.objects.get(pk=row.pk) for row in rows]


def _frame(execution: Execution) -> str:
    """The tenant feed's frame for ``execution``, as the server writes it."""
    from executions.serializers import ExecutionSummarySerializer

    summary = dict(ExecutionSummarySerializer(Execution.objects.get(pk=execution.pk)).data)
    return json.dumps({"type": "execution", "execution": summary})


def test_a_full_page_of_unfinished_rows_stays_when_the_socket_opens_and_reopens(
    live_server_url: str, page: Any, problems: list[str], tenant_a: Tenant
) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    _held(tenant_a, 150, an_hour_ago, state="running", started_at=an_hour_ago)
    sockets: list[Any] = []
    page.route_web_socket(re.compile(r"/ws/executions/"), lambda ws: sockets.append(ws))  # the feed says nothing
    looks: list[str] = []
    page.on("request", lambda request: looks.append(request.url) if "partial=rows" in request.url else None)
    _log_in(page, live_server_url, "olga")
    page.goto(f"{live_server_url}/?state=running&size=200")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    rows = page.locator("#executions tbody tr[data-id]")
    expect(rows).to_have_count(150)
    page.wait_for_timeout(3000)  # the look at the server once the socket is open, and its answer
    assert looks, "no look at the server when the socket opened"
    assert all(len(re.search(r"ids=([^&]*)", url)[1].split("%2C")) <= 100 for url in looks)
    expect(page.locator("tr.leaving")).to_have_count(0)
    expect(rows).to_have_count(150)
    expect(page.locator("#range")).to_have_text("1\N{EN DASH}150 of 150")

    # While the socket is down an execution starts and no frame tells of it: the look on
    # reopening finds it, and still none of the others leaves.
    (late,) = _held(tenant_a, 1, datetime.now(UTC), state="running", started_at=datetime.now(UTC))
    sockets[-1].close()
    expect(page.locator(f'tr[data-id="{late.pk}"]')).to_be_visible(timeout=20_000)
    assert rows.first.get_attribute("data-id") == late.pk
    expect(page.locator("#range")).to_have_text("1\N{EN DASH}151 of 151")
    page.wait_for_timeout(1500)
    expect(page.locator("tr.leaving")).to_have_count(0)
    expect(rows).to_have_count(151)
    assert len(sockets) >= 2
    assert problems == []


def test_the_operators_list_looks_once_and_later_pages_say_new_from_now_matching(
    live_server_url: str, page: Any, problems: list[str], tenant_a: Tenant, tenant_b: Tenant
) -> None:
    User.objects.create_superuser("root", password=PASSWORD)
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    (running,) = _held(tenant_a, 1, an_hour_ago, state="running", started_at=an_hour_ago)
    _held(tenant_b, 1, an_hour_ago + timedelta(minutes=1), state="running", started_at=an_hour_ago)
    (done,) = _held(
        tenant_b, 1, an_hour_ago + timedelta(minutes=2), state="completed", started_at=an_hour_ago, ended_at=an_hour_ago
    )
    sockets: list[Any] = []
    page.route_web_socket(re.compile(r"/ws/executions/"), lambda ws: sockets.append(ws))
    looks: list[str] = []
    page.on("request", lambda request: looks.append(request.url) if "partial=rows" in request.url else None)
    _log_in(page, live_server_url, "root")
    page.goto(f"{live_server_url}/usage/")  # a page with no feed: what follows counts the list's alone
    sockets.clear()
    looks.clear()
    page.goto(f"{live_server_url}/operator/executions/")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    page.wait_for_timeout(3000)
    assert len(sockets) == 2, [ws.url for ws in sockets]  # one feed a tenant
    assert len(looks) == 1  # both opened at once: one look at the server

    # A frame that repeats what the row says (its end written "Z", the row's "+00:00") changes nothing.
    row = page.locator(f'tr[data-id="{done.pk}"]')
    ended = row.get_attribute("data-ended")
    assert ended
    assert ended.endswith("+00:00")
    frame = _frame(done)
    assert json.loads(frame)["execution"]["ended_at"].endswith("Z")
    next(ws for ws in sockets if "globex" in ws.url).send(frame)
    page.wait_for_timeout(2500)
    assert row.get_attribute("data-ended") == ended
    expect(page.locator("#announcer", has_text="changed")).to_have_count(0)

    # On a later page, an older execution that comes to match is not called new.
    _held(tenant_a, 30, an_hour_ago + timedelta(minutes=10), state="waiting", wait_reason="approval")
    page.set_viewport_size({"width": 390, "height": 844})
    sockets.clear()
    page.goto(f"{live_server_url}/?tenant=acme&state=waiting&size=25&page=2")
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    expect(page.locator("#range")).to_have_text("26\N{EN DASH}30 of 30")
    page.wait_for_timeout(1500)
    Execution.objects.filter(pk=running.pk).update(state="waiting", wait_reason="approval")
    sockets[-1].send(_frame(running))
    news = page.locator("#list-news")
    expect(news).to_contain_text("1 execution that now matches the filters since this page was loaded.")
    expect(news).not_to_contain_text("new execution")
    (fresh,) = _held(tenant_a, 1, datetime.now(UTC), state="waiting", wait_reason="approval")
    sockets[-1].send(_frame(fresh))
    expect(news).to_contain_text(
        "1 new execution and 1 execution that now matches the filters since this page was loaded."
    )
    expect(page.locator("#total")).to_have_text("32")
    _no_overflow(page, 390)
    _uncovered(page, news.locator("a"))
    assert problems == []
