"""The executions list as the server renders it: pager and totals, filters (kept across pages),
search inside input and metadata, the run tree, the rows the page's script asks for, and the
all-tenants list for the platform's staff."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from executions.models import Execution
from executions.services.submit import execution_submit
from tenants.models import Membership, Tenant
from tenants.services import membership_set

pytestmark = pytest.mark.django_db


def _login(tenant: Tenant | None, role: str = Membership.Role.OPERATOR, username: str = "dana", **extra: Any) -> Client:
    user = User.objects.create_user(username, password="a-long-password-1", **extra)
    if tenant is not None:
        membership_set(tenant=tenant, user=user, role=role)
    client = Client()
    client.force_login(user)
    return client


def _many(tenant: Tenant, n: int, start: datetime | None = None, **fields: Any) -> list[str]:
    """``n`` executions a minute apart, the newest last."""
    start = start or datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    rows = Execution.objects.bulk_create(
        [Execution(tenant=tenant, blueprint="demo.chain", input={"n": i}, **fields) for i in range(n)]
    )
    for i, row in enumerate(rows):
        Execution.objects.filter(pk=row.pk).update(created_at=start + timedelta(minutes=i))
    return [row.pk for row in rows]


def _ids(html: str) -> list[str]:
    return re.findall(r'<tr data-id="(exec_\w+)"', html)


def _range(html: str) -> str:
    """The pager's words: "1-50 of 175" (the page writes an en dash)."""
    found = re.search(r'<span class="range" id="range">(.*)\n', html)
    words = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", found[1] if found else "")).strip()
    return words.replace("\N{EN DASH}", "-")


def test_the_pager_says_where_it_is_and_keeps_the_filters(tenant_a: Tenant) -> None:
    ids = _many(tenant_a, 175)
    client = _login(tenant_a)
    first = client.get("/").content.decode()
    assert _range(first) == "1-50 of 175"
    assert _ids(first) == ids[::-1][:50]  # newest first
    assert "page 1 of 4" in first

    last = client.get("/", {"page": 4}).content.decode()
    assert _range(last) == "151-175 of 175"
    assert _ids(last) == ids[::-1][150:]
    assert 'rel="first"' in last
    assert 'rel="next"' not in last

    filtered = client.get("/", {"state": "queued", "q": "demo", "size": 25, "page": 2}).content.decode()
    assert _range(filtered) == "26-50 of 175"
    links = re.findall(r'<a href="\?([^"]+)" rel="(\w+)"', filtered)
    assert {rel for _, rel in links} == {"first", "prev", "next", "last"}
    for query, _ in links:
        assert "state=queued" in query
        assert "q=demo" in query
        assert "size=25" in query
    assert ("page=7", "last") in [(q.rsplit("&amp;", 1)[-1], rel) for q, rel in links]  # the last page of 25

    assert _range(client.get("/", {"size": 200}).content.decode()) == "1-175 of 175"
    assert _range(client.get("/", {"size": 7}).content.decode()) == "1-50 of 175"  # not a size offered


def test_filters_state_blueprint_and_created_range_read_in_the_readers_zone(tenant_a: Tenant) -> None:
    # 09:58, 09:59, ... 10:03 UTC: in Paris (UTC+1 in March) 10:58 to 11:03.
    ids = _many(tenant_a, 6, start=datetime(2026, 3, 1, 9, 58, tzinfo=UTC))
    Execution.objects.filter(pk=ids[0]).update(state="completed", blueprint="demo.pipeline")
    client = _login(tenant_a)
    paris = client.get("/", {"from": "2026-03-01T11:00", "to": "2026-03-01T11:02", "tz": "Europe/Paris"})
    assert sorted(_ids(paris.content.decode())) == sorted(ids[2:5])  # 11:00, 11:01, 11:02 (the whole minute)
    assert "Europe/Paris" in paris.content.decode()
    utc = client.get("/", {"from": "2026-03-01T10:00", "tz": "UTC"}).content.decode()
    assert sorted(_ids(utc)) == sorted(ids[2:])
    offset = client.get("/", {"to": "2026-03-01T10:59:00+01:00"}).content.decode()  # an ISO time with its zone
    assert sorted(_ids(offset)) == sorted(ids[:2])
    assert _ids(client.get("/", {"from": "nonsense"}).content.decode()) != []  # ignored, not an error

    assert _ids(client.get("/", {"state": "completed"}).content.decode()) == [ids[0]]
    assert _ids(client.get("/", {"blueprint": "demo.pipeline"}).content.decode()) == [ids[0]]
    assert len(_ids(client.get("/", {"state": "queued", "blueprint": "demo.chain"}).content.decode())) == 5


