"""The dashboard's pages as the server renders them (the browser tests drive them live)."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from executions.services.submit import execution_submit
from tenants.models import Membership, Tenant
from tenants.services import membership_set

pytestmark = pytest.mark.django_db


def _login(tenant: Tenant, role: str, username: str = "dana") -> Client:
    user = User.objects.create_user(username, password="a-long-password-1")
    membership_set(tenant=tenant, user=user, role=role)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def runs(tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]) -> dict[str, str]:
    mine, _ = execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": "hi there"})
    theirs, _ = execution_submit(tenant=tenant_b, blueprint="demo.chain", input={"n": 1})
    return {"mine": mine.pk, "theirs": theirs.pk}


def test_pages_need_a_login(client: Client) -> None:
    for path in ("/", "/usage/", "/executions/exec_x/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")
    assert client.get("/login/").status_code == 200


def test_the_list_shows_the_tenants_executions_and_the_start_form(tenant_a: Tenant, runs: dict[str, str]) -> None:
    page = _login(tenant_a, Membership.Role.OPERATOR).get("/")
    assert page.status_code == 200
    html = page.content.decode()
    assert runs["mine"] in html
    assert runs["theirs"] not in html
    assert 'id="start-form"' in html
    assert '"name": "demo.pipeline"' in html  # the blueprints the form offers, with their schemas
    filtered = _login(tenant_a, Membership.Role.VIEWER, "vic").get("/", {"state": "cancelled"}).content.decode()
    assert runs["mine"] not in filtered


def test_a_viewer_gets_no_controls(tenant_a: Tenant, runs: dict[str, str]) -> None:
    viewer = _login(tenant_a, Membership.Role.VIEWER)
    assert 'id="start-form"' not in viewer.get("/").content.decode()
    detail = viewer.get(f"/executions/{runs['mine']}/").content.decode()
    assert 'data-control="cancel"' not in detail
    assert 'id="guidance"' not in detail
    operator = _login(tenant_a, Membership.Role.OPERATOR, "olga")
    assert 'data-control="cancel"' in operator.get(f"/executions/{runs['mine']}/").content.decode()


def test_another_tenants_execution_is_not_found(tenant_a: Tenant, runs: dict[str, str]) -> None:
    client = _login(tenant_a, Membership.Role.ADMIN)
    assert client.get(f"/executions/{runs['theirs']}/").status_code == 404
    assert client.get("/executions/exec_nope/").status_code == 404


def test_the_detail_page_carries_the_graph_and_limits(tenant_a: Tenant, runs: dict[str, str]) -> None:
    response = _login(tenant_a, Membership.Role.OPERATOR).get(f"/executions/{runs['mine']}/")
    page: dict[str, Any] = response.context["page"]
    assert page["execution"]["id"] == runs["mine"]
    assert page["graph"]["entry"]
    assert {n["name"] for n in page["graph"]["nodes"]} >= {page["graph"]["entry"]}
    assert page["limits"]["steps"] == 1000
    assert page["can_operate"] is True
    assert page["tenant"] == "acme"


def test_the_usage_page_shows_limits_and_executions_per_hour(tenant_a: Tenant, runs: dict[str, str]) -> None:
    response = _login(tenant_a, Membership.Role.VIEWER).get("/usage/")
    assert response.status_code == 200
    bars = {bar["label"]: bar for bar in response.context["bars"]}
    assert bars["Executions today"]["used"] == 1
    assert bars["Running now"]["limit"] == 5
    per_hour = response.context["per_hour"]
    assert len(per_hour) == 24
    assert per_hour[-1]["count"] == 1
    assert sum(h["count"] for h in per_hour) == 1


def test_a_member_of_two_tenants_switches_between_them(
    tenant_a: Tenant, tenant_b: Tenant, runs: dict[str, str]
) -> None:
    client = _login(tenant_a, Membership.Role.VIEWER)
    membership_set(tenant=tenant_b, user=User.objects.get(username="dana"), role="viewer")
    assert runs["theirs"] in client.get("/", {"tenant": "globex"}).content.decode()
    assert runs["theirs"] in client.get("/").content.decode()  # remembered
    assert runs["mine"] in client.get("/", {"tenant": "acme"}).content.decode()


def test_a_user_without_a_tenant_is_told_so(db: None) -> None:
    client = Client()
    client.force_login(User.objects.create_user("lonely"))
    response = client.get("/")
    assert response.status_code == 403
    assert b"No tenant yet" in response.content


def test_the_schedules_page_shows_next_firings_and_an_operator_pauses_and_resumes(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    from executions.models import Schedule
    from executions.services.schedules import schedule_create

    nightly = schedule_create(
        tenant=tenant_a,
        name="nightly",
        blueprint="demo.chain",
        input={"n": 1},
        cron="30 2 * * *",
        timezone="Europe/Paris",
    )
    theirs = schedule_create(
        tenant=tenant_b, name="theirs", blueprint="demo.chain", input={"n": 1}, interval_seconds=60
    )
    operator = _login(tenant_a, Membership.Role.OPERATOR)

    page = operator.get("/schedules/").content.decode()
    assert "nightly" in page
    assert "30 2 * * *" in page
    assert "Europe/Paris" in page
    assert page.count("<time") >= 3  # its next firings
    assert f"/schedules/{nightly.pk}/pause/" in page  # its control
    assert "theirs" not in page  # another tenant's schedule is not shown

    assert operator.post(f"/schedules/{nightly.pk}/pause/").status_code == 302
    assert Schedule.objects.get(pk=nightly.pk).paused
    assert "paused" in operator.get("/schedules/").content.decode()
    assert operator.post(f"/schedules/{nightly.pk}/resume/").status_code == 302
    assert not Schedule.objects.get(pk=nightly.pk).paused

    assert operator.post(f"/schedules/{theirs.pk}/pause/").status_code == 404  # not this tenant's
    assert operator.post(f"/schedules/{nightly.pk}/explode/").status_code == 404
    assert operator.get(f"/schedules/{nightly.pk}/pause/").status_code == 405  # a change is a POST
    assert not Schedule.objects.get(pk=theirs.pk).paused


def test_a_viewer_sees_schedules_but_cannot_pause_them(tenant_a: Tenant) -> None:
    from executions.models import Schedule
    from executions.services.schedules import schedule_create

    schedule = schedule_create(
        tenant=tenant_a, name="often", blueprint="demo.chain", input={"n": 1}, interval_seconds=60
    )
    viewer = _login(tenant_a, Membership.Role.VIEWER, username="vic")
    page = viewer.get("/schedules/").content.decode()
    assert "often" in page
    assert "every 60 s" in page
    assert "/pause/" not in page  # no control
    assert viewer.post(f"/schedules/{schedule.pk}/pause/").status_code == 403
    assert not Schedule.objects.get(pk=schedule.pk).paused
