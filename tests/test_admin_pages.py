"""The admin's execution and blueprint pages: what the execution page's script reads to stay
current, the confirmations in words, errors written as sentences, and a blueprint's versions
(indented definition, the picture's outline, a line diff between two versions)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse

from executions.admin import definition_diff, error_in_words
from executions.models import Blueprint, Execution, Step
from executions.selectors import blueprint_version_outline
from executions.services.blueprints import blueprint_save
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

ERROR = {
    "category": "network",
    "message": "simulated failure 3 of 10",
    "code": None,
    "attempt": 3,
    "step_id": "step_abc",
    "retryable": True,
}


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:{name}", args=[quote(arg) for arg in args])


def new_execution(tenant: Tenant, state: str = Execution.State.QUEUED, **fields: Any) -> Execution:
    return Execution.objects.create(tenant=tenant, blueprint="demo.chain", input={"n": 1}, state=state, **fields)


def live(client: Client, execution: Execution) -> dict[str, Any]:
    response = client.get(url("executions_execution_live", execution.pk))
    assert response.status_code == 200
    return dict(response.json())


# --- the execution's change page ----------------------------------------------------------------


def test_the_live_view_gives_fields_controls_and_one_row_per_step(admin_client: Client, tenant_a: Tenant) -> None:
    execution = new_execution(tenant_a, state=Execution.State.RUNNING)
    for position, name in enumerate(["first", "second"], start=1):
        Step.objects.create(
            execution=execution, id=f"step_{name}", name=name, step_type="task", state="completed", position=position
        )
    data = live(admin_client, execution)
    assert data["state"] == "running"
    assert data["fields"]["state"] == "Running"
    assert data["fields"]["ended_at"] == "-"
    assert data["fields"]["error_message"] == "-"
    assert data["controls"] == ["cancel", "pause"]
    assert [(s["id"], s["cells"]["name"], s["cells"]["state"]) for s in data["steps"]] == [
        ("step_first", "first", "completed"),
        ("step_second", "second", "completed"),
    ]

    Execution.objects.filter(pk=execution.pk).update(state=Execution.State.PAUSED)
    assert live(admin_client, execution)["controls"] == ["cancel", "resume"]

    from django.utils import timezone

    Execution.objects.filter(pk=execution.pk).update(state=Execution.State.FAILED, error=ERROR, ended_at=timezone.now())
    data = live(admin_client, execution)
    assert data["controls"] == []
    assert data["fields"]["state"] == "Failed"
    assert data["fields"]["ended_at"] != "-"
    assert data["fields"]["error_message"] == error_in_words(ERROR)


def test_the_live_view_is_scoped_like_the_page(
    client: Client, django_user_model: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    from django.contrib.auth.models import Permission

    from tenants.services import membership_set

    user = django_user_model.objects.create_user(username="vic", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label__in=["tenants", "executions"]))
    membership_set(tenant=tenant_a, user=user, role="viewer")
    client.force_login(user)
    mine, theirs = new_execution(tenant_a, Execution.State.RUNNING), new_execution(tenant_b)
    assert live(client, mine)["controls"] == []  # a viewer sees the fields, and no control
    assert client.get(url("executions_execution_live", theirs.pk)).status_code == 404


def test_errors_are_written_in_words_on_the_page(admin_client: Client, tenant_a: Tenant) -> None:
    assert error_in_words(ERROR) == (
        "simulated failure 3 of 10. It failed in step step_abc on attempt 3. Kind: network (retryable)."
    )
    assert error_in_words(None) == ""
    execution = new_execution(tenant_a, state=Execution.State.FAILED, error=ERROR)
    page = admin_client.get(url("executions_execution_change", execution.pk)).content.decode()
    assert "simulated failure 3 of 10. It failed in step step_abc on attempt 3." in page
    assert '"category": "network"' not in page  # not the raw JSON


def test_the_page_tells_its_script_how_to_follow_and_what_to_say(admin_client: Client, tenant_a: Tenant) -> None:
    execution = new_execution(tenant_a, state=Execution.State.RUNNING)
    page = admin_client.get(url("executions_execution_change", execution.pk)).content.decode()
    start = page.index('id="execution-live"')
    config = json.loads(page[page.index(">", start) + 1 : page.index("</script>", start)])
    assert config["live_url"] == url("executions_execution_live", execution.pk)
    assert [c["action"] for c in config["controls"]] == ["cancel", "pause", "resume"]
    assert config["wording"]["cancel_requested"] == "Cancel requested; the running step stops at its next check."
    assert config["wording"]["pause_requested"] == "Pause requested; it pauses at the next step boundary."
    assert 'data-action="pause"' in page


def test_a_control_from_the_change_page_says_what_follows(
    admin_client: Client, tenant_a: Tenant, enqueued: list[str]
) -> None:
    execution = new_execution(tenant_a, state=Execution.State.RUNNING)
    response = admin_client.post(url("executions_execution_pause", execution.pk), follow=True)
    texts = [str(m) for m in get_messages(response.wsgi_request)]
    assert texts == [f"Pause requested: {execution.pk}. It pauses at the next step boundary."]


def test_the_list_tells_its_script_which_feeds_to_follow(
    admin_client: Client, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    new_execution(tenant_a)
    page = admin_client.get(url("executions_execution_changelist")).content.decode()
    start = page.index('id="executions-live"')
    config = json.loads(page[page.index(">", start) + 1 : page.index("</script>", start)])
    assert config["tenants"] == ["acme", "globex"]
    assert config["filtered"] is False
    assert config["change_url"] == reverse("admin:executions_execution_change", args=["__id__"])
    filtered = admin_client.get(url("executions_execution_changelist") + "?state__exact=running").content.decode()
    assert '"filtered": true' in filtered


# --- blueprints ---------------------------------------------------------------------------------


def definition(prompt: str, *, router: bool = False) -> dict[str, Any]:
    nodes: dict[str, Any] = {
        "count": {"kind": "function", "config": {"function": "demo.word_count", "input": {"text": prompt}}},
    }
    edges = []
    if router:
        nodes["size"] = {
            "kind": "router",
            "config": {"cases": [{"when": "state.count.words > 3", "to": "long"}], "default": "short"},
        }
        nodes["long"] = {"kind": "template", "config": {"template": "long"}}
        nodes["short"] = {"kind": "template", "config": {"template": "short"}}
        edges = [{"from": "count", "to": "size"}]
    return {"description": "Counts words", "entry": "count", "nodes": nodes, "edges": edges}


def test_a_blueprint_page_shows_a_version_indented_its_outline_and_a_diff(
    admin_client: Client, tenant_a: Tenant
) -> None:
    blueprint_save(tenant=tenant_a, name="count", definition=definition("{{ input.text }}"))
    second = blueprint_save(tenant=tenant_a, name="count", definition=definition("{{ input.body }}", router=True))
    blueprint = Blueprint.objects.get(tenant=tenant_a, name="count")
    change = url("executions_blueprint_change", blueprint.pk)

    page = admin_client.get(change).content.decode()
    assert "Version 2 (the latest)" in page
    assert "  &quot;entry&quot;: &quot;count&quot;,\n  &quot;nodes&quot;: {" in page  # indented, in written order
    assert 'id="blueprint-outline"' in page
    assert "admin_blueprint.js" in page
    assert 'class="diff-line diff-del">-          &quot;text&quot;: &quot;{{ input.text }}&quot;' in page
    assert 'class="diff-line diff-add">+          &quot;text&quot;: &quot;{{ input.body }}&quot;' in page

    outline = blueprint_version_outline(version=second)
    assert outline["entry"] == "count"
    assert sorted(n["name"] for n in outline["nodes"]) == ["count", "long", "short", "size"]
    assert {(e["from"], e["to"]) for e in outline["edges"]} >= {("count", "size"), ("size", "long"), ("size", "short")}

    textarea = page[page.index('<textarea name="definition"') : page.index("</textarea>")]
    assert "\n  &quot;entry&quot;: &quot;count&quot;,\n" in textarea  # the form's definition, indented too

    first = admin_client.get(change + "?version=1&from=1&to=1").content.decode()
    assert "Version 1</h3>" in first
    assert "Pick two different versions to compare." in first


def test_the_diff_is_of_lines_with_their_kinds() -> None:
    lines = definition_diff({"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 3]}, "version 1", "version 2")
    kinds = [(line["kind"], line["text"].strip()) for line in lines]
    assert ("del", "-    2") in kinds
    assert ("add", "+    3") in kinds
    assert kinds[0] == ("file", "--- version 1")
    assert kinds[2][0] == "hunk"
    assert definition_diff({"a": 1, "b": 2}, {"b": 2, "a": 1}, "x", "y") == []  # key order is no change


# --- what the change page's script starts from --------------------------------------------------


def test_the_page_reads_the_last_seq_before_the_execution(
    admin_client: Client, tenant_a: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event stored between the two reads is one the socket still sends (after=last_seq): the
    page's last_seq is never newer than the execution it shows."""
    from django.utils import timezone

    from executions.admin import ExecutionAdmin
    from executions.models import ExecutionEvent

    execution = new_execution(tenant_a, state=Execution.State.RUNNING)

    def event(seq: int, kind: str) -> None:
        ExecutionEvent.objects.create(
            id=f"evt_{execution.pk}_{seq}",
            execution=execution,
            tenant=tenant_a,
            seq=seq,
            type=kind,
            timestamp=timezone.now(),
        )

    event(1, "data-execution-start")
    read = ExecutionAdmin.get_object

    def read_then_pause(self: Any, request: Any, object_id: str, from_field: Any = None) -> Any:
        found = read(self, request, object_id, from_field)
        event(2, "data-execution-paused")  # lands after the execution was read
        Execution.objects.filter(pk=execution.pk).update(state=Execution.State.PAUSED)
        return found

    monkeypatch.setattr(ExecutionAdmin, "get_object", read_then_pause)
    page = admin_client.get(url("executions_execution_change", execution.pk)).content.decode()
    start = page.index('id="execution-live"')
    config = json.loads(page[page.index(">", start) + 1 : page.index("</script>", start)])
    assert config["last_seq"] == 1  # the socket sends event 2, which the page has not shown
    assert 'data-action="pause"' in page  # the page shows the execution as it was read: running


