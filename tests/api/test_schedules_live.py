"""Schedules through a real server and worker (``manage.py up``, the embedded default on SQLite):
created over the API, fired by the worker, paused, refused when malformed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..live import Platform, platform_up

pytestmark = pytest.mark.slow


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    with platform_up(tmp_path, ENACT_SCHEDULE_POLL_SECONDS="0.5") as up:
        yield up


def _fired(api: httpx.Client, schedule_id: str) -> list[dict]:
    page = api.get("/api/v1/executions", params={"limit": 200}).json()["results"]
    return [e for e in page if (e.get("metadata") or {}).get("schedule", {}).get("id") == schedule_id]


def test_a_schedule_made_over_the_api_is_fired_by_the_worker_until_paused(
    platform: Platform,
) -> None:
    api = httpx.Client(base_url=platform.url, headers={"Authorization": f"Bearer {platform.key()}"}, timeout=30)

    bad = api.post("/api/v1/schedules", json={"name": "x", "blueprint": "demo.slow", "cron": "* * * * 8"})
    assert bad.status_code == 400
    assert bad.json()["error"]["details"]["field"] == "cron"
    assert "out of range" in bad.json()["error"]["message"]

    created = api.post(
        "/api/v1/schedules",
        json={"name": "often", "blueprint": "demo.slow", "input": {"steps": 1, "seconds": 0},
              "interval_seconds": 1, "overlap": "queue"},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    schedule = created.json()
    assert len(schedule["next_runs"]) == 5

    deadline = time.monotonic() + 30
    while (
        time.monotonic() < deadline and len([e for e in _fired(api, schedule["id"]) if e["state"] == "completed"]) < 3
    ):
        time.sleep(0.3)
    fired = _fired(api, schedule["id"])
    assert len([e for e in fired if e["state"] == "completed"]) >= 3, fired
    scheduled = [e["metadata"]["schedule"]["scheduled_at"] for e in fired]
    assert len(scheduled) == len(set(scheduled))

    paused = api.post(f"/api/v1/schedules/{schedule['id']}/pause")
    assert (paused.status_code, paused.json()["paused"], paused.json()["next_runs"]) == (200, True, [])
    time.sleep(1)  # a firing already under way when paused lands
    count = len(_fired(api, schedule["id"]))
    time.sleep(2.5)
    assert len(_fired(api, schedule["id"])) == count  # paused: nothing more

    listed = api.get("/api/v1/schedules").json()
    assert [s["name"] for s in listed["results"]] == ["often"]
    assert api.delete(f"/api/v1/schedules/{schedule['id']}").status_code == 204
    assert api.get(f"/api/v1/schedules/{schedule['id']}").status_code == 404
