"""Schedules in the admin: checked as the API checks them, scoped to the user's tenants."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from executions.models import Schedule
from executions.services.schedules import schedule_create
from tenants.models import Tenant
from tenants.services import membership_set


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:{name}", args=[quote(arg) for arg in args])


def form(tenant: Tenant, **changes: Any) -> dict[str, Any]:
    return {
        "tenant": tenant.pk,
        "name": "nightly",
        "blueprint": "demo.slow",
        "blueprint_version": "",
        "input": '{"steps": 1, "seconds": 0}',
        "cron": "30 2 * * *",
        "timezone": "Europe/Paris",
        "interval_seconds": "",
        "overlap": "skip",
        **changes,
    }


def make(tenant: Tenant, name: str) -> Schedule:
    return schedule_create(
        tenant=tenant, name=name, blueprint="demo.slow", input={"steps": 1, "seconds": 0}, interval_seconds=60
    )


def test_added_in_the_admin_with_its_next_time(admin_client: Client, tenant_a: Tenant) -> None:
    response = admin_client.post(url("executions_schedule_add"), form(tenant_a))
    assert response.status_code == 302, response.content.decode()[:3000]
    schedule = Schedule.objects.get()
    assert (schedule.cron, schedule.timezone, schedule.input) == (
        "30 2 * * *",
        "Europe/Paris",
        {"steps": 1, "seconds": 0},
    )
    assert schedule.next_fire_at is not None
    page = admin_client.get(url("executions_schedule_change", schedule.pk)).content.decode()
    assert "Next times" in page
    assert admin_client.get(url("executions_schedule_changelist")).status_code == 200


def test_a_bad_cron_is_refused_on_its_field_and_nothing_saved(admin_client: Client, tenant_a: Tenant) -> None:
    response = admin_client.post(url("executions_schedule_add"), form(tenant_a, cron="61 * * * *"))
    assert response.status_code == 200
    assert "out of range" in response.context["adminform"].form.errors["cron"][0]
    response = admin_client.post(url("executions_schedule_add"), form(tenant_a, timezone="Nowhere/Land"))
    assert "not an IANA time zone" in response.context["adminform"].form.errors["timezone"][0]
    assert not Schedule.objects.exists()


def test_an_operator_sees_and_pauses_its_tenants_schedules_only(
    client: Client, django_user_model: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    user = django_user_model.objects.create_user(username="op", password="pw", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label__in=["tenants", "executions"]))
    membership_set(tenant=tenant_a, user=user, role="operator")
    client.force_login(user)
    mine, theirs = make(tenant_a, "mine"), make(tenant_b, "theirs")

    page = client.get(url("executions_schedule_changelist")).content.decode()
    assert "mine" in page
    assert "theirs" not in page
    assert client.get(url("executions_schedule_change", theirs.pk)).status_code == 302  # "does not exist"
    client.post(
        url("executions_schedule_changelist"),
        {"action": "pause", "_selected_action": [mine.pk, theirs.pk]},
        follow=True,
    )
    mine.refresh_from_db()
    theirs.refresh_from_db()
    assert (mine.paused, theirs.paused) == (True, False)
