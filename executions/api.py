"""REST endpoints for executions, their steps, events and artifacts, and the graphs to run.

Each view validates the request's shape, calls one service or selector with the caller's tenant,
and serializes what comes back. Errors are raised, and turned into the error body in one place.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers as drf
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from enact_platform.api.auth import request_caller
from enact_platform.api.pagination import NewestFirst
from enact_platform.api.renderers import AnyContentRenderer, EventStreamRenderer
from enact_platform.api.schema import ERROR, READ_ERRORS, READ_ERRORS_JSON, WRITE_ERRORS
from enact_platform.errors import NotFound
from executions import selectors
from executions import serializers as s
from executions.catalog import CatalogEntry, blueprint_catalog, blueprint_lookup
from executions.live.sse import parse_last_event_id, sse_frame, stored_frames, stream_is_over
from executions.ops import tracing
from executions.services import controls
from executions.services.blueprints import blueprint_save
from executions.services.submit import execution_submit

EXECUTION_ID = OpenApiParameter("execution_id", str, OpenApiParameter.PATH, pattern=r"^exec_[0-9A-Za-z]{27}$")
# The largest seq a client may name (twelve digits; executions.live.sse.parse_last_event_id).
MAX_SEQ = 10**12 - 1


def _valid(serializer_class: type[drf.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _execution(request: Request, execution_id: str) -> dict[str, Any]:
    caller = request_caller(request)
    return s.ExecutionSerializer(selectors.execution_get_detailed(tenant=caller.tenant, execution_id=execution_id)).data


class ExecutionListView(APIView):
    @extend_schema(
        operation_id="executions_list",
        parameters=[s.ExecutionFilters],
        responses={200: s.ExecutionPage, **READ_ERRORS, 400: ERROR},
    )
    def get(self, request: Request) -> Response:
        filters = _valid(s.ExecutionFilters, request.query_params.dict())
        rows = selectors.execution_list(
            tenant=request_caller(request).tenant,
            state=filters.get("state"),
            blueprint=filters.get("blueprint"),
            created_after=filters.get("created_after"),
            created_before=filters.get("created_before"),
            q=filters.get("q"),
            origin=filters.get("origin"),
            source=filters.get("source"),
        )
        paginator = NewestFirst()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(s.ExecutionSerializer(page, many=True).data)

    @extend_schema(
        operation_id="executions_submit",
        request=s.SubmitRequest,
        responses={201: s.ExecutionSerializer, 200: s.ExecutionSerializer, **WRITE_ERRORS},
        description="Submit an execution. A repeated idempotency key returns the first execution with 200.",
    )
    @tracing.submit_span  # a W3C traceparent makes the execution's trace part of the caller's
    def post(self, request: Request) -> Response:
        body = _valid(s.SubmitRequest, request.data)
        caller = request_caller(request)
        execution, created = execution_submit(
            tenant=caller.tenant,
            blueprint=body["blueprint"],
            version=body.get("version"),
            input=body["input"],
            idempotency_key=body.get("idempotency_key"),
            metadata=tracing.submission_metadata(body.get("metadata")),
            user=request.user if not caller.key else None,
            api_key=caller.key,
            webhook=body.get("webhook"),
        )
        data = _execution(request, execution.pk)
        return Response(data, status=201 if created else 200)


class ExecutionDetailView(APIView):
    @extend_schema(parameters=[EXECUTION_ID], responses={200: s.ExecutionSerializer, **READ_ERRORS})
    def get(self, request: Request, execution_id: str) -> Response:
        return Response(_execution(request, execution_id))


class StepsQuery(s.StrictSerializer):
    limit = drf.IntegerField(required=False, min_value=1, max_value=1000, default=100, help_text="a page")
    cursor = s.TextField(required=False, help_text="from the `next` of the page before")


class EventsPageQuery(s.EventsQuery):
    cursor = s.TextField(required=False, help_text="from the `next` of the page before")


class StepPage(drf.Serializer):
    """One page of an execution's steps, in order; ``next`` is the next page's URL, or null at the end."""

    results = s.StepSerializer(many=True)
    next = drf.URLField(allow_null=True)


class EventPage(drf.Serializer):
    """One page of an execution's events, by seq; ``next`` continues after the last seq, or is null."""

    results = s.EventSerializer(many=True)
    next = drf.URLField(allow_null=True)