def test_search_finds_ids_keys_and_text_inside_input_and_metadata(tenant_a: Tenant, enqueued: list[str]) -> None:
    plain, _ = execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": "the Quarterly report"})
    keyed, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 2}, idempotency_key="order-4411")
    tagged, _ = execution_submit(
        tenant=tenant_a, blueprint="demo.chain", input={"n": 1}, metadata={"customer": "Zoë Café"}
    )
    client = _login(tenant_a)

    def found(q: str) -> set[str]:
        return set(_ids(client.get("/", {"q": q}).content.decode()))

    assert found("quarterly") == {plain.pk}  # input text, any case
    assert found("order-4411") == {keyed.pk}  # idempotency key
    assert found("café") == {tagged.pk}  # metadata text, beyond ASCII
    assert found("customer") == {tagged.pk}  # a key inside the metadata
    assert found(keyed.pk) == {keyed.pk}  # an id
    start = keyed.pk[:-4]  # the start of one
    assert found(start) == {e.pk for e in (plain, keyed, tagged) if e.pk.startswith(start)} >= {keyed.pk}
    assert found("pipeline") == {plain.pk}  # blueprint
    assert found("nowhere-to-be-found") == set()


def test_children_sit_under_their_parent(tenant_a: Tenant, enqueued: list[str]) -> None:
    parent, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    kids = [
        execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": f"item {i}"}, parent=parent)[0]
        for i in range(3)
    ]
    Execution.objects.filter(pk__in=[k.pk for k in kids]).update(origin="child")
    grandchild, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 9}, parent=kids[0])
    client = _login(tenant_a)
    page = client.get("/").content.decode()
    assert _ids(page) == [parent.pk]  # top level only
    assert "▸ 3 children" in page
    assert _range(page) == "1-1 of 1"

    children = client.get("/", {"partial": "rows", "children": parent.pk, "level": 1}).json()
    assert set(children["ids"]) == {k.pk for k in kids}
    assert children["total"] == 3
    assert 'data-level="1"' in children["html"]
    assert "child of" in children["html"]
    assert "▸ 1 child<" in children["html"]  # the grandchild, one level further down
    deeper = client.get("/", {"partial": "rows", "children": kids[0].pk, "level": 2}).json()
    assert deeper["ids"] == [grandchild.pk]

    assert set(_ids(client.get("/", {"parent": parent.pk}).content.decode())) == {k.pk for k in kids}
    assert grandchild.pk in _ids(client.get("/", {"q": "9"}).content.decode())  # a search reaches children


def test_rows_the_feed_named_are_given_only_when_they_match(tenant_a: Tenant, tenant_b: Tenant) -> None:
    mine = _many(tenant_a, 3)
    theirs = _many(tenant_b, 1)
    Execution.objects.filter(pk=mine[0]).update(state="running")
    client = _login(tenant_a)
    asked = ",".join([*mine, *theirs])
    running = client.get("/", {"partial": "rows", "ids": asked, "state": "running"}).json()
    assert running["ids"] == [mine[0]]
    assert running["total"] == 1
    every = client.get("/", {"partial": "rows", "ids": asked}).json()
    assert sorted(every["ids"]) == sorted(mine)  # never another tenant's
    assert every["total"] == 3


