"""REST endpoints for schedules: ``/schedules`` (list, create), ``/schedules/{id}`` (get, patch,
delete), ``/schedules/{id}/pause`` and ``/resume``. Thin, as ``api.py``: the request's shape is
checked here, its meaning by ``services.schedules``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers as drf
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from enact_platform.api.auth import request_caller
from enact_platform.api.pagination import NewestFirst
from enact_platform.api.schema import ERROR, READ_ERRORS, WRITE_ERRORS
from executions.kernel.events import iso_timestamp
from executions.models import Schedule
from executions.serializers import (
    AnyJSONField,
    StrictBooleanField,
    StrictIntegerField,
    StrictSerializer,
    TextField,
)
from executions.services import schedules

SCHEDULE_ID = OpenApiParameter("schedule_id", str, OpenApiParameter.PATH, pattern=r"^sched_[0-9A-Za-z]{27}$")
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # as services.schedules.NAME, said to the schema
NAME_HELP = "unique in the tenant; letters, digits, '.', '_', '-'"
OVERLAP_HELP = (
    "when a firing comes while an earlier one's execution is unfinished: skip it, queue it, or cancel the earlier"
)


class ScheduleWrite(StrictSerializer):
    """What a PATCH may carry: any of the fields."""

    name = drf.RegexField(NAME, required=False, max_length=100, help_text=NAME_HELP)
    blueprint = TextField(required=False, max_length=200)
    version = StrictIntegerField(
        required=False, allow_null=True, min_value=1, help_text="a pinned version; null: the latest"
    )
    input = AnyJSONField(required=False, help_text="the input of every firing")
    cron = TextField(
        required=False, allow_blank=True, max_length=200, help_text="5 fields (a 6th: seconds), or @hourly …"
    )
    timezone = TextField(required=False, max_length=64, help_text="an IANA time zone for cron; UTC by default")
    interval_seconds = StrictIntegerField(
        required=False, allow_null=True, min_value=1, max_value=366 * 86400, help_text="instead of cron"
    )
    overlap = drf.ChoiceField(choices=Schedule.Overlap.choices, required=False, help_text=OVERLAP_HELP)
    paused = StrictBooleanField(required=False)


class ScheduleCreate(ScheduleWrite):
    """A new schedule: a name, a blueprint, and either ``cron`` or ``interval_seconds``."""

    name = drf.RegexField(NAME, max_length=100, help_text=NAME_HELP)
    blueprint = TextField(max_length=200)
    schema_extra = {"oneOf": [{"required": ["cron"]}, {"required": ["interval_seconds"]}]}


class ScheduleSerializer(drf.ModelSerializer):
    version = drf.IntegerField(source="blueprint_version", allow_null=True)
    input = AnyJSONField()
    last_error = AnyJSONField(help_text="why its last firing was refused (limits, quotas), or null")
    next_runs = drf.SerializerMethodField(help_text="its next five times (none while paused)")
    cron = drf.CharField(help_text="empty for an interval schedule")

    class Meta:
        model = Schedule
        fields = (
            "id",
            "name",
            "blueprint",
            "version",
            "input",
            "cron",
            "timezone",
            "interval_seconds",
            "overlap",
            "paused",
            "next_runs",
            "last_fired_at",
            "last_error",
            "created_at",
            "updated_at",
        )

    @extend_schema_field(drf.ListField(child=drf.DateTimeField()))
    def get_next_runs(self, schedule: Schedule) -> list[str]:
        return [iso_timestamp(t) for t in schedules.next_runs(schedule)]


class SchedulePage(drf.Serializer):
    """One page of the tenant's schedules, newest first; ``next`` is the next page's URL, or null."""

    results = ScheduleSerializer(many=True)
    next = drf.URLField(allow_null=True)


class PageQuery(StrictSerializer):
    cursor = TextField(required=False, help_text="from the `next` of the page before")
    limit = drf.IntegerField(required=False, min_value=1, max_value=200, help_text="a page (50)")


def _valid(serializer_class: type[drf.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _out(schedule: Schedule) -> dict[str, Any]:
    return ScheduleSerializer(schedule).data


class ScheduleListView(APIView):
    @extend_schema(
        operation_id="schedules_list",
        parameters=[PageQuery],
        responses={200: SchedulePage, **READ_ERRORS, 400: ERROR},
        description="The tenant's schedules, newest first, a page at a time.",
    )
    def get(self, request: Request) -> Response:
        _valid(PageQuery, request.query_params.dict())
        paginator = NewestFirst()
        rows = schedules.schedule_list(tenant=request_caller(request).tenant)
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(ScheduleSerializer(page, many=True).data)

    @extend_schema(
        operation_id="schedules_create",
        request=ScheduleCreate,
        responses={201: ScheduleSerializer, **WRITE_ERRORS},
        description="Schedule a blueprint: cron (with an IANA time zone) or an interval. A bad cron "
        "expression or time zone answers 400 naming the field; a name in use, 409.",
    )
    def post(self, request: Request) -> Response:
        body = _valid(ScheduleCreate, request.data)
        schedule = schedules.schedule_create(tenant=request_caller(request).tenant, **body)
        return Response(_out(schedule), status=201)


class ScheduleDetailView(APIView):
    @extend_schema(
        operation_id="schedules_get", parameters=[SCHEDULE_ID], responses={200: ScheduleSerializer, **READ_ERRORS}
    )
    def get(self, request: Request, schedule_id: str) -> Response:
        return Response(_out(schedules.schedule_get(tenant=request_caller(request).tenant, schedule_id=schedule_id)))

    @extend_schema(
        operation_id="schedules_update",
        parameters=[SCHEDULE_ID],
        request=ScheduleWrite,
        responses={200: ScheduleSerializer, **WRITE_ERRORS},
        description="Change the given fields. `cron` replaces `interval_seconds` and the other way round; "
        "new times count from now.",
    )
    def patch(self, request: Request, schedule_id: str) -> Response:
        tenant = request_caller(request).tenant
        schedules.schedule_get(tenant=tenant, schedule_id=schedule_id)  # another tenant's: 404 before 400
        body = _valid(ScheduleWrite, request.data)
        return Response(_out(schedules.schedule_update(tenant=tenant, schedule_id=schedule_id, **body)))

    @extend_schema(
        operation_id="schedules_delete",
        parameters=[SCHEDULE_ID],
        responses={204: OpenApiResponse(description="deleted; its executions stay"), **READ_ERRORS},
    )
    def delete(self, request: Request, schedule_id: str) -> Response:
        schedules.schedule_delete(tenant=request_caller(request).tenant, schedule_id=schedule_id)
        return Response(status=204)


class SchedulePauseView(APIView):
    @extend_schema(
        operation_id="schedules_pause",
        parameters=[SCHEDULE_ID],
        request=None,
        responses={200: ScheduleSerializer, **READ_ERRORS},
        description="It fires nothing until resumed.",
    )
    def post(self, request: Request, schedule_id: str) -> Response:
        tenant = request_caller(request).tenant
        return Response(_out(schedules.schedule_pause(tenant=tenant, schedule_id=schedule_id)))


class ScheduleResumeView(APIView):
    @extend_schema(
        operation_id="schedules_resume",
        parameters=[SCHEDULE_ID],
        request=None,
        responses={200: ScheduleSerializer, **READ_ERRORS},
        description="It fires again from its first time after now (times while paused are not caught up).",
    )
    def post(self, request: Request, schedule_id: str) -> Response:
        tenant = request_caller(request).tenant
        return Response(_out(schedules.schedule_resume(tenant=tenant, schedule_id=schedule_id)))