def test_the_live_view_gives_the_latest_steps_in_order(admin_client: Client, tenant_a: Tenant) -> None:
    from executions.admin import STEP_ROWS_LIVE

    execution = new_execution(tenant_a, state=Execution.State.RUNNING)
    total = STEP_ROWS_LIVE + 100
    Step.objects.bulk_create(
        Step(execution=execution, id=f"step_{n:05d}", name=f"s{n}", step_type="task", state="completed", position=n)
        for n in range(1, total + 1)
    )
    steps = live(admin_client, execution)["steps"]
    assert [s["id"] for s in steps] == [f"step_{n:05d}" for n in range(total - STEP_ROWS_LIVE + 1, total + 1)]


def test_the_list_follows_a_few_feeds_leaving_the_users_other_pages_theirs(admin_client: Client, settings: Any) -> None:
    for n in range(12):
        Tenant.objects.create(slug=f"t{n:02d}", name=f"Tenant {n}")
    page = admin_client.get(url("executions_execution_changelist")).content.decode()
    start = page.index('id="executions-live"')
    feeds = json.loads(page[page.index(">", start) + 1 : page.index("</script>", start)])["tenants"]
    assert 0 < len(feeds) <= 5
    assert len(feeds) <= settings.ENACT_MAX_LIVE_CONNECTIONS // 4
