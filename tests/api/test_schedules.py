"""/api/v1/schedules: create, list (cursor pages), get, patch, delete, pause, resume; bad input
answers 400 naming the field, another tenant's schedule 404, and a refusal changes nothing."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from executions.models import Schedule
from tests.api.conftest import Api

NIGHTLY = {
    "name": "nightly",
    "blueprint": "demo.slow",
    "input": {"steps": 1, "seconds": 0},
    "cron": "30 2 * * *",
    "timezone": "Europe/Paris",
}


def patch(api: Api, path: str, body: Any) -> Any:
    return api.client.patch(
        f"/api/v1/{path}", json.dumps(body), content_type="application/json", headers=api._headers(None)
    )


def test_create_answers_201_with_the_next_five_times(api_a: Api) -> None:
    response = api_a.post("schedules", NIGHTLY)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["id"].startswith("sched_")
    assert {k: body[k] for k in NIGHTLY} == NIGHTLY
    assert (body["interval_seconds"], body["overlap"], body["paused"], body["version"]) == (None, "skip", False, None)
    runs = [datetime.fromisoformat(t) for t in body["next_runs"]]
    assert len(runs) == 5
    assert runs == sorted(runs)
    # 02:30 in Paris: 00:30 or 01:30 UTC by the season, and on the day of the spring gap 01:30 too.
    assert {(t.hour, t.minute) for t in runs} <= {(0, 30), (1, 30)}
    assert api_a.get(f"schedules/{body['id']}").json() == body


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"cron": "61 * * * *"}, "cron", "[61 * * * *] is not acceptable, out of range"),
        ({"cron": "0 9 * *"}, "cron", "Exactly 5, 6 or 7 columns"),
        ({"timezone": "Mars/Olympus_Mons"}, "timezone", "not an IANA time zone"),
        ({"interval_seconds": 60}, "cron", "either cron or interval_seconds"),
        ({"overlap": "later"}, "overlap", "not a valid choice"),
        ({"paused": "yes"}, "paused", ""),
        ({"every": 60}, "every", "unknown field"),
        ({"input": {"steps": 0, "seconds": 0}}, "", "steps"),
        ({"blueprint": "demo.nothing"}, "", "unknown blueprint"),
    ],
)
def test_bad_input_answers_400_naming_the_field_and_creates_nothing(
    api_a: Api, change: dict[str, Any], field: str, words: str
) -> None:
    response = api_a.post("schedules", {**NIGHTLY, **change})
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    if field:  # a field's shape is refused by the serializer, its meaning by the service
        assert field in (error["details"].get("fields") or {error["details"].get("field"): 0}), error
        assert error["message"].startswith(f"{field}:")
    assert words in json.dumps(error)
    assert not Schedule.objects.exists()


def test_neither_cron_nor_interval_is_refused(api_a: Api) -> None:
    body = {k: v for k, v in NIGHTLY.items() if k != "cron"}
    response = api_a.post("schedules", body)
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "cron"


def test_a_name_in_use_answers_409(api_a: Api) -> None:
    assert api_a.post("schedules", NIGHTLY).status_code == 201
    response = api_a.post("schedules", {**NIGHTLY, "cron": "0 * * * *"})
    assert response.status_code == 409
    assert Schedule.objects.get().cron == "30 2 * * *"


def test_a_read_key_cannot_create(reader_a: Api) -> None:
    assert reader_a.post("schedules", NIGHTLY).status_code == 403
    assert not Schedule.objects.exists()


def test_list_pages_with_a_cursor(api_a: Api) -> None:
    for n in range(3):
        assert api_a.post("schedules", {**NIGHTLY, "name": f"s{n}"}).status_code == 201
    first = api_a.get("schedules", {"limit": 2}).json()
    assert [s["name"] for s in first["results"]] == ["s2", "s1"]
    second = api_a.client.get(first["next"], headers=api_a._headers(None)).json()
    assert [s["name"] for s in second["results"]] == ["s0"]
    assert second["next"] is None
    assert api_a.get("schedules", {"limit": 0}).status_code == 400
    assert api_a.get("schedules", {"cursor": "nonsense"}).status_code == 400


def test_patch_replaces_cron_with_an_interval_and_shows_new_times(api_a: Api) -> None:
    created = api_a.post("schedules", NIGHTLY).json()
    response = patch(api_a, f"schedules/{created['id']}", {"interval_seconds": 3600, "overlap": "queue"})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["cron"], body["interval_seconds"], body["overlap"]) == ("", 3600, "queue")
    assert all(datetime.fromisoformat(t).minute == 0 for t in body["next_runs"])
    # A bad change is refused whole: the unknown field stops the valid one with it.
    response = patch(api_a, f"schedules/{created['id']}", {"overlap": "skip", "cron_expression": "x"})
    assert response.status_code == 400
    assert Schedule.objects.get().overlap == "queue"
    response = patch(api_a, f"schedules/{created['id']}", {"cron": "*/0 * * * *"})
    assert response.status_code == 400
    assert "step '0'" in response.json()["error"]["details"]["problem"]
    assert Schedule.objects.get().interval_seconds == 3600


def test_pause_and_resume(api_a: Api) -> None:
    created = api_a.post("schedules", NIGHTLY).json()
    paused = api_a.post(f"schedules/{created['id']}/pause").json()
    assert (paused["paused"], paused["next_runs"]) == (True, [])
    resumed = api_a.post(f"schedules/{created['id']}/resume").json()
    assert (resumed["paused"], len(resumed["next_runs"])) == (False, 5)


def test_delete_answers_204_then_404(api_a: Api) -> None:
    created = api_a.post("schedules", NIGHTLY).json()
    assert api_a.delete(f"schedules/{created['id']}").status_code == 204
    assert api_a.get(f"schedules/{created['id']}").status_code == 404
    assert api_a.delete(f"schedules/{created['id']}").status_code == 404


def test_another_tenants_schedule_answers_404_to_everything(api_a: Api, api_b: Api) -> None:
    theirs = api_b.post("schedules", NIGHTLY).json()["id"]
    assert api_a.get(f"schedules/{theirs}").status_code == 404
    assert patch(api_a, f"schedules/{theirs}", {"paused": True}).status_code == 404
    assert patch(api_a, f"schedules/{theirs}", {"cron": "bad"}).status_code == 404  # 404 before 400
    assert api_a.post(f"schedules/{theirs}/pause").status_code == 404
    assert api_a.post(f"schedules/{theirs}/resume").status_code == 404
    assert api_a.delete(f"schedules/{theirs}").status_code == 404
    assert api_a.get("schedules").json()["results"] == []
    assert api_a.get("schedules/sched_nonsense").status_code == 404
    still = Schedule.objects.get(pk=theirs)
    assert (still.paused, still.cron) == (False, NIGHTLY["cron"])


def test_the_schema_documents_the_schedule_endpoints(api_a: Api) -> None:
    schema = api_a.client.get("/api/schema/", headers={"Accept": "application/json"}).json()
    paths = schema["paths"]
    assert set(paths["/api/v1/schedules"]) >= {"get", "post"}
    assert set(paths["/api/v1/schedules/{schedule_id}"]) >= {"get", "patch", "delete"}
    assert "post" in paths["/api/v1/schedules/{schedule_id}/pause"]
    create = schema["components"]["schemas"]["ScheduleCreateRequest"]
    assert create["additionalProperties"] is False
    assert "next_runs" in schema["components"]["schemas"]["Schedule"]["properties"]


def test_a_fired_execution_names_its_schedule(api_a: Api) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from executions.services.schedules import schedules_fire_due

    every_minute = {k: v for k, v in NIGHTLY.items() if k != "cron"}
    created = api_a.post("schedules", {**every_minute, "interval_seconds": 60}).json()
    assert created["interval_seconds"] == 60, created
    Schedule.objects.filter(pk=created["id"]).update(next_fire_at=timezone.now() - timedelta(seconds=1))
    [firing] = schedules_fire_due()
    execution = api_a.get(f"executions/{firing.execution_id}").json()
    assert (execution["origin"], execution["schedule_id"]) == ("schedule", created["id"])
    assert execution["metadata"]["schedule"]["name"] == "nightly"
