"""The operators' admin: every page renders, writes go through the services, the raw API key is
shown once, controls act per execution, and staff see and change only their own tenants."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import AbstractBaseUser, Permission
from django.contrib.messages import get_messages
from django.db import connection
from django.forms.models import model_to_dict
from django.http import HttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from executions.kernel.ids import IdKind, new_id
from executions.models import Artifact, Execution, ExecutionEvent, Step
from tenants.models import ApiKey, Membership, Tenant, TenantLimits, hash_api_key
from tenants.services import (
    api_key_authenticate,
    api_key_create,
    membership_set,
    tenant_create,
    tenant_record_usage,
    tenant_set_status,
)

pytestmark = pytest.mark.django_db

RAW_KEY = re.compile(r"enact_[0-9a-f]{8}_[A-Za-z0-9_-]{43}")


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:{name}", args=[quote(arg) for arg in args])


def new_execution(tenant: Tenant, state: str = Execution.State.QUEUED, **fields: Any) -> Execution:
    return Execution.objects.create(tenant=tenant, blueprint="demo.chain", input={"n": 1}, state=state, **fields)


def message_texts(response: HttpResponse) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def act(client: Client, changelist: str, action: str, *pks: Any) -> HttpResponse:
    """Run a changelist action on the given rows, following the redirect to collect messages."""
    return client.post(url(changelist), {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True)


def staff_user(django_user_model: Any, client: Client, username: str, roles: dict[Tenant, str]) -> AbstractBaseUser:
    """A logged-in staff user with every model permission of the platform's apps, so whatever it
    is refused is refused by its memberships."""
    user = django_user_model.objects.create_user(username=username, password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label__in=["tenants", "executions"]))
    for tenant, role in roles.items():
        membership_set(tenant=tenant, user=user, role=role)
    client.force_login(user)
    return user


def execution_snapshot() -> tuple[list[tuple[Any, ...]], int]:
    rows = Execution.objects.values_list("pk", "state", "cancel_requested_at", "resume_requested")
    return sorted(rows), ExecutionEvent.objects.count()


# --- every page renders -----------------------------------------------------------------------


def test_every_changelist_change_and_add_page_renders_for_a_superuser(
    admin_client: Client, admin_user: AbstractBaseUser, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    membership = membership_set(tenant=tenant_a, user=admin_user, role="operator")
    key, _ = api_key_create(tenant=tenant_a, scope="write", name="ci")
    execution = new_execution(tenant_b)
    Step.objects.create(
        id=new_id(IdKind.STEP), execution=execution, position=0, name="double", step_type="task", state="completed"
    )
    Artifact.objects.create(
        id=new_id(IdKind.ARTIFACT),
        execution=execution,
        tenant=tenant_b,
        name="report.txt",
        artifact_type="file",
        content_type="text/plain",
        size=5,
        sha256="0" * 64,
        content=b"hello",
    )
    for seq, type_ in [(2, "data-step-started"), (1, "data-execution-started")]:
        ExecutionEvent.objects.create(
            id=new_id(IdKind.EVENT),
            execution=execution,
            tenant=tenant_b,
            seq=seq,
            type=type_,
            timestamp=timezone.now(),
            data={"seq": seq, "note": "<b>"},
        )

    pages = [
        url("tenants_tenant_changelist"),
        url("tenants_tenant_change", tenant_a.pk),
        url("tenants_tenant_add"),
        url("tenants_membership_changelist"),
        url("tenants_membership_change", membership.pk),
        url("tenants_membership_add"),
        url("tenants_apikey_changelist"),
        url("tenants_apikey_change", key.pk),
        url("tenants_apikey_add"),
        url("executions_execution_changelist"),
        url("executions_execution_change", execution.pk),
    ]
    assert [admin_client.get(page).status_code for page in pages] == [200] * len(pages)

    page = admin_client.get(url("executions_execution_change", execution.pk)).content.decode()
    # The event log is ordered by seq, its data compact and escaped; steps and artifacts are inlined.
    first = page.index("data-execution-started")
    assert first < page.index("data-step-started")
    assert "<code>{&quot;note&quot;:&quot;&lt;b&gt;&quot;,&quot;seq&quot;:1}</code>" in page
    assert "double" in page
    assert "report.txt" in page
    # Read-only: no save buttons, no add rows.
    assert 'name="_save"' not in page
    assert 'name="steps-0-name"' not in page
    assert 'name="artifacts-0-name"' not in page


def test_tenant_changelist_shows_live_usage(admin_client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    new_execution(tenant_a)
    new_execution(tenant_a)
    new_execution(tenant_a, state=Execution.State.RUNNING)
    new_execution(tenant_b, state=Execution.State.COMPLETED)
    tenant_record_usage(tenant_id=tenant_a.pk, tokens=1500, cost_usd=0.25)
    Tenant.objects.filter(pk=tenant_a.pk).update(storage_bytes=2048)

    page = admin_client.get(url("tenants_tenant_changelist")).content.decode()

    acme = page[page.index(">acme<") : page.index(">globex<")]
    assert '<td class="field-running_now">1</td>' in acme
    assert '<td class="field-queued">2</td>' in acme
    assert '<td class="field-tokens_today">1500</td>' in acme
    assert '<td class="field-cost_today">$0.2500</td>' in acme
    assert '<td class="field-storage">2.0\xa0KB</td>' in acme
    globex = page[page.index(">globex<") :]
    assert '<td class="field-running_now">0</td>' in globex
    assert '<td class="field-queued">0</td>' in globex
    assert '<td class="field-cost_today">$0.0000</td>' in globex


def test_tenant_changelist_queries_grow_by_a_few_per_tenant_only(admin_client: Client, tenant_a: Tenant) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert admin_client.get(url("tenants_tenant_changelist")).status_code == 200
        return len(captured)

    one = queries()
    for i in range(5):
        tenant_create(slug=f"extra-{i}")
    six = queries()
    # One usage selector call per row (three queries), not one per usage column.
    assert six - one <= 5 * 3


def test_tenant_change_page_shows_the_usage_panel_and_every_limit(admin_client: Client, tenant_a: Tenant) -> None:
    tenant_record_usage(tenant_id=tenant_a.pk, tokens=42, cost_usd=0.5)
    page = admin_client.get(url("tenants_tenant_change", tenant_a.pk)).content.decode()
    assert "<tr><th>Tokens today</th><td>42</td></tr>" in page
    assert "<tr><th>Cost today</th><td>$0.5000</td></tr>" in page
    limit_fields = [f.name for f in TenantLimits._meta.concrete_fields if f.name != "tenant"]
    assert [name for name in limit_fields if f'name="limits-0-{name}"' not in page] == []


# --- tenants ----------------------------------------------------------------------------------


def test_a_tenant_added_in_the_admin_gets_default_limits(admin_client: Client) -> None:
    response = admin_client.post(url("tenants_tenant_add"), {"slug": "initech", "name": ""})
    assert response.status_code == 302
    tenant = Tenant.objects.get(slug="initech")
    assert (tenant.name, tenant.status) == ("initech", "active")
    limits = TenantLimits.objects.get(tenant=tenant)
    assert (limits.max_steps, limits.max_concurrent_executions, limits.cost_per_day_usd) == (1000, 5, Decimal("100"))


@pytest.mark.parametrize("slug", ["Initech", "init_tech", "-initech"])
def test_a_tenant_with_a_bad_slug_is_refused_and_nothing_is_created(admin_client: Client, slug: str) -> None:
    response = admin_client.post(url("tenants_tenant_add"), {"slug": slug, "name": "Initech"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["slug"]
    assert Tenant.objects.count() == 0
    assert TenantLimits.objects.count() == 0


def limits_form(tenant: Tenant, name: str, **changes: Any) -> dict[str, Any]:
    """The tenant change form as posted: its name and the limits inline."""
    limits = model_to_dict(TenantLimits.objects.get(tenant=tenant))
    limits.update(changes)
    data: dict[str, Any] = {
        "name": name,
        "limits-TOTAL_FORMS": "1",
        "limits-INITIAL_FORMS": "1",
        "limits-MIN_NUM_FORMS": "0",
        "limits-MAX_NUM_FORMS": "1",
    }
    for field, value in limits.items():
        if value is False:
            continue  # an unchecked box is not posted
        if isinstance(value, (list, dict)):  # JSON fields (the tool policy's lists) are posted as JSON
            value = json.dumps(value)
        data[f"limits-0-{field}"] = "" if value is None else str(value)
    return data


def test_tenant_name_and_limits_are_edited_through_the_services(admin_client: Client, tenant_a: Tenant) -> None:
    Tenant.objects.filter(pk=tenant_a.pk).update(storage_bytes=777)  # moved meanwhile by a worker
    data = limits_form(tenant_a, "Acme Corp", max_steps=50, cost_per_day_usd="", pii_masking=True)
    response = admin_client.post(url("tenants_tenant_change", tenant_a.pk), data)
    assert response.status_code == 302
    tenant = Tenant.objects.get(pk=tenant_a.pk)
    assert (tenant.name, tenant.storage_bytes) == ("Acme Corp", 777)
    limits = TenantLimits.objects.get(tenant=tenant_a)
    assert (limits.max_steps, limits.cost_per_day_usd, limits.pii_masking) == (50, None, True)


def test_invalid_limits_are_refused_and_nothing_changes(admin_client: Client, tenant_a: Tenant) -> None:
    before = model_to_dict(TenantLimits.objects.get(tenant=tenant_a))
    data = limits_form(tenant_a, "Renamed", max_steps=50, warning_threshold=2.0)
    response = admin_client.post(url("tenants_tenant_change", tenant_a.pk), data)
    assert response.status_code == 200
    assert model_to_dict(TenantLimits.objects.get(tenant=tenant_a)) == before
    assert Tenant.objects.get(pk=tenant_a.pk).name == "Acme"


def test_suspend_and_activate_actions(admin_client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    response = act(admin_client, "tenants_tenant_changelist", "suspend", tenant_a.pk, tenant_b.pk)
    assert message_texts(response) == ["Suspended: acme, globex."]
    assert sorted(Tenant.objects.values_list("slug", "status")) == [("acme", "suspended"), ("globex", "suspended")]

    response = act(admin_client, "tenants_tenant_changelist", "activate", tenant_b.pk)
    assert message_texts(response) == ["Activated: globex."]
    assert sorted(Tenant.objects.values_list("slug", "status")) == [("acme", "suspended"), ("globex", "active")]


def test_tenants_cannot_be_deleted_in_the_admin(admin_client: Client, tenant_a: Tenant) -> None:
    response = admin_client.post(url("tenants_tenant_delete", tenant_a.pk), {"post": "yes"})
    assert response.status_code == 403
    assert Tenant.objects.filter(pk=tenant_a.pk).exists()


# --- memberships ------------------------------------------------------------------------------


def test_memberships_are_set_through_the_service_and_filtered(
    admin_client: Client, django_user_model: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    ann = django_user_model.objects.create_user(username="ann", password="pw")
    bob = django_user_model.objects.create_user(username="bob", password="pw")
    membership_set(tenant=tenant_b, user=bob, role="operator")

    response = admin_client.post(
        url("tenants_membership_add"), {"user": ann.pk, "tenant": tenant_a.pk, "role": "viewer"}
    )
    assert response.status_code == 302
    membership = Membership.objects.get(user=ann)
    assert (membership.tenant_id, membership.role) == (tenant_a.pk, "viewer")

    response = admin_client.post(url("tenants_membership_change", membership.pk), {"role": "admin"})
    assert response.status_code == 302
    assert list(Membership.objects.filter(user=ann).values_list("tenant_id", "role")) == [(tenant_a.pk, "admin")]

    listed = admin_client.get(url("tenants_membership_changelist"), {"role": "operator"})
    assert [(m.user.username, m.tenant.slug, m.role) for m in listed.context["cl"].result_list] == [
        ("bob", "globex", "operator")
    ]
    listed = admin_client.get(url("tenants_membership_changelist"), {"tenant__id__exact": tenant_a.pk})
    assert [(m.user.username, m.tenant.slug, m.role) for m in listed.context["cl"].result_list] == [
        ("ann", "acme", "admin")
    ]


# --- API keys ---------------------------------------------------------------------------------


def test_creating_an_api_key_shows_the_raw_key_once_and_stores_only_its_hash(
    admin_client: Client, tenant_a: Tenant
) -> None:
    response = admin_client.post(url("tenants_apikey_add"), {"tenant": tenant_a.pk, "name": "ci", "scope": "write"})
    assert response.status_code == 200
    page = response.content.decode()
    shown = RAW_KEY.findall(page)
    assert len(set(shown)) == 1
    raw = shown[0]

    key = ApiKey.objects.get()
    assert (key.tenant_id, key.name, key.scope, key.revoked_at) == (tenant_a.pk, "ci", "write", None)
    assert key.key_hash == hash_api_key(raw)
    assert raw.startswith(key.prefix + "_")
    assert api_key_authenticate(raw=raw) == key
    # Never stored, never carried over: not in a message, the session, a cookie, or a later page.
    stored = [str(v) for v in ApiKey.objects.values_list(*[f.attname for f in ApiKey._meta.concrete_fields])[0]]
    assert [v for v in stored if raw in v] == []
    assert raw not in str(dict(admin_client.session.items()))
    assert raw not in str(response.cookies)
    for later in (url("tenants_apikey_changelist"), url("tenants_apikey_change", key.pk)):
        assert raw not in admin_client.get(later).content.decode()
    assert "no-store" in response["Cache-Control"]


def test_after_creation_only_an_api_keys_name_changes(admin_client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    key, raw = api_key_create(tenant=tenant_a, scope="read", name="old")
    response = admin_client.post(
        url("tenants_apikey_change", key.pk),
        {"name": "new", "scope": "write", "tenant": tenant_b.pk, "key_hash": "x" * 64, "prefix": "enact_hacked"},
    )
    assert response.status_code == 302
    after = ApiKey.objects.get(pk=key.pk)
    assert (after.name, after.scope, after.tenant_id, after.prefix, after.key_hash) == (
        "new",
        "read",
        tenant_a.pk,
        key.prefix,
        hash_api_key(raw),
    )


def test_revoke_action(admin_client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    key_a, raw_a = api_key_create(tenant=tenant_a)
    key_b, raw_b = api_key_create(tenant=tenant_b)

    response = act(admin_client, "tenants_apikey_changelist", "revoke", key_a.pk)
    assert message_texts(response) == [f"Revoked: {key_a.prefix}."]
    assert api_key_authenticate(raw=raw_a) is None
    assert api_key_authenticate(raw=raw_b) == key_b
    revoked_at = ApiKey.objects.get(pk=key_a.pk).revoked_at
    assert revoked_at is not None

    response = act(admin_client, "tenants_apikey_changelist", "revoke", key_a.pk)
    assert message_texts(response) == [f"Already revoked: {key_a.prefix}."]
    assert ApiKey.objects.get(pk=key_a.pk).revoked_at == revoked_at


# --- execution controls -----------------------------------------------------------------------


def test_cancel_action_cancels_a_queued_execution(
    admin_client: Client,
    admin_user: AbstractBaseUser,
    tenant_a: Tenant,
    enqueued: list[str],
    django_capture_on_commit_callbacks: Any,
) -> None:
    execution = new_execution(tenant_a)
    done = new_execution(tenant_a, state=Execution.State.COMPLETED)
    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, "executions_execution_changelist", "cancel", execution.pk, done.pk)
    assert sorted(message_texts(response)) == sorted([f"Cancelled: {execution.pk}.", f"Already completed: {done.pk}."])
    after = Execution.objects.get(pk=execution.pk)
    assert (after.state, after.cancel_reason) == ("cancelled", f"cancelled by {admin_user.get_username()}")
    assert Execution.objects.get(pk=done.pk).state == "completed"
    assert list(ExecutionEvent.objects.filter(execution=execution).values_list("seq", "type")) == [
        (1, "data-execution-cancelled")
    ]


def test_pause_and_resume_actions_report_each_execution(
    admin_client: Client, tenant_a: Tenant, enqueued: list[str], django_capture_on_commit_callbacks: Any
) -> None:
    queued = new_execution(tenant_a)
    paused = new_execution(tenant_a, state=Execution.State.PAUSED)
    before = execution_snapshot()

    response = act(admin_client, "executions_execution_changelist", "pause", queued.pk)
    assert message_texts(response) == [f"{queued.pk}: cannot pause an execution that is queued"]
    assert execution_snapshot() == before

    with django_capture_on_commit_callbacks(execute=True):
        response = act(admin_client, "executions_execution_changelist", "resume", paused.pk, queued.pk)
    assert sorted(message_texts(response)) == sorted(
        [f"Resume requested: {paused.pk}.", f"{queued.pk}: cannot resume an execution that is queued"]
    )
    assert Execution.objects.get(pk=paused.pk).resume_requested is True
    assert Execution.objects.get(pk=queued.pk).resume_requested is False
    assert enqueued == [paused.pk]


def test_change_page_buttons_post_to_the_services(admin_client: Client, tenant_a: Tenant, enqueued: list[str]) -> None:
    execution = new_execution(tenant_a)
    change = url("executions_execution_change", execution.pk)
    cancel = url("executions_execution_cancel", execution.pk)
    page = admin_client.get(change).content.decode()
    assert f'action="{cancel}"' in page
    assert url("executions_execution_pause", execution.pk) not in page  # only what applies is offered

    assert admin_client.get(cancel).status_code == 405
    assert Execution.objects.get(pk=execution.pk).state == "queued"

    response = admin_client.post(cancel)
    assert (response.status_code, response["Location"]) == (302, change)
    assert message_texts(response) == [f"Cancelled: {execution.pk}."]
    assert Execution.objects.get(pk=execution.pk).state == "cancelled"
    assert f'action="{cancel}"' not in admin_client.get(change).content.decode()

    response = admin_client.post(url("executions_execution_pause", execution.pk))
    assert message_texts(response) == [f"{execution.pk}: cannot pause an execution that is cancelled"]


def test_change_page_buttons_need_the_csrf_token(admin_user: AbstractBaseUser, tenant_a: Tenant) -> None:
    execution = new_execution(tenant_a)
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post(url("executions_execution_cancel", execution.pk)).status_code == 403
    assert Execution.objects.get(pk=execution.pk).state == "queued"


def test_executions_changelist_filters_and_search(admin_client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    a = new_execution(tenant_a)
    b = new_execution(tenant_b, state=Execution.State.FAILED)
    changelist = url("executions_execution_changelist")

    def listed(**params: Any) -> list[str]:
        return [e.pk for e in admin_client.get(changelist, params).context["cl"].result_list]

    assert sorted(listed()) == sorted([a.pk, b.pk])
    assert listed(tenant__id__exact=tenant_b.pk) == [b.pk]
    assert listed(state__exact="queued") == [a.pk]
    assert sorted(listed(blueprint="demo.chain")) == sorted([a.pk, b.pk])
    assert listed(q=b.pk) == [b.pk]
    # Ids search by prefix: the part both ids share finds both.
    shared = a.pk[: next(i for i, (x, y) in enumerate(zip(a.pk, b.pk, strict=True)) if x != y)]
    assert sorted(listed(q=shared)) == sorted([a.pk, b.pk])
    assert listed(q="demo.chai") == listed()
    assert listed(q="exec_nothing") == []
    today = timezone.now()
    assert sorted(listed(created_at__year=today.year, created_at__month=today.month)) == sorted([a.pk, b.pk])


# --- tenancy ----------------------------------------------------------------------------------


def test_a_viewer_sees_its_tenant_only_and_cannot_control_anything(
    client: Client, django_user_model: Any, tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]
) -> None:
    staff_user(django_user_model, client, "vera", {tenant_a: "viewer"})
    mine = new_execution(tenant_a)
    theirs = new_execution(tenant_b)
    key_a, raw_a = api_key_create(tenant=tenant_a)
    key_b, _ = api_key_create(tenant=tenant_b)
    before = execution_snapshot()

    listed = client.get(url("executions_execution_changelist"))
    assert [e.pk for e in listed.context["cl"].result_list] == [mine.pk]
    assert theirs.pk not in listed.content.decode()
    assert "globex" not in listed.content.decode()  # not even as a filter choice
    assert [t.slug for t in client.get(url("tenants_tenant_changelist")).context["cl"].result_list] == ["acme"]
    assert [k.pk for k in client.get(url("tenants_apikey_changelist")).context["cl"].result_list] == [key_a.pk]
    memberships = client.get(url("tenants_membership_changelist")).context["cl"].result_list
    assert [(m.user.username, m.tenant.slug, m.role) for m in memberships] == [("vera", "acme", "viewer")]

    page = client.get(url("executions_execution_change", mine.pk))
    assert page.status_code == 200
    assert page.context["execution_controls"] == []
    followed = client.get(url("executions_execution_change", theirs.pk), follow=True)
    assert followed.redirect_chain == [(url("index"), 302)]
    assert "globex" not in followed.content.decode()
    # Told the same as for an id that was never used.
    never_used = new_id(IdKind.EXECUTION)
    unknown = client.get(url("executions_execution_change", never_used), follow=True)
    assert [m.replace(theirs.pk, "?") for m in message_texts(followed)] == [
        m.replace(never_used, "?") for m in message_texts(unknown)
    ]
    assert client.get(url("tenants_tenant_change", tenant_b.pk)).status_code == 302
    assert client.get(url("tenants_apikey_change", key_b.pk)).status_code == 302

    # No control, by action, by button, or on a tenant or key.
    assert listed.context["action_form"] is None
    act(client, "executions_execution_changelist", "cancel", mine.pk, theirs.pk)
    assert client.post(url("executions_execution_cancel", mine.pk)).status_code == 403
    assert client.post(url("executions_execution_cancel", theirs.pk)).status_code == 404
    act(client, "tenants_tenant_changelist", "suspend", tenant_a.pk)
    act(client, "tenants_apikey_changelist", "revoke", key_a.pk)
    assert execution_snapshot() == before
    assert sorted(Tenant.objects.values_list("slug", "status")) == [("acme", "active"), ("globex", "active")]
    assert api_key_authenticate(raw=raw_a) == key_a

    # Nor a write through a form.
    assert (
        client.post(url("tenants_apikey_add"), {"tenant": tenant_a.pk, "name": "x", "scope": "write"}).status_code
        == 403
    )
    assert (
        client.post(url("tenants_tenant_change", tenant_a.pk), limits_form(tenant_a, "Mine", max_steps=1)).status_code
        == 403
    )
    assert ApiKey.objects.count() == 2
    assert (Tenant.objects.get(pk=tenant_a.pk).name, TenantLimits.objects.get(tenant=tenant_a).max_steps) == (
        "Acme",
        1000,
    )


def test_an_operator_controls_its_tenant_only(
    client: Client, django_user_model: Any, tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]
) -> None:
    staff_user(django_user_model, client, "otto", {tenant_a: "operator", tenant_b: "viewer"})
    mine = new_execution(tenant_a)
    theirs = new_execution(tenant_b)

    page = client.get(url("executions_execution_change", mine.pk))
    assert [c["action"] for c in page.context["execution_controls"]] == ["cancel"]
    assert client.get(url("executions_execution_change", theirs.pk)).context["execution_controls"] == []

    response = act(client, "executions_execution_changelist", "cancel", mine.pk, theirs.pk)
    assert sorted(message_texts(response)) == sorted(
        [f"Cancelled: {mine.pk}.", f"{theirs.pk}: your role in this tenant does not allow it"]
    )
    assert Execution.objects.get(pk=mine.pk).state == "cancelled"
    assert Execution.objects.get(pk=theirs.pk).state == "queued"
    assert ExecutionEvent.objects.filter(execution=theirs).count() == 0
    assert client.post(url("executions_execution_cancel", theirs.pk)).status_code == 403
    assert Execution.objects.get(pk=theirs.pk).state == "queued"

    response = act(client, "tenants_tenant_changelist", "suspend", tenant_a.pk, tenant_b.pk)
    assert sorted(message_texts(response)) == ["Suspended: acme.", "globex: your role in this tenant does not allow it"]
    assert sorted(Tenant.objects.values_list("slug", "status")) == [("acme", "suspended"), ("globex", "active")]


def test_an_operator_creates_keys_only_for_its_tenant(
    client: Client, django_user_model: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    staff_user(django_user_model, client, "otto", {tenant_a: "operator", tenant_b: "viewer"})
    form = client.get(url("tenants_apikey_add")).context["adminform"].form
    assert [t.slug for t in form.fields["tenant"].queryset] == ["acme"]

    response = client.post(url("tenants_apikey_add"), {"tenant": tenant_b.pk, "name": "x", "scope": "write"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["tenant"]
    assert ApiKey.objects.count() == 0

    response = client.post(url("tenants_apikey_add"), {"tenant": tenant_a.pk, "name": "x", "scope": "write"})
    assert response.status_code == 200
    assert ApiKey.objects.get().tenant_id == tenant_a.pk


def test_an_operator_without_the_limits_permission_renames_its_tenant_but_cannot_touch_limits(
    client: Client, django_user_model: Any, tenant_a: Tenant
) -> None:
    otto = staff_user(django_user_model, client, "otto", {tenant_a: "operator"})
    otto.user_permissions.remove(Permission.objects.get(codename="change_tenantlimits"))
    response = client.post(url("tenants_tenant_change", tenant_a.pk), limits_form(tenant_a, "Acme Two", max_steps=1))
    assert response.status_code == 302
    assert Tenant.objects.get(pk=tenant_a.pk).name == "Acme Two"
    assert TenantLimits.objects.get(tenant=tenant_a).max_steps == 1000


def test_an_operator_edits_its_tenants_limits(client: Client, django_user_model: Any, tenant_a: Tenant) -> None:
    staff_user(django_user_model, client, "otto", {tenant_a: "operator"})
    response = client.post(url("tenants_tenant_change", tenant_a.pk), limits_form(tenant_a, "Acme", max_steps=7))
    assert response.status_code == 302
    assert TenantLimits.objects.get(tenant=tenant_a).max_steps == 7


def test_only_a_tenant_admin_manages_memberships(
    client: Client, django_user_model: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    otto = staff_user(django_user_model, client, "otto", {tenant_a: "operator", tenant_b: "admin"})
    own = Membership.objects.get(user=otto, tenant=tenant_a)

    # An operator cannot promote itself; an admin can change roles in its tenant.
    assert client.post(url("tenants_membership_change", own.pk), {"role": "admin"}).status_code == 403
    assert Membership.objects.get(pk=own.pk).role == "operator"
    form = client.get(url("tenants_membership_add")).context["adminform"].form
    assert [t.slug for t in form.fields["tenant"].queryset] == ["globex"]
    response = client.post(url("tenants_membership_add"), {"user": otto.pk, "tenant": tenant_a.pk, "role": "admin"})
    assert response.status_code == 200
    assert Membership.objects.get(pk=own.pk).role == "operator"


def test_staff_without_memberships_see_empty_lists(
    client: Client, django_user_model: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    staff_user(django_user_model, client, "nina", {})
    new_execution(tenant_a)
    api_key_create(tenant=tenant_b)
    tenant_set_status(tenant=tenant_b, status="suspended")
    for name in (
        "tenants_tenant_changelist",
        "tenants_membership_changelist",
        "tenants_apikey_changelist",
        "executions_execution_changelist",
    ):
        response = client.get(url(name))
        assert (name, response.status_code, list(response.context["cl"].result_list)) == (name, 200, [])
    assert client.get(url("tenants_apikey_add")).status_code == 403
