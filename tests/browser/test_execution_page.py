"""The execution page in a real browser against a real server and workers: its summary, states
told apart in the graph, cancel asked first and told in words, pause, rerun and fork from a step,
a big graph folded and zoomable, a model's step as it streams, and the page on a phone."""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from playwright.sync_api import expect

from executions.kernel.ids import new_step_id
from executions.models import Execution, ExecutionEvent, ModelPrice, Step
from executions.services.blueprints import blueprint_save
from executions.services.submit import execution_submit
from tenants.models import Membership, Tenant
from tenants.services import tenant_secret_set, tenant_set_limits

from ..blueprints.openai_server import OpenAIServer, text_stream, tool_call_stream
from ..conftest import wait_until
from .test_live_pages import _log_in, _screenshot, _user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SLOW = 20_000


def _state(execution_id: str) -> str:
    return Execution.objects.values_list("state", flat=True).get(pk=execution_id)


def _node(page: Any, name: str) -> Any:
    return page.locator(f'#graph g.node[data-node="{name}"]')


def test_the_summary_of_a_finished_execution(live_server_url: str, page: Any, tenant_a: Tenant) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    tenant_set_limits(tenant=tenant_a, changes={"max_tokens": 10_000, "max_cost_usd": "1.00"})
    done, _ = execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": "hello hello world"})
    assert wait_until(lambda: _state(done.pk) == "completed", timeout=30)
    _log_in(page, live_server_url, "olga")
    page.goto(f"{live_server_url}/executions/{done.pk}/")

    summary = page.locator("#summary")
    expect(summary.locator("#input-view .json")).to_contain_text('"hello hello world"')
    expect(summary.locator("#output-view .json")).to_be_visible()
    expect(summary.locator("#input-view .json-tools button.copy")).to_have_count(1)
    expect(page.locator("h1 button.copy")).to_have_attribute("aria-label", re.compile(done.pk))
    expect(page.locator("#origin")).to_contain_text("Submitted")
    # Times in the reader's zone, not ISO; a duration in words; tokens and cost formatted.
    started = page.locator("#started-at time")
    expect(started).not_to_have_text(re.compile(r"\d{4}-\d{2}-\d{2}T"))
    expect(started).to_have_attribute("title", re.compile(r"\(.+\)"))
    expect(page.locator("#duration")).to_have_text(re.compile(r"^\d+(\.\d)? (ms|s)$|min"))
    expect(page.locator("#cost")).to_have_text("$0.00")
    expect(page.locator("#error-box")).to_be_hidden()
    # Usage bars: progress bars with values, the numbers written with their limits.
    bars = page.locator("#usage [role=progressbar]")
    expect(bars).to_have_count(4)
    tokens = page.locator("#usage .bar-row", has_text="Tokens")
    expect(tokens.locator(".bar-value")).to_have_text(re.compile(r"^0 / 10,000$"))
    expect(tokens.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "0")
    expect(page.locator("#usage .bar-row", has_text="Cost").locator(".bar-value")).to_have_text("$0.00 / $1.00")
    width = tokens.locator(".bar").evaluate("b => b.getBoundingClientRect().width")
    assert width >= 100, width
    # A rerun from the page: the same blueprint and input, and the page of the new one opens.
    page.click("#rerun")
    page.wait_for_url(lambda url: re.search(r"/executions/exec_\w+/$", url) and done.pk not in url, timeout=SLOW)
    rerun_id = page.url.rstrip("/").rsplit("/", 1)[1]
    assert rerun_id != done.pk
    rerun = Execution.objects.get(pk=rerun_id)
    assert (rerun.origin, rerun.source_id, rerun.input) == ("rerun", done.pk, done.input)
    expect(page.locator("#origin")).to_contain_text("A rerun")
    expect(page.locator('#origin a[data-link="source"]')).to_have_attribute("href", f"/executions/{done.pk}/")
    page.goto(f"{live_server_url}/executions/{done.pk}/")
    expect(page.locator(f'#derived a[href="/executions/{rerun_id}/"]')).to_be_visible()