class InLogOrder(NewestFirst):
    """An execution's events, by seq: the cursor is the last seq sent, so a page is read where
    the log's index puts it, however long the log (no count, no offset)."""

    ordering = ("seq",)  # type: ignore[assignment]  # one key, unique in its execution
    page_size = 1000
    max_page_size = 1000


class InStepOrder(NewestFirst):
    """An execution's steps, by position (the cursor is the last position sent)."""

    ordering = ("position",)  # type: ignore[assignment]  # one key, unique in its execution
    page_size = 100
    max_page_size = 1000


class ExecutionStepsView(APIView):
    @extend_schema(
        parameters=[EXECUTION_ID, StepsQuery],
        responses={200: StepPage, **READ_ERRORS, 400: ERROR},
        description="The execution's steps in order, a page at a time.",
    )
    def get(self, request: Request, execution_id: str) -> Response:
        steps = selectors.execution_steps(tenant=request_caller(request).tenant, execution_id=execution_id)
        _valid(StepsQuery, request.query_params.dict())
        paginator = InStepOrder()
        page = paginator.paginate_queryset(steps, request, view=self)
        return paginator.get_paginated_response(s.StepSerializer(page, many=True).data)


class ExecutionEventsView(APIView):
    @extend_schema(
        parameters=[EXECUTION_ID, EventsPageQuery],
        responses={200: EventPage, **READ_ERRORS, 400: ERROR},
        description="The execution's stored events with seq > `after`, ascending, a page at a time "
        "(`next` continues after the last seq).",
    )
    def get(self, request: Request, execution_id: str) -> Response:
        caller = request_caller(request)
        execution = selectors.execution_get(tenant=caller.tenant, execution_id=execution_id)
        query = _valid(EventsPageQuery, request.query_params.dict())
        paginator = InLogOrder()
        page = paginator.paginate_queryset(
            selectors.events_from(execution_id=execution.pk, after=query["after"]), request, view=self
        )
        return paginator.get_paginated_response(s.EventSerializer(page, many=True).data)


class ExecutionArtifactsView(APIView):
    @extend_schema(parameters=[EXECUTION_ID], responses={200: s.ArtifactSerializer(many=True), **READ_ERRORS})
    def get(self, request: Request, execution_id: str) -> Response:
        artifacts = selectors.execution_artifacts(tenant=request_caller(request).tenant, execution_id=execution_id)
        return Response(s.ArtifactSerializer(artifacts, many=True).data)


class ArtifactDetailView(APIView):
    @extend_schema(responses={200: s.ArtifactSerializer, **READ_ERRORS})
    def get(self, request: Request, artifact_id: str) -> Response:
        artifact = selectors.artifact_get(tenant=request_caller(request).tenant, artifact_id=artifact_id)
        return Response(s.ArtifactSerializer(artifact).data)


class ArtifactContentView(APIView):
    renderer_classes = [JSONRenderer, AnyContentRenderer]

    @extend_schema(
        responses={
            (200, "*/*"): OpenApiResponse(description="the artifact's bytes, with its content type"),
            **READ_ERRORS_JSON,
        }
    )
    def get(self, request: Request, artifact_id: str) -> StreamingHttpResponse:
        artifact = selectors.artifact_get(tenant=request_caller(request).tenant, artifact_id=artifact_id)
        response = StreamingHttpResponse(
            selectors.artifact_chunks(artifact=artifact),
            content_type=artifact.content_type or "application/octet-stream",
        )
        response["Content-Length"] = str(artifact.size)
        response["Content-Disposition"] = _disposition(artifact.name)
        response["X-Content-Type-Options"] = "nosniff"
        response["ETag"] = f'"{artifact.sha256}"'
        return response


def _disposition(name: str) -> str:
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


# --- controls --------------------------------------------------------------------------------


