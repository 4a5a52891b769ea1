"""Property-based requests generated from the project's own OpenAPI schema: no input may produce a
5xx, and every response must match what the schema says of it (status, content type, body)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import api_key_create, tenant_set_limits

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _load_schema() -> Any:
    """The schema exactly as /api/schema/ serves it, bound to the project's WSGI application."""
    from django.core.wsgi import get_wsgi_application
    from drf_spectacular.generators import SchemaGenerator

    loaded = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
    loaded.app = get_wsgi_application()
    return loaded


schema = _load_schema()


@pytest.fixture(autouse=True)
def _keep_the_test_connection() -> Iterator[None]:
    """As Django's test client does: a request must not close the test's connection (and so
    its transaction) when it finishes."""
    from django.core import signals
    from django.db import close_old_connections

    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def caller(tenant_a: Tenant, tenant_b: Tenant, enqueued: list[str]) -> dict[str, str]:
    """A write key, and executions for the generated requests to find: one of the caller's, and
    one of another tenant's, which must stay out of reach."""
    tenant_set_limits(tenant=tenant_a, changes={"requests_per_minute": None})
    mine, _ = execution_submit(tenant=tenant_a, blueprint="demo.chain", input={"n": 1})
    execution_submit(tenant=tenant_b, blueprint="demo.chain", input={"n": 1})
    return {"key": api_key_create(tenant=tenant_a, scope="write")[1], "execution": mine.pk}


@schema.parametrize()
@pytest.mark.django_db
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_answers_as_its_schema_says(case: Any, caller: dict[str, str]) -> None:
    # Random ids only ever meet 404; every other case aims at an execution that exists.
    if case.path_parameters and "execution_id" in case.path_parameters and len(repr(case.body)) % 2:
        case.path_parameters["execution_id"] = caller["execution"]
    case.call_and_validate(headers={"Authorization": f"Bearer {caller['key']}"}, checks=CHECKS)