def test_columns_say_where_an_execution_came_from_and_what_it_waits_for(tenant_a: Tenant, enqueued: list[str]) -> None:
    from executions.services.derive import execution_rerun

    first, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    Execution.objects.filter(pk=first.pk).update(state="waiting", wait_reason="approval")
    rerun, _ = execution_rerun(tenant=tenant_a, execution_id=first.pk)
    html = _login(tenant_a).get("/").content.decode()
    row = html[html.index(f'<tr data-id="{first.pk}"') :]
    assert "waits for approval" in row[: row.index("</tr>")]
    assert "submitted" in row[: row.index("</tr>")]
    rerun_row = html[html.index(f'<tr data-id="{rerun.pk}"') :]
    assert f'rerun of <a href="/executions/{first.pk}/">' in rerun_row[: rerun_row.index("</tr>")]
    assert 'data-copy="' + first.pk + '"' in html  # its copy button


def test_operators_get_checkboxes_and_viewers_none(tenant_a: Tenant) -> None:
    _many(tenant_a, 2)
    operator = _login(tenant_a, Membership.Role.OPERATOR).get("/").content.decode()
    assert operator.count('name="pick"') == 2
    assert 'id="pick-all"' in operator
    assert 'id="bulk-cancel"' in operator
    viewer = _login(tenant_a, Membership.Role.VIEWER, "vic").get("/").content.decode()
    assert 'name="pick"' not in viewer
    assert 'id="bulk-cancel"' not in viewer


def test_staff_see_every_tenant_on_one_list(tenant_a: Tenant, tenant_b: Tenant) -> None:
    mine = _many(tenant_a, 2)
    theirs = _many(tenant_b, 1, start=datetime(2026, 3, 2, tzinfo=UTC))
    root = _login(None, username="root", is_staff=True, is_superuser=True)
    page = root.get("/operator/executions/")
    assert page.status_code == 200
    html = page.content.decode()
    assert set(_ids(html)) == {*mine, *theirs}
    assert "<th>Tenant</th>" in html
    assert 'data-tenant="globex"' in html
    assert html.count('name="pick"') == 3
    only_b = root.get("/operator/executions/", {"tenant": "globex"}).content.decode()
    assert _ids(only_b) == theirs
    assert root.get("/", {"tenant": "*", "state": "queued"})["Location"] == "/operator/executions/?state=queued"
    live = json.loads(re.search(r'<script id="list-page" type="application/json">(.*?)</script>', html, re.S)[1])
    assert set(live["tenants"]) == {"acme", "globex"}

    # Staff who belong to one tenant see that tenant only, and may select where they operate.
    staff = _login(tenant_a, Membership.Role.VIEWER, "sam", is_staff=True)
    html = staff.get("/operator/executions/").content.decode()
    assert set(_ids(html)) == set(mine)
    assert 'name="pick"' not in html  # a viewer there
    assert _ids(staff.get("/operator/executions/", {"tenant": "globex"}).content.decode()) == []
    assert staff.get("/operator/executions/", {"partial": "rows", "ids": theirs[0]}).json()["ids"] == []


def test_others_never_see_another_tenants_rows(tenant_a: Tenant, tenant_b: Tenant) -> None:
    _many(tenant_a, 1)
    theirs = _many(tenant_b, 1)
    client = _login(tenant_a, Membership.Role.ADMIN)
    assert client.get("/operator/executions/").status_code == 403
    assert client.get("/operator/executions/", {"partial": "rows", "ids": theirs[0]}).status_code == 403
    starred = client.get("/", {"tenant": "*"})
    assert starred.status_code == 200  # their own tenant's list
    assert theirs[0] not in starred.content.decode()
    assert client.get("/", {"partial": "rows", "ids": theirs[0]}).json()["ids"] == []
    assert _ids(client.get("/", {"q": theirs[0]}).content.decode()) == []
    assert "All tenants" not in starred.content.decode()


def test_a_whole_page_of_rows_is_looked_at_and_the_answer_says_which(tenant_a: Tenant) -> None:
    running = _many(tenant_a, 150, state="running")
    client = _login(tenant_a)
    asked = ",".join([*running, "not-an-id", running[0]])
    data = client.get("/", {"partial": "rows", "ids": asked, "state": "running", "size": 200}).json()
    assert sorted(data["ids"]) == sorted(running)  # none dropped: the cap is a whole page
    assert data["asked"] == running  # what was looked at, once each, the malformed left out
    assert data["total"] == 150