def test_json_folds_and_a_folded_branch_is_built_when_opened(live_server_url: str, page: Any, tenant_a: Tenant) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    done, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    assert wait_until(lambda: _state(done.pk) == "completed", timeout=30)
    deep = {"outer": {"inner": {"items": [1, 2, {"leaf": "deep-leaf-value"}]}}, "flat": True}
    Execution.objects.filter(pk=done.pk).update(output=deep)
    _log_in(page, live_server_url, "olga")
    page.goto(f"{live_server_url}/executions/{done.pk}/")

    view = page.locator("#output-view .json")
    branch = view.locator("details.json-branch")
    # Two levels open at first: the document and "outer"; "inner" is folded and not built yet.
    expect(branch).to_have_count(3)
    expect(view.locator("summary", has_text='"outer"')).to_contain_text("1 keys")
    inner = branch.filter(has=page.locator("> summary", has_text='"inner"'))
    expect(inner).not_to_have_attribute("open", "")
    assert "deep-leaf-value" not in (view.text_content() or "")  # not hidden: not there at all
    inner.locator("> summary").click()
    items = inner.locator("details.json-branch").filter(has=page.locator("> summary", has_text='"items"'))
    expect(items.locator("> summary")).to_contain_text("3 items")
    items.locator("> summary").click()
    leaf = items.locator("details.json-branch").last
    leaf.locator("> summary").click()
    expect(view.locator(".json-string", has_text="deep-leaf-value")).to_be_visible()
    # Folding again hides what was opened, and opening keeps what was built.
    inner.locator("> summary").click()
    expect(view.locator(".json-string", has_text="deep-leaf-value")).to_be_hidden()
    inner.locator("> summary").click()
    expect(view.locator(".json-string", has_text="deep-leaf-value")).to_be_visible()
    expect(view.locator(".json-string", has_text="deep-leaf-value")).to_have_count(1)


def test_a_failure_in_words_with_a_link_to_its_step(live_server_url: str, page: Any, tenant_a: Tenant) -> None:
    _user(tenant_a, "vic", Membership.Role.VIEWER)
    blueprint_save(
        tenant=tenant_a,
        name="fetcher",
        definition={
            "entry": "fetch",
            "nodes": {"fetch": {"kind": "http", "config": {"url": "https://forbidden.example/x", "method": "GET"}}},
            "edges": [{"from": "fetch", "to": "end"}],
        },
    )
    failed, _ = execution_submit(tenant=tenant_a, blueprint="fetcher", input={})
    _log_in(page, live_server_url, "vic")
    page.goto(f"{live_server_url}/executions/{failed.pk}/")
    expect(page.locator("#state")).to_have_text("failed", timeout=SLOW)
    box = page.locator("#error-box")
    expect(box).to_be_visible()
    stored = Execution.objects.get(pk=failed.pk).error
    expect(box.locator("#error-text")).to_have_text(stored["message"])
    expect(box.locator("#error-category")).to_have_text(stored["category"])
    expect(box).not_to_contain_text("{")
    link = box.locator("a[data-step-link]")
    expect(link).to_have_text("fetch")
    expect(_node(page, "fetch")).to_have_attribute("data-state", "failed")
    # A viewer has no controls, no rerun and no fork.
    expect(page.locator("#rerun")).to_have_count(0)
    expect(page.locator("#fork")).to_have_count(0)