class ExecutionCancelView(APIView):
    @extend_schema(
        parameters=[EXECUTION_ID],
        request=s.ReasonRequest,
        responses={202: s.ExecutionSerializer, 200: s.ExecutionSerializer, **WRITE_ERRORS},
        description="Cancel. Idempotent: 202 while the cancel takes effect, 200 with the state if it is already over.",
    )
    def post(self, request: Request, execution_id: str) -> Response:
        caller = request_caller(request)
        body = _valid(s.ReasonRequest, request.data)
        after = controls.execution_cancel(
            tenant=caller.tenant, execution_id=execution_id, reason=body["reason"], actor=caller.actor
        )
        return Response(_execution(request, after.pk), status=200 if after.had_ended else 202)


class ExecutionPauseView(APIView):
    @extend_schema(
        parameters=[EXECUTION_ID], request=s.ReasonRequest, responses={202: s.ExecutionSerializer, **WRITE_ERRORS}
    )
    def post(self, request: Request, execution_id: str) -> Response:
        caller = request_caller(request)
        body = _valid(s.ReasonRequest, request.data)
        controls.execution_pause(
            tenant=caller.tenant, execution_id=execution_id, reason=body["reason"], actor=caller.actor
        )
        return Response(_execution(request, execution_id), status=202)


class ExecutionResumeView(APIView):
    @extend_schema(parameters=[EXECUTION_ID], request=None, responses={202: s.ExecutionSerializer, **WRITE_ERRORS})
    def post(self, request: Request, execution_id: str) -> Response:
        caller = request_caller(request)
        _valid(s.StrictSerializer, request.data or {})
        controls.execution_resume(tenant=caller.tenant, execution_id=execution_id, actor=caller.actor)
        return Response(_execution(request, execution_id), status=202)


class ExecutionInputView(APIView):
    @extend_schema(
        parameters=[EXECUTION_ID], request=s.InputRequest, responses={202: s.ExecutionSerializer, **WRITE_ERRORS}
    )
    def post(self, request: Request, execution_id: str) -> Response:
        caller = request_caller(request)
        body = _valid(s.InputRequest, request.data)
        controls.execution_provide_input(
            tenant=caller.tenant,
            execution_id=execution_id,
            input=body["input"],
            approve=body["approve"],
            actor=caller.actor,
        )
        return Response(_execution(request, execution_id), status=202)


class ExecutionInboxView(APIView):
    @extend_schema(
        parameters=[EXECUTION_ID],
        request=s.InboxRequest,
        responses={202: s.InboxResult, **WRITE_ERRORS},
        description="Post guidance, evidence or an agent message; it is read at the next step boundary.",
    )
    def post(self, request: Request, execution_id: str) -> Response:
        caller = request_caller(request)
        message = _valid(s.InboxRequest, request.data)
        message_id = controls.execution_post_inbox(
            tenant=caller.tenant, execution_id=execution_id, message=message, actor=caller.actor
        )
        return Response({"id": message_id}, status=202)


class BulkCancelView(APIView):
    @extend_schema(
        operation_id="executions_bulk_cancel",
        request=s.BulkCancelRequest,
        responses={200: s.BulkCancelResult, **WRITE_ERRORS},
    )
    def post(self, request: Request) -> Response:
        caller = request_caller(request)
        body = _valid(s.BulkCancelRequest, request.data)
        counts = controls.executions_bulk_cancel(
            tenant=caller.tenant,
            ids=body.get("ids"),
            filter=dict(body["filter"]) if "filter" in body else None,
            reason=body["reason"],
            actor=caller.actor,
        )
        return Response(counts)


# --- graphs and blueprints --------------------------------------------------------------------


def _blueprint(entry: CatalogEntry, *, detail: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": entry.name,
        "version": entry.version,
        "description": entry.description,
        "input_schema": entry.input_schema,
        "source": entry.source,
    }
    if detail:
        version = entry.stored
        data["definition"] = entry.definition
        data["versions"] = (
            [entry.version] if version is None else selectors.blueprint_versions(tenant=version.tenant, name=entry.name)
        )
        data["created_at"] = version.created_at if version is not None else None
    return data


BLUEPRINT_NAME = OpenApiParameter("name", str, OpenApiParameter.PATH, pattern=s.BLUEPRINT_NAME.pattern)