def test_rows_created_after_the_newest_shown_are_given_on_a_resync(tenant_a: Tenant) -> None:
    ids = _many(tenant_a, 5)
    newest_shown = Execution.objects.get(pk=ids[2]).created_at
    data = _login(tenant_a).get("/", {"partial": "rows", "ids": "", "newer": newest_shown.isoformat()}).json()
    assert sorted(data["ids"]) == sorted(ids[3:])
    assert data["asked"] == []


BAD_QUERIES = [
    {"to": "9999-12-31"},
    {"to": "9999-12-31T23:59"},
    {"to": "9999-12-31T23:59:59"},
    {"to": "9999-12-31T23:59:59.999999"},
    {"to": "9999-12-31", "partial": "rows"},
    {"to": "9999-12-31T23:59:59.999999", "partial": "rows", "ids": "x"},
    {"from": "0001-01-01T00:00", "tz": "Asia/Tokyo"},
    {"from": "0001-01-01T00:00", "tz": "Asia/Tokyo", "partial": "rows"},
    {"tz": "America"},
    {"tz": "x" * 300},
    {"tz": "../../etc/passwd"},
    {"partial": "rows", "children": "exec_00000000000000000000000000", "level": "²"},
    {"partial": "rows", "children": "exec_00000000000000000000000000", "level": "٣"},
    {"q": "a\x00b"},
    {"blueprint": "demo\x00"},
    {"parent": "exec_\x00"},
    {"partial": "rows", "ids": "exec_\x00,exec_x"},
    {"partial": "rows", "children": "exec_\x00"},
    {"partial": "rows", "newer": "9999-12-31T23:59:59\x00"},
    {"tenant": "acme\x00"},
]


@pytest.mark.parametrize("path", ["/", "/operator/executions/"])
@pytest.mark.parametrize("query", BAD_QUERIES, ids=lambda q: ",".join(f"{k}={v[:20]!r}" for k, v in q.items()))
def test_a_bad_query_gets_a_default_or_a_400_never_a_500(tenant_a: Tenant, path: str, query: dict[str, str]) -> None:
    ids = _many(tenant_a, 2)
    client = _login(tenant_a, username="root", is_staff=True, is_superuser=True)
    client.raise_request_exception = True  # a 500 fails the test with its error
    response = client.get(path, query)
    assert response.status_code in (200, 400), response.status_code
    if response.status_code == 200 and query.get("partial") != "rows" and set(query) & {"to", "from", "tz"}:
        assert set(_ids(response.content.decode())) == set(ids)  # no bound the database could not hold


def test_a_superuser_who_belongs_to_a_tenant_opens_another_tenants_rows(tenant_a: Tenant, tenant_b: Tenant) -> None:
    parent, _ = execution_submit(tenant=tenant_b, blueprint="demo.chain", input={"n": 1})
    child, _ = execution_submit(tenant=tenant_b, blueprint="demo.chain", input={"n": 2}, parent=parent)
    Execution.objects.filter(pk=child.pk).update(origin="child")
    root = _login(tenant_a, Membership.Role.VIEWER, "root", is_staff=True, is_superuser=True)
    found = root.get("/operator/executions/", {"q": child.pk}).content.decode()
    row = found[found.index(f'<tr data-id="{child.pk}"') :]
    row = row[: row.index("</tr>")]
    links = re.findall(r'href="(/executions/[^"]+)"', row)
    assert links == [f"/executions/{child.pk}/?tenant=globex", f"/executions/{parent.pk}/?tenant=globex"]
    for link in links:
        assert root.get(link).status_code == 200
    # A member who is not a superuser still cannot.
    member = _login(tenant_a, Membership.Role.ADMIN, "ann", is_staff=True)
    assert member.get(f"/executions/{parent.pk}/?tenant=globex").status_code == 404