def test_waiting_is_not_completed_and_cancel_is_asked_then_told(
    live_server_url: str, page: Any, tenant_a: Tenant
) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    waiting, _ = execution_submit(tenant=tenant_a, blueprint="demo.approval", input={})
    assert wait_until(lambda: _state(waiting.pk) == "waiting", timeout=30)
    _log_in(page, live_server_url, "olga")
    page.goto(f"{live_server_url}/executions/{waiting.pk}/")
    approve = _node(page, "approve")
    expect(approve).to_have_attribute("data-state", "waiting")
    expect(approve).to_have_class(re.compile(r"\bstate-waiting\b"))
    expect(approve.locator("text.glyph")).to_have_text("◷")
    expect(approve.locator("title")).to_have_text("approve: waiting")
    expect(_node(page, "draft")).to_have_attribute("data-state", "completed")
    expect(page.locator("#wait-reason")).to_have_text("waiting for approval")
    expect(page.locator("#state-region")).to_have_attribute("aria-live", "polite")

    page.click('#controls button[data-control="cancel"]')
    expect(page.locator("#cancel-confirm")).to_be_visible()
    page.click("#cancel-no")
    expect(page.locator("#cancel-confirm")).to_be_hidden()
    assert _state(waiting.pk) == "waiting"  # nothing was sent
    page.click('#controls button[data-control="cancel"]')
    page.click("#cancel-yes")
    expect(page.locator("#control-result")).to_have_text("Cancelled.", timeout=SLOW)
    expect(page.locator("#state")).to_have_text("cancelled", timeout=SLOW)
    expect(page.locator("#announcer")).to_have_text(re.compile(r"cancelled|Cancelled"))
    expect(approve).to_have_attribute("data-state", "cancelled")
    expect(page.locator("#control-result")).not_to_contain_text("done")
    assert _state(waiting.pk) == "cancelled"


def test_a_running_step_stopped_by_cancel_shows_cancelled_and_pause_is_told(
    live_server_url: str, page: Any, tenant_a: Tenant
) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    _log_in(page, live_server_url, "olga")
    paused, _ = execution_submit(tenant=tenant_a, blueprint="demo.slow", input={"steps": 30, "seconds": 0.5})
    page.goto(f"{live_server_url}/executions/{paused.pk}/")
    expect(page.locator("#state")).to_have_text("running", timeout=SLOW)
    expect(page.locator("body[data-live=on]")).to_have_count(1)
    page.click('#controls button[data-control="pause"]')
    expect(page.locator("#control-result")).to_have_text(
        re.compile(r"^(Pause requested; it pauses at the next step boundary\.|Paused\.)$")
    )
    expect(page.locator("#control-result")).to_have_text("Paused at the next step boundary.", timeout=SLOW)
    expect(page.locator("#state")).to_have_text("paused")
    expect(page.locator('#graph g.node[data-state="paused"]')).to_have_count(1)
    expect(page.locator('#graph g.node[data-state="paused"] text.glyph')).to_have_text("‖")
    page.click('#controls button[data-control="resume"]')
    expect(page.locator("#state")).to_have_text("running", timeout=SLOW)
    page.click('#controls button[data-control="cancel"]')
    page.click("#cancel-yes")
    # A worker holds it: the cancel is asked for, then seen done.
    expect(page.locator("#control-result")).to_have_text(
        re.compile(r"^(Cancel requested; the running step stops at its next check\.|Cancelled\.)$"), timeout=SLOW
    )
    expect(page.locator("#control-result")).to_have_text("Cancelled.", timeout=SLOW)
    expect(page.locator("#state")).to_have_text("cancelled")
    stopped = page.locator('#graph g.node[data-state="cancelled"]')
    expect(stopped).to_have_count(1)
    expect(page.locator('#graph g.node[data-state="failed"]')).to_have_count(0)
    expect(stopped.locator("text.glyph")).to_have_text("⊘")
    stopped_name = stopped.get_attribute("data-node")
    step = Execution.objects.get(pk=paused.pk).steps.get(name=stopped_name, state="failed")
    assert step.error["category"] == "cancelled"


