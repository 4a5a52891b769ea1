"""REST endpoints for executions that come from another one: rerun and fork (services.derive)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers as drf
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from enact_platform.api.auth import request_caller
from enact_platform.api.schema import WRITE_ERRORS
from executions import serializers as s
from executions.api import EXECUTION_ID, _execution, _valid
from executions.services.derive import KEEP, execution_fork, execution_rerun


class RerunRequest(s.StrictSerializer):
    idempotency_key = s.TextField(required=False, max_length=200)
    metadata = drf.DictField(required=False, child=s.AnyJSONField())


class ForkRequest(RerunRequest):
    from_step = s.TextField(max_length=40, help_text="the id of a step of the execution: it runs again")
    state = s.AnyJSONField(
        required=False,
        help_text="the state that step is given instead of the one it was given (any JSON value, at most "
        "the tenant's max_input_bytes)",
    )


def _created(request: Request, execution: Any, created: bool) -> Response:
    return Response(_execution(request, execution.pk), status=201 if created else 200)


class ExecutionRerunView(APIView):
    @extend_schema(
        operation_id="executions_rerun",
        parameters=[EXECUTION_ID],
        request=RerunRequest,
        responses={201: s.ExecutionSerializer, 200: s.ExecutionSerializer, **WRITE_ERRORS},
        description="A new execution of the same blueprint, at the version this one ran, with the same input "
        "(origin `rerun`, source this one), under the tenant's limits and quotas. A repeated idempotency key "
        "returns the first execution with 200.",
    )
    def post(self, request: Request, execution_id: str) -> Response:
        caller = request_caller(request)
        body = _valid(RerunRequest, request.data)  # no body at all is {}: nothing to say
        execution, created = execution_rerun(
            tenant=caller.tenant,
            execution_id=execution_id,
            idempotency_key=body.get("idempotency_key"),
            metadata=body.get("metadata"),
            user=request.user if not caller.key else None,
            api_key=caller.key,
        )
        return _created(request, execution, created)


class ExecutionForkView(APIView):
    @extend_schema(
        operation_id="executions_fork",
        parameters=[EXECUTION_ID],
        request=ForkRequest,
        responses={201: s.ExecutionSerializer, 200: s.ExecutionSerializer, **WRITE_ERRORS},
        description="A new execution (origin `fork`, source this one) that starts where step `from_step` "
        "started: that step runs again, with the state it was given (or `state`), then the steps after it; "
        "the steps before it are not run again. It has its own events, steps and usage. This execution must "
        "have ended, be paused or wait; a step inside a parallel branch, a map or a subgraph is refused (fork "
        "from the step that started it, or the join after it).",
    )
    def post(self, request: Request, execution_id: str) -> Response:
        caller = request_caller(request)
        body = _valid(ForkRequest, request.data)
        execution, created = execution_fork(
            tenant=caller.tenant,
            execution_id=execution_id,
            from_step=body["from_step"],
            state=body.get("state", KEEP),
            idempotency_key=body.get("idempotency_key"),
            metadata=body.get("metadata"),
            user=request.user if not caller.key else None,
            api_key=caller.key,
        )
        return _created(request, execution, created)
