"""The run tree on an execution's timeline: a child execution (a node that runs a blueprint as an
execution of its own) is drawn under the step of the node that started it, follows its state live
through the tenant's feed, and links to its own page."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from executions.models import Execution
from executions.services.blueprints import blueprint_save
from executions.services.controls import execution_provide_input
from executions.services.submit import execution_submit
from tenants.models import Membership, Tenant

from ..conftest import wait_until
from .test_live_pages import _log_in, _user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _parent_and_child(tenant: Tenant) -> None:
    child = {
        "ask": {"kind": "wait", "config": {"mode": "approval", "prompt": "go on?"}},
        "done": {"kind": "template", "config": {"template": "child saw {{ input.n }}"}},
    }
    blueprint_save(
        tenant=tenant,
        name="child",
        definition={
            "entry": "ask",
            "nodes": child,
            "edges": [{"from": "ask", "to": "done"}, {"from": "done", "to": "end"}],
        },
    )
    # Left in the background: the parent ends while its child still waits, so only the tenant's
    # feed can tell the parent's page how the child goes on.
    config = {"blueprint": "child", "mode": "child", "input": {"n": "{{ input.n }}"}, "background": True}
    spawn = {"kind": "subgraph", "config": config}
    nodes = {"spawn": spawn, "after": {"kind": "template", "config": {"template": "{{ state.spawn }}"}}}
    edges = [{"from": "spawn", "to": "after"}, {"from": "after", "to": "end"}]
    blueprint_save(tenant=tenant, name="parent", definition={"entry": "spawn", "nodes": nodes, "edges": edges})


def test_a_child_execution_sits_under_its_node_on_the_timeline_and_follows_its_state(
    live_server_url: str, page: Any, tenant_a: Tenant
) -> None:
    _user(tenant_a, "tina", Membership.Role.OPERATOR)
    _parent_and_child(tenant_a)
    parent, _ = execution_submit(tenant=tenant_a, blueprint="parent", input={"n": 4})
    assert wait_until(lambda: Execution.objects.filter(parent=parent, state="waiting").exists(), timeout=20)
    assert wait_until(lambda: Execution.objects.get(pk=parent.pk).state == "completed", timeout=20)
    child = Execution.objects.get(parent=parent)

    _log_in(page, live_server_url, "tina")
    page.goto(f"{live_server_url}/executions/{parent.pk}/")
    row = page.locator(f'#waterfall .tl-row[data-step="child:{child.pk}"]')
    expect(row).to_contain_text(child.pk)
    expect(row).to_have_attribute("data-state", "waiting")
    spawn = page.locator("#waterfall .tl-row", has_text="spawn").first
    # Nested: indented past the node's own row.
    indent = row.locator(".tl-label").evaluate("l => parseFloat(getComputedStyle(l).paddingLeft)")
    assert indent > spawn.locator(".tl-label").evaluate("l => parseFloat(getComputedStyle(l).paddingLeft)")

    # The child is answered elsewhere: its row follows.
    execution_provide_input(tenant=tenant_a, execution_id=child.pk, approve=True)
    expect(row).to_have_attribute("data-state", "completed", timeout=20_000)

    row.locator("a.tl-name").click()
    page.wait_for_url(f"**/executions/{child.pk}/")
    expect(page.locator("h1")).to_contain_text(child.pk)