def test_fork_from_a_step_with_its_state_edited(live_server_url: str, page: Any, tenant_a: Tenant) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    done, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 4})
    assert wait_until(lambda: _state(done.pk) == "completed", timeout=30)
    third = Execution.objects.get(pk=done.pk).steps.get(name="n_3")
    _log_in(page, live_server_url, "olga")
    page.goto(f"{live_server_url}/executions/{done.pk}/")
    page.click("#fork-open")
    expect(page.locator("#fork")).to_be_visible()
    page.select_option("#fork-step", third.pk)
    expect(page.locator("#fork-state")).to_have_value("2")  # what n_3 was given
    expect(page.locator("#fork-send")).to_be_enabled()
    page.fill("#fork-state", "{not json")
    page.click("#fork-send")
    expect(page.locator("#control-error")).to_contain_text("not valid JSON")
    # The API's refusal is told in words, and nothing is made.
    tenant_set_limits(tenant=tenant_a, changes={"max_input_bytes": 100})
    page.fill("#fork-state", json.dumps("x" * 200))
    page.click("#fork-send")
    expect(page.locator("#control-error")).to_have_text(
        re.compile(r"^Could not fork: state is \d+ bytes; this tenant allows 100")
    )
    assert not Execution.objects.filter(source_id=done.pk).exists()
    page.fill("#fork-state", "40")
    page.click("#fork-send")
    page.wait_for_url(lambda url: re.search(r"/executions/exec_\w+/$", url) and done.pk not in url, timeout=SLOW)
    fork_id = page.url.rstrip("/").rsplit("/", 1)[1]
    assert fork_id != done.pk
    expect(page.locator("#state")).to_have_text("completed", timeout=SLOW)
    fork = Execution.objects.get(pk=fork_id)
    assert (fork.origin, fork.source_id) == ("fork", done.pk)
    assert fork.output == 42  # 40, then n_3 and n_4 ran again
    expect(page.locator("#origin")).to_contain_text("A fork")
    _screenshot(page, "execution-fork.png")


def test_a_big_graph_starts_folded_and_zooms(live_server_url: str, page: Any, tenant_a: Tenant) -> None:
    _user(tenant_a, "vic", Membership.Role.VIEWER)
    big, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1200})
    small, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 3})
    _log_in(page, live_server_url, "vic")
    page.goto(f"{live_server_url}/executions/{big.pk}/")
    expect(page.locator("#graph .graph-folded")).to_have_text(re.compile(r"Graph of 1,200 nodes"))
    expect(page.locator("#graph g.node")).to_have_count(0)
    page.click("#graph-show")
    expect(page.locator("#graph g.node")).to_have_count(1200)
    svg = page.locator("#graph svg")
    scroller = page.locator("#graph .graph-scroll")
    # At a readable scale: a node's box is drawn at least 100 px wide, and the box scrolls.
    node_width = page.locator('#graph g.node[data-node="n_1"] rect').evaluate("r => r.getBoundingClientRect().width")
    assert node_width >= 100, node_width
    assert scroller.evaluate("s => s.scrollHeight > s.clientHeight")
    before = svg.evaluate("s => s.getBoundingClientRect().width")
    page.click('#graph-tools button[data-zoom="in"]')
    after = svg.evaluate("s => s.getBoundingClientRect().width")
    assert after > before * 1.2
    page.click('#graph-tools button[data-zoom="out"]')
    page.click('#graph-tools button[data-zoom="out"]')
    assert svg.evaluate("s => s.getBoundingClientRect().width") < before
    page.click('#graph-tools button[data-zoom="fit"]')
    expect(page.locator("#graph-zoom")).to_have_text(re.compile(r"^\d+%$"))

    page.goto(f"{live_server_url}/executions/{small.pk}/")
    expect(page.locator("#graph g.node")).to_have_count(3)  # small graphs are drawn at once
    expect(page.locator("#graph .graph-folded")).to_have_count(0)


@pytest.fixture
def chat() -> Iterator[OpenAIServer]:
    with OpenAIServer() as server:
        yield server