class BlueprintListView(APIView):
    @extend_schema(responses={200: s.BlueprintSerializer(many=True), **READ_ERRORS})
    def get(self, request: Request) -> Response:
        tenant = request_caller(request).tenant
        return Response([_blueprint(entry) for entry in blueprint_catalog(tenant=tenant)])

    @extend_schema(
        request=s.BlueprintCreateRequest,
        responses={201: s.BlueprintDetailSerializer, **WRITE_ERRORS},
        description="Create a declarative blueprint (version 1). Invalid definitions answer 400 with every "
        "problem in error.details.problems, each with the path it concerns.",
    )
    def post(self, request: Request) -> Response:
        body = _valid(s.BlueprintCreateRequest, request.data)
        caller = request_caller(request)
        saved = blueprint_save(
            tenant=caller.tenant, name=body["name"], definition=body["definition"], user=_user(request), create=True
        )
        return Response(_saved(request, saved.blueprint.name, saved.version), status=201)


class BlueprintDetailView(APIView):
    @extend_schema(
        parameters=[BLUEPRINT_NAME, s.VersionQuery],
        responses={200: s.BlueprintDetailSerializer, **READ_ERRORS, 400: ERROR},
    )
    def get(self, request: Request, name: str) -> Response:
        query = _valid(s.VersionQuery, request.query_params.dict())
        return Response(_saved(request, name, query.get("version")))

    @extend_schema(
        parameters=[BLUEPRINT_NAME],
        request=s.BlueprintUpdateRequest,
        responses={200: s.BlueprintDetailSerializer, **WRITE_ERRORS},
        description="Save a new version of a blueprint; earlier versions stay, and executions keep the version they ran.",
    )
    def put(self, request: Request, name: str) -> Response:
        body = _valid(s.BlueprintUpdateRequest, request.data)
        caller = request_caller(request)
        saved = blueprint_save(
            tenant=caller.tenant, name=name, definition=body["definition"], user=_user(request), create=False
        )
        return Response(_saved(request, name, saved.version))


def _saved(request: Request, name: str, version: int | None) -> dict[str, Any]:
    entry = blueprint_lookup(tenant=request_caller(request).tenant, name=name, version=version, missing=NotFound)
    return _blueprint(entry, detail=True)


def _user(request: Request) -> Any:
    return request.user if not request_caller(request).key else None


class ExecutionStreamView(APIView):
    """The stream as Django serves it without the ASGI router (WSGI, test clients): the stored
    events after ``Last-Event-ID``, then the response ends; an SSE client reconnects with its
    last id and so goes on. Under ASGI, ``executions.live.sse.ExecutionStream`` answers this
    path instead, and keeps the response open for live events."""

    renderer_classes = [EventStreamRenderer, JSONRenderer]

    @extend_schema(
        parameters=[
            EXECUTION_ID,
            OpenApiParameter(
                "after",
                {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                description="send events after this seq (or Last-Event-ID)",
            ),
            OpenApiParameter(
                "Last-Event-ID",
                str,
                OpenApiParameter.HEADER,
                pattern="^[0-9]{1,12}$",
                description="the last seq received",
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                description="Server-Sent Events: `id:` is the seq, `event:` the type, `data:` the wire event"
            ),
            (204, "text/event-stream"): OpenApiResponse(description="the client has every event, the last included"),
            **READ_ERRORS_JSON,
            (400, "application/json"): ERROR,
        },
    )
    def get(self, request: Request, execution_id: str) -> HttpResponse:
        caller = request_caller(request)
        execution = selectors.execution_get(tenant=caller.tenant, execution_id=execution_id)
        after = parse_last_event_id(request.META.get("HTTP_LAST_EVENT_ID") or request.query_params.get("after") or "0")
        if stream_is_over(execution.pk, execution.is_terminal, after):
            return HttpResponse(status=204)
        wires, _ = stored_frames(execution.pk, after)
        body = b"retry: 1000\n\n" + b"".join(sse_frame(wire) for wire in wires)
        response = HttpResponse(body, content_type="text/event-stream; charset=utf-8")
        response["Cache-Control"] = "no-cache"
        return response
