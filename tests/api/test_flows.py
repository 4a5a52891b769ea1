"""Whole flows through the API with a worker running the executions: results, artifacts, approval,
pause and resume, and concurrent identical submissions."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from executions.models import Execution

from ..conftest import wait_until
from .conftest import Api, error_of

pytestmark = pytest.mark.django_db(transaction=True)


def _state(api: Api, execution_id: str) -> dict[str, Any]:
    return api.get(f"executions/{execution_id}").json()


def _wait_state(api: Api, execution_id: str, *states: str, timeout: float = 15) -> dict[str, Any]:
    assert wait_until(lambda: _state(api, execution_id)["state"] in states, timeout=timeout), _state(api, execution_id)
    return _state(api, execution_id)


def test_a_pipeline_runs_and_its_results_and_artifacts_are_served(api_a: Api, inline_worker: Any) -> None:
    submitted = api_a.post("executions", {"blueprint": "demo.pipeline", "input": {"text": "hello hello world"}})
    assert submitted.status_code == 201
    execution_id = submitted.json()["id"]
    done = _wait_state(api_a, execution_id, "completed", "failed")
    assert done["state"] == "completed", done
    assert done["ended_at"] is not None

    steps = api_a.get(f"executions/{execution_id}/steps").json()["results"]
    assert [s["state"] for s in steps] == ["completed"] * len(steps)
    assert [s["position"] for s in steps] == list(range(len(steps)))

    events = api_a.get(f"executions/{execution_id}/events").json()["results"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert done["last_seq"] == events[-1]["seq"]
    later = api_a.get(f"executions/{execution_id}/events", {"after": 3, "limit": 2}).json()
    assert [e["seq"] for e in later["results"]] == [4, 5]
    assert "cursor=" in later["next"]

    artifacts = api_a.get(f"executions/{execution_id}/artifacts").json()
    assert {a["content_type"].split(";")[0] for a in artifacts} >= {"text/plain", "application/json"}
    for artifact in artifacts:
        assert api_a.get(f"artifacts/{artifact['id']}").json() == artifact
        content = api_a.get(f"artifacts/{artifact['id']}/content", headers={"Accept": artifact["content_type"]})
        assert content.status_code == 200
        assert content["Content-Type"] == artifact["content_type"]
        body = b"".join(content.streaming_content)
        assert len(body) == artifact["size"]
        assert hashlib.sha256(body).hexdigest() == artifact["sha256"]
        assert content["Content-Disposition"].startswith("attachment; filename=")


def test_an_approval_is_answered_through_the_api(api_a: Api, inline_worker: Any) -> None:
    execution_id = api_a.post("executions", {"blueprint": "demo.approval", "input": {}}).json()["id"]
    waiting = _wait_state(api_a, execution_id, "waiting")
    assert waiting["wait_reason"] == "approval"
    missing = api_a.post(f"executions/{execution_id}/input", {"input": "ok"})
    assert missing.status_code == 400  # an approval needs approve: true or false
    assert _state(api_a, execution_id)["state"] == "waiting"
    answered = api_a.post(f"executions/{execution_id}/input", {"approve": True, "input": "looks good"})
    assert answered.status_code == 202
    again = api_a.post(f"executions/{execution_id}/input", {"approve": True})
    assert again.status_code == 409
    assert error_of(again)["code"] == "conflict"
    assert _wait_state(api_a, execution_id, "completed", "failed")["state"] == "completed"


def test_pause_and_resume_through_the_api(api_a: Api, inline_worker: Any) -> None:
    execution_id = api_a.post("executions", {"blueprint": "demo.slow", "input": {"steps": 4, "seconds": 0.2}}).json()[
        "id"
    ]
    _wait_state(api_a, execution_id, "running")
    assert api_a.post(f"executions/{execution_id}/pause", {"reason": "lunch"}).status_code == 202
    paused = _wait_state(api_a, execution_id, "paused")
    done_before = sum(
        s["state"] == "completed" for s in api_a.get(f"executions/{execution_id}/steps").json()["results"]
    )
    assert api_a.post(f"executions/{execution_id}/pause", {}).status_code == 409
    resumed = api_a.post(f"executions/{execution_id}/resume", {})
    assert resumed.status_code == 202
    finished = _wait_state(api_a, execution_id, "completed", "failed")
    assert finished["state"] == "completed"
    assert finished["output"]["done"] == 4
    steps = api_a.get(f"executions/{execution_id}/steps").json()["results"]
    # Resume ran no completed step again: four steps, each once.
    assert sum(s["state"] == "completed" for s in steps) == 4
    assert paused["state"] == "paused"
    assert done_before >= 1


def test_concurrent_identical_submissions_make_exactly_one_execution(api_a: Api, enqueued: list[str]) -> None:
    body = '{"blueprint": "demo.chain", "input": {"n": 2}, "idempotency_key": "same-click"}'
    barrier = threading.Barrier(8)
    answers: list[tuple[int, str]] = []

    def click() -> None:
        try:
            client = Client()
            barrier.wait()
            response = client.post(
                "/api/v1/executions",
                body,
                content_type="application/json",
                headers={"Authorization": f"Bearer {api_a.key}"},
            )
            answers.append((response.status_code, response.json()["id"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=click) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 8
    assert sorted(status for status, _ in answers) == [200] * 7 + [201]
    assert len({execution_id for _, execution_id in answers}) == 1
    assert Execution.objects.filter(tenant=api_a.tenant).count() == 1
    assert len(enqueued) == 1