def test_a_model_step_streams_its_reply_and_shows_its_tool_call(
    live_server_url: str, page: Any, tenant_a: Tenant, chat: OpenAIServer
) -> None:
    ModelPrice.objects.create(
        model="test-model", input_usd_per_million=Decimal("2"), output_usd_per_million=Decimal("8")
    )
    tenant_secret_set(tenant=tenant_a, name="MODEL_KEY", value="sk-test-abcdef0123456789")
    tenant_set_limits(tenant=tenant_a, changes={"tool_allowed_domains": [chat.url.split("/")[2]]})
    blueprint_save(
        tenant=tenant_a,
        name="ask",
        definition={
            "entry": "ask",
            "nodes": {
                "ask": {
                    "kind": "llm",
                    "config": {
                        "provider": "openai",
                        "base_url": chat.url,
                        "model": "test-model",
                        "api_key_secret": "MODEL_KEY",
                        "system": "Be brief.",
                        "prompt": "{{ input.q }}",
                        "tools": [{"name": "lookup", "function": "demo.lookup"}],
                    },
                }
            },
            "edges": [{"from": "ask", "to": "end"}],
        },
    )
    chat.script(
        tool_call_stream(call_id="call_1", name="lookup", argument_parts=['{"query": ', '"shipping"}'], usage=(20, 5)),
        text_stream(["Ships ", "within ", "a ", "day, ", "as ", "promised."], usage=(40, 6), delay_s=1.2),
    )
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    _log_in(page, live_server_url, "olga")
    execution, _ = execution_submit(tenant=tenant_a, blueprint="ask", input={"q": "When do you ship?"})
    page.goto(f"{live_server_url}/executions/{execution.pk}/")
    section = page.locator("#llm")
    expect(section).to_be_visible(timeout=SLOW)
    # The reply streams in: part of it shows while the step still runs.
    last = section.locator(".llm-step").last
    expect(last.locator(".llm-reply")).to_contain_text("Ships within", timeout=SLOW)
    assert "promised" not in last.locator(".llm-reply").inner_text()
    expect(page.locator("#state")).to_have_text("completed", timeout=SLOW)
    expect(last.locator(".llm-reply")).to_have_text("Ships within a day, as promised.")
    # The first round asked for the tool; the tools' step ran it with its arguments and result.
    calls = section.locator("li[data-call=call_1]")
    expect(calls.first.locator(".llm-args")).to_contain_text('"shipping"')
    expect(calls.first.locator(".llm-result")).to_contain_text("Orders ship within 24 hours")
    # What was sent: the system and user messages, for the first model call (folded once the
    # second call started; read when opened).
    first = section.locator(".llm-step").first
    expect(last).to_have_attribute("open", "")
    expect(first).not_to_have_attribute("open", "")
    first.locator("summary").click()
    expect(first.locator(".llm-sent")).to_contain_text("Be brief.")
    expect(first.locator(".llm-sent")).to_contain_text("When do you ship?")
    expect(first.locator(".llm-usage")).to_contain_text("25 tokens (20 in, 5 out)")
    expect(first.locator(".llm-usage")).to_contain_text("$0.0001")
    expect(last.locator(".llm-usage")).to_contain_text("46 tokens (40 in, 6 out)")
    _screenshot(page, "execution-llm.png")

    # Opened afterwards, the page shows the same from what is stored.
    page.reload()
    expect(section.locator(".llm-step").last.locator(".llm-reply")).to_have_text("Ships within a day, as promised.")
    folded = section.locator(".llm-step:not([open]) > summary")  # the earlier calls
    while folded.count():
        folded.first.click()
    expect(section.locator(".llm-step").first.locator(".llm-sent")).to_contain_text("When do you ship?")
    expect(section.locator("li[data-call=call_1] .llm-result").first).to_contain_text("Orders ship within 24 hours")
    expect(section.locator(".llm-step").last.locator(".llm-usage")).to_contain_text("46 tokens")


def _ask_blueprint(tenant: Tenant, chat: OpenAIServer) -> None:
    tenant_secret_set(tenant=tenant, name="MODEL_KEY", value="sk-test-abcdef0123456789")
    blueprint_save(
        tenant=tenant,
        name="ask",
        definition={
            "entry": "ask",
            "nodes": {
                "ask": {
                    "kind": "llm",
                    "config": {
                        "provider": "openai",
                        "base_url": chat.url,
                        "model": "test-model",
                        "api_key_secret": "MODEL_KEY",
                        "prompt": "{{ input.q }}",
                    },
                }
            },
            "edges": [{"from": "ask", "to": "end"}],
        },
    )


