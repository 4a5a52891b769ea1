"""The schema and the code agree: schemathesis loads ``/api/schema/`` from the application itself,
generates requests the schema allows and requests it forbids, sends them with a real API key of a
test tenant, and runs every one of its checks on every operation. A request the schema allows is
never refused for a reason the schema does not state, and one it forbids is refused.

What no schema can say is listed in ``MEANING``: a blueprint definition that is not a valid graph,
a blueprint name the tenant has no blueprint of, an input its blueprint's own schema refuses, a
cursor that was not copied from a ``next``, a Last-Event-ID beyond the log, and whatever a service
refuses naming the field (``details.field``: a cron expression, a time zone). A refusal for one of
those reasons (told apart by what its error names, and only when the request carried that part)
is not counted against the schema; a refusal of the request's shape always is.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import api_key_create, tenant_set_limits

pytestmark = pytest.mark.slow

load_all_checks()
# Every check schemathesis has. Those about sequences of calls (a resource used after its
# deletion, and the like) find nothing to say about one call, and pass.
ALL_CHECKS = CHECKS.get_all()

# What a request carried -> the key of ``error.details`` that names a refusal for its meaning.
MEANING: list[tuple[str, str, str]] = [
    # (where, what, details key)
    ("query", "cursor", "cursor"),  # a cursor not copied from a `next`
    ("headers", "Last-Event-ID", "last_seq"),  # beyond the execution's last event
    ("query", "after", "last_seq"),  # the same, given as ?after=
    ("body", "definition", "problems"),  # a definition that is not a valid graph
    ("body", "blueprint", "blueprints"),  # a blueprint the tenant has none of
    ("body", "input", "errors"),  # an input its blueprint's own schema refuses
    ("body", "from_step", "step"),  # a step the execution to fork has none of
]


def _load_schema() -> Any:
    """The schema as ``/api/schema/`` serves it, read through the WSGI application."""
    from django.core.wsgi import get_wsgi_application

    loaded = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
    loaded.config.generation.update(
        modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        max_examples=10,
        deterministic=True,
        # The test sends a real key; a generated Authorization header would only be replaced.
        with_security_parameters=False,
        # No text anywhere in a body may hold NUL, as the schema's description says: JSON Schema
        # cannot say it of free-form values (an input, a definition).
        allow_x00=False,
    )
    return loaded


schema = _load_schema()


@pytest.fixture(autouse=True)
def _keep_the_test_connection() -> Iterator[None]:
    """As Django's test client does: a request must not close the test's connection (and so its
    transaction) when it ends."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def caller(tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]) -> dict[str, str]:
    """A write key of tenant A, one of its executions for generated ids to aim at, and an
    execution of tenant B that must stay out of reach."""
    tenant_set_limits(tenant=tenant_a, changes={"requests_per_minute": None})
    mine, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    execution_submit(tenant=tenant_b, blueprint="demo.chain", input={"n": 1})
    return {"key": api_key_create(tenant=tenant_a, scope="write")[1], "execution": mine.pk}


def _refused_for_meaning(case: Any, response: Any) -> bool:
    if response.status_code != 400:
        return False
    details = response.json()["error"]["details"]
    if "fields" in details:  # the shape: always the schema's business
        return False
    carried = {
        "query": case.query or {},
        "headers": case.headers or {},
        "body": case.body if isinstance(case.body, dict) else {},
    }
    if any(what in carried[where] and key in details for where, what, key in MEANING):
        return True
    # The services' way to name the field whose meaning they refuse (a cron expression, a time zone).
    named = details.get("field")
    return isinstance(named, str) and any(named in part for part in carried.values())


@schema.parametrize()
@pytest.mark.django_db
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_check_on_every_operation(case: Any, caller: dict[str, str]) -> None:
    positive = case.meta.generation.mode.is_positive
    # A random id only ever meets 404: half the valid cases aim at an execution that exists.
    if positive and "execution_id" in (case.path_parameters or {}) and len(repr(case.body)) % 2:
        case.path_parameters["execution_id"] = caller["execution"]
    headers = {"Authorization": f"Bearer {caller['key']}"}
    response = case.call(headers=headers)
    excluded = [positive_data_acceptance] if positive and _refused_for_meaning(case, response) else []
    case.validate_response(response, checks=ALL_CHECKS, excluded_checks=excluded, headers=headers)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("executions", {"blueprint": "demo.chain", "version": "1", "input": {"n": 1}}, "version"),
        ("executions", {"blueprint": "demo.chain", "version": True, "input": {"n": 1}}, "version"),
        ("executions", {"blueprint": "demo.chain", "version": 1.5, "input": {"n": 1}}, "version"),
        ("executions/{id}/input", {"approve": "yes"}, "approve"),
        ("executions/{id}/input", {"approve": 1}, "approve"),
        ("executions/{id}/inbox", {"kind": "evidence", "source": "s", "title": "t", "confidence": "0.5"}, "confidence"),
        ("executions/{id}/inbox", {"kind": "guidance", "content": "c", "confidence": 0.5}, "confidence"),
        ("executions/{id}/cancel", {"reason": "r", "force": True}, "force"),
    ],
)
def test_a_value_of_another_json_type_or_an_unknown_field_is_refused(
    path: str, body: dict[str, Any], field: str, caller: dict[str, str]
) -> None:
    from django.test import Client

    response = Client().post(
        "/api/v1/" + path.format(id=caller["execution"]),
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {caller['key']}"},
    )
    assert response.status_code == 400, response.content
    assert field in response.json()["error"]["details"]["fields"]
