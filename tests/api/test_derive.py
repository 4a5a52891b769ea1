"""POST /executions/{id}/rerun and /executions/{id}/fork: answers, refusals, isolation."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from executions.models import Execution, Step

from ..conftest import wait_until
from .conftest import Api, error_of

pytestmark = pytest.mark.django_db(transaction=True)


def finished(api: Api, blueprint: str = "demo.chain", input: Any = None) -> dict[str, Any]:
    response = api.post("executions", {"blueprint": blueprint, "input": {"n": 3} if input is None else input})
    assert response.status_code == 201, response.json()
    execution_id = response.json()["id"]
    assert wait_until(lambda: Execution.objects.filter(pk=execution_id, state="completed", lease_owner="").exists())
    return api.get(f"executions/{execution_id}").json()


def step_ids(execution_id: str) -> list[str]:
    return list(Step.objects.filter(execution_id=execution_id).order_by("position").values_list("id", flat=True))


def test_rerun_answers_201_with_the_new_execution(api_a: Api, inline_worker: list[threading.Thread]) -> None:
    source = finished(api_a)
    assert (source["origin"], source["source_id"]) == ("submit", None)
    response = api_a.post(f"executions/{source['id']}/rerun", {"metadata": {"try": 2}, "idempotency_key": "r1"})
    assert response.status_code == 201
    body = response.json()
    assert (body["origin"], body["source_id"], body["metadata"]) == ("rerun", source["id"], {"try": 2})
    assert (body["blueprint"], body["version"], body["input"]) == ("demo.chain", source["version"], {"n": 3})
    again = api_a.post(f"executions/{source['id']}/rerun", {"idempotency_key": "r1"})
    assert (again.status_code, again.json()["id"]) == (200, body["id"])
    assert api_a.post(f"executions/{source['id']}/rerun", raw=b"").status_code == 201  # no body at all


def test_fork_answers_201_and_runs_from_the_step(api_a: Api, inline_worker: list[threading.Thread]) -> None:
    source = finished(api_a, input={"n": 5})
    response = api_a.post(f"executions/{source['id']}/fork", {"from_step": step_ids(source["id"])[2], "state": 10})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["origin"], body["source_id"], body["state"]) == ("fork", source["id"], "queued")
    assert wait_until(lambda: Execution.objects.filter(pk=body["id"], state="completed").exists())
    assert api_a.get(f"executions/{body['id']}").json()["output"] == 13
    steps = api_a.get(f"executions/{body['id']}/steps").json()["results"]
    assert [s["name"] for s in steps] == ["n_3", "n_4", "n_5"]


def test_a_null_state_is_a_state(api_a: Api, inline_worker: list[threading.Thread]) -> None:
    source = finished(api_a, input={"n": 2})
    body = api_a.post(f"executions/{source['id']}/fork", {"from_step": step_ids(source["id"])[1], "state": None})
    assert body.status_code == 201
    assert wait_until(lambda: Execution.objects.filter(pk=body.json()["id"], state="completed").exists())
    assert Execution.objects.get(pk=body.json()["id"]).output == 1  # n_2 was given null, not 1


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({}, "from_step"),
        ({"from_step": 5}, "from_step"),
        ({"from_step": ["a"]}, "from_step"),
        ({"from_step": "step_x", "stat": 1}, "stat"),
        ({"from_step": "step_x", "metadata": []}, "metadata"),
        ({"from_step": "step_x", "idempotency_key": 7}, "idempotency_key"),
        ({"from_step": "step_unknown"}, "from_step"),
    ],
)
def test_fork_refuses_bad_bodies(
    api_a: Api, inline_worker: list[threading.Thread], body: dict[str, Any], where: str
) -> None:
    source = finished(api_a)
    response = api_a.post(f"executions/{source['id']}/fork", body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert where in str(error), error
    assert Execution.objects.count() == 1


@pytest.mark.parametrize("raw", [b"{", b"[]", b'"x"', b"null"])
def test_rerun_and_fork_refuse_what_is_not_a_json_object(
    api_a: Api, inline_worker: list[threading.Thread], raw: bytes
) -> None:
    source = finished(api_a)
    for action in ("rerun", "fork"):
        response = api_a.post(f"executions/{source['id']}/{action}", raw=raw)
        assert response.status_code == 400, (action, raw)
        assert error_of(response)["code"] == "invalid_input"
    assert Execution.objects.count() == 1


def test_rerun_refuses_unknown_fields(api_a: Api, inline_worker: list[threading.Thread]) -> None:
    source = finished(api_a)
    response = api_a.post(f"executions/{source['id']}/rerun", {"input": {"n": 9}})
    assert response.status_code == 400
    assert error_of(response)["details"] == {"fields": {"input": ["unknown field"]}}
    assert Execution.objects.count() == 1


def test_another_tenants_execution_answers_404_and_its_steps_400(
    api_a: Api, api_b: Api, inline_worker: list[threading.Thread]
) -> None:
    mine, theirs = finished(api_a), finished(api_b)
    theirs_step = step_ids(theirs["id"])[0]
    assert error_of(api_a.post(f"executions/{theirs['id']}/rerun"))["code"] == "not_found"
    response = api_a.post(f"executions/{theirs['id']}/fork", {"from_step": theirs_step})
    assert (response.status_code, error_of(response)["code"]) == (404, "not_found")
    # Their step, named for my execution, is no step of mine, like any unknown id.
    response = api_a.post(f"executions/{mine['id']}/fork", {"from_step": theirs_step})
    assert response.status_code == 400
    assert error_of(response)["details"] == {"field": "from_step", "step": theirs_step}
    assert api_a.post("executions/exec_nope/rerun").status_code == 404
    assert Execution.objects.count() == 2


def test_a_read_key_cannot_rerun_or_fork(api_a: Api, reader_a: Api, inline_worker: list[threading.Thread]) -> None:
    source = finished(api_a)
    assert reader_a.post(f"executions/{source['id']}/rerun").status_code == 403
    assert reader_a.post(f"executions/{source['id']}/fork", {"from_step": step_ids(source["id"])[0]}).status_code == 403
    assert Execution.objects.count() == 1


def test_a_state_over_the_input_limit_answers_413(api_a: Api, inline_worker: list[threading.Thread]) -> None:
    from tenants.services import tenant_set_limits

    source = finished(api_a)
    tenant_set_limits(tenant=api_a.tenant, changes={"max_input_bytes": 64})
    response = api_a.post(
        f"executions/{source['id']}/fork", {"from_step": step_ids(source["id"])[0], "state": "x" * 100}
    )
    assert (response.status_code, error_of(response)["code"]) == (413, "payload_too_large")
    assert Execution.objects.count() == 1


def test_the_list_filters_by_source_and_origin(api_a: Api, api_b: Api, inline_worker: list[threading.Thread]) -> None:
    source, other, theirs = finished(api_a), finished(api_a), finished(api_b)
    rerun = api_a.post(f"executions/{source['id']}/rerun").json()
    fork = api_a.post(f"executions/{source['id']}/fork", {"from_step": step_ids(source["id"])[1]}).json()
    api_a.post(f"executions/{other['id']}/rerun")

    def ids(**query: str) -> list[str]:
        response = api_a.get("executions", query)
        assert response.status_code == 200, response.json()
        return [e["id"] for e in response.json()["results"]]

    assert ids(source=source["id"]) == [fork["id"], rerun["id"]]
    assert ids(source=source["id"], origin="fork") == [fork["id"]]
    assert len(ids(origin="rerun")) == 2
    assert ids(source=theirs["id"]) == []  # another tenant's execution has no derived ones here
    api_b.post(f"executions/{theirs['id']}/rerun")
    assert ids(source=theirs["id"]) == []
    response = api_a.get("executions", {"origin": "nope"})
    assert response.status_code == 400
    assert "origin" in error_of(response)["details"]["fields"]