def test_thirty_model_steps_are_read_only_when_opened(live_server_url: str, page: Any, tenant_a: Tenant) -> None:
    _user(tenant_a, "olga", Membership.Role.VIEWER)
    done, _ = execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": "hello hello world"})
    assert wait_until(lambda: _state(done.pk) == "completed", timeout=30)
    for n in range(30):
        Step.objects.create(
            id=new_step_id(),
            execution_id=done.pk,
            position=100 + n,
            name=f"ask_{n}",
            step_type="llm_node",
            state="completed",
            output={"text": f"Reply number {n}.", "model": "test-model"},
        )
    _log_in(page, live_server_url, "olga")
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url) if "/steps/" in request.url else None)
    page.goto(f"{live_server_url}/executions/{done.pk}/")
    cards = page.locator("#llm .llm-step")
    expect(cards).to_have_count(30, timeout=SLOW)
    # The latest card opens and is read; the other 29 stay folded and unread.
    expect(cards.last).to_have_attribute("open", "")
    expect(cards.last.locator(".llm-reply")).to_have_text("Reply number 29.", timeout=SLOW)
    page.wait_for_timeout(1000)
    assert len(asked) == 1, asked
    assert asked[0].endswith("?llm=1")
    assert page.locator("#llm .llm-step[open]").count() == 1
    # Opening one reads it, once.
    cards.nth(3).locator("summary").click()
    expect(cards.nth(3).locator(".llm-reply")).to_have_text("Reply number 3.", timeout=SLOW)
    cards.nth(3).locator("summary").click()
    cards.nth(3).locator("summary").click()
    page.wait_for_timeout(500)
    assert len(asked) == 2, asked
    # Opening many at once: every one is read, two at a time.
    for n in range(10, 20):
        cards.nth(n).locator("summary").click()
    for n in range(10, 20):
        expect(cards.nth(n).locator(".llm-reply")).to_have_text(f"Reply number {n}.", timeout=SLOW)
    assert len(asked) == 12, asked

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    expect(cards.nth(3).locator("summary")).to_be_visible()


def test_a_reply_read_while_it_streams_never_loses_text(
    live_server_url: str, page: Any, tenant_a: Tenant, chat: OpenAIServer
) -> None:
    """The step's JSON is answered with what was stored when it was asked, and delivered late
    (held in the browser): the reply's live pieces that came meanwhile are neither lost nor doubled."""
    _ask_blueprint(tenant_a, chat)
    tenant_set_limits(tenant=tenant_a, changes={"tool_allowed_domains": [chat.url.split("/")[2]]})
    chunks = ["One ", "two ", "three ", "four ", "five ", "six ", "seven."]
    chat.script(text_stream(chunks, usage=(30, 7), delay_s=0.8))
    _user(tenant_a, "olga", Membership.Role.VIEWER)
    _log_in(page, live_server_url, "olga")
    execution, _ = execution_submit(tenant=tenant_a, blueprint="ask", input={"q": "Count."})
    deltas = ExecutionEvent.objects.filter(execution_id=execution.pk, type="data-text-delta")
    assert wait_until(lambda: deltas.exists(), timeout=30)

    held: list[str] = []

    def late(route: Any) -> None:
        response = route.fetch()  # answered now, with the reply so far
        held.append(route.request.url)
        time.sleep(2.5)  # the socket's next pieces reach the page first
        route.fulfill(response=response)

    page.route("**/steps/**", late)
    # What the reply shows, every 50 ms, from the page's start.
    page.add_init_script(
        "window.__replies = []; setInterval(() => { const r = document.querySelector('#llm .llm-step:last-child .llm-reply');"
        " if (r && r.textContent !== window.__replies[window.__replies.length - 1]) window.__replies.push(r.textContent); }, 50);"
    )
    page.goto(f"{live_server_url}/executions/{execution.pk}/")
    reply = page.locator("#llm .llm-step").last.locator(".llm-reply")
    expect(page.locator("#state")).to_have_text("completed", timeout=SLOW)
    whole = "".join(chunks)
    expect(reply).to_have_text(whole, timeout=SLOW)
    expect(page.locator("#llm .llm-step").last.locator(".llm-usage")).to_contain_text("37 tokens (30 in, 7 out)")
    assert held
    seen = [text for text in page.evaluate("window.__replies") if text]
    assert seen[-1] == whole
    for before, after in itertools.pairwise(seen):
        assert after.startswith(before), seen
    # A step JSON still held when the test ends (a later card's) is let go of, not answered after
    # the page has gone (Playwright then fails the teardown).
    page.unroute_all(behavior="ignoreErrors")


def test_a_live_step_end_replaces_what_the_page_knew_of_an_interrupted_step(
    live_server_url: str, page: Any, tenant_a: Tenant
) -> None:
    """A step put in the page as interrupted, its output too big to send, is shown by what its
    step-end event says once one arrives (here handed to the page on its socket)."""
    _user(tenant_a, "olga", Membership.Role.VIEWER)
    waiting, _ = execution_submit(tenant=tenant_a, blueprint="demo.approval", input={})
    assert wait_until(lambda: _state(waiting.pk) == "waiting", timeout=30)
    asked = Step.objects.filter(execution_id=waiting.pk).order_by("position").last()
    assert asked is not None
    Step.objects.filter(pk=asked.pk).update(output={"interrupted": "approval", "pad": "x" * 5000})
    last_seq = ExecutionEvent.objects.filter(execution_id=waiting.pk).order_by("-seq").values_list("seq", flat=True)[0]
    sockets: list[Any] = []

    def through(ws: Any) -> None:
        ws.connect_to_server()
        sockets.append(ws)

    page.route_web_socket(f"**/ws/executions/{waiting.pk}/**", through)
    _log_in(page, live_server_url, "olga")
    page.goto(f"{live_server_url}/executions/{waiting.pk}/")
    node = _node(page, asked.name)
    expect(node).to_have_attribute("data-state", "waiting", timeout=SLOW)
    assert wait_until(lambda: bool(sockets), timeout=10)
    event = {
        "id": "evt_test",
        "seq": last_seq + 1,
        "type": "data-step-end",
        "step_id": asked.pk,
        "timestamp": "2026-01-01T00:00:00+00:00",
        "data": {"name": asked.name, "output": {"approved": True}, "duration_ms": 5},
    }
    sockets[-1].send(json.dumps({"type": "event", "event": event}))
    expect(node).to_have_attribute("data-state", "completed", timeout=SLOW)


def test_the_page_on_a_phone(live_server_url: str, page: Any, tenant_a: Tenant) -> None:
    _user(tenant_a, "olga", Membership.Role.OPERATOR)
    done, _ = execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": "hello hello world"})
    assert wait_until(lambda: _state(done.pk) == "completed", timeout=30)
    _log_in(page, live_server_url, "olga")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server_url}/executions/{done.pk}/")
    expect(page.locator("#graph g.node").first).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    graph_width = page.locator("#graph").evaluate("g => g.getBoundingClientRect().width")
    assert graph_width > 300, graph_width
    # One column: the usage card sits below the graph, not beside it.
    graph_box = page.locator("#graph").bounding_box()
    usage_box = page.locator("#usage").bounding_box()
    assert usage_box["y"] > graph_box["y"] + graph_box["height"]
    for row in page.locator("#usage .bar-row").all():
        box = row.bounding_box()
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 390
    # The controls wrap inside the page, each one reachable.
    for button in page.locator("#controls button").all():
        box = button.bounding_box()
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 390
    node_width = page.locator("#graph g.node rect").first.evaluate("r => r.getBoundingClientRect().width")
    assert node_width >= 80, node_width  # readable, the graph box scrolls sideways if need be
    _screenshot(page, "execution-phone.png")
