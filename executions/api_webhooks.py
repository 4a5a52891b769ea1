"""REST endpoints for webhooks: ``/webhooks`` (list, create), ``/webhooks/{id}`` (get, patch,
delete), ``/webhooks/{id}/deliveries``, ``/webhooks/{id}/rotate-secret`` and
``/webhooks/signing-secret`` (the secret of per-submission webhooks) and ``/webhooks/deliveries``
(all of the tenant's deliveries). Thin, as ``api.py``: the
request's shape is checked here, its meaning by ``services.webhooks``."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers as drf
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from enact_platform.api.auth import request_caller
from enact_platform.api.pagination import NewestFirst
from enact_platform.api.schema import ERROR, READ_ERRORS, WRITE_ERRORS
from executions.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from executions.persistence.webhooks import WEBHOOK_EVENTS
from executions.serializers import AnyJSONField, StrictBooleanField, StrictSerializer, TextField
from executions.services import webhooks

WEBHOOK_ID = OpenApiParameter("webhook_id", str, OpenApiParameter.PATH, pattern=r"^wh_[0-9A-Za-z]{27}$")
URL_HELP = "http or https; its host must be in the tenant's tool policy (allowed domains)"
EVENTS_HELP = "the event types it is called for"


class WebhookWrite(StrictSerializer):
    """What a PATCH may carry: any of the fields."""

    url = TextField(required=False, max_length=2000, help_text=URL_HELP)
    events = drf.ListField(
        child=drf.ChoiceField(choices=WEBHOOK_EVENTS), required=False, min_length=1, help_text=EVENTS_HELP
    )
    description = TextField(required=False, allow_blank=True, max_length=500)
    active = StrictBooleanField(required=False, help_text="inactive: nothing is sent to it")


class WebhookCreate(WebhookWrite):
    """A new webhook: a URL and the events it wants."""

    url = TextField(max_length=2000, help_text=URL_HELP)
    events = drf.ListField(child=drf.ChoiceField(choices=WEBHOOK_EVENTS), min_length=1, help_text=EVENTS_HELP)


class WebhookSerializer(drf.ModelSerializer):
    events = drf.ListField(child=drf.CharField())

    class Meta:
        model = WebhookEndpoint
        fields: tuple[str, ...] = ("id", "url", "events", "description", "active", "created_at", "updated_at")


class WebhookWithSecret(WebhookSerializer):
    secret = drf.CharField(help_text="signs every delivery (Enact-Signature); shown this once")

    class Meta(WebhookSerializer.Meta):
        fields = (*WebhookSerializer.Meta.fields, "secret")


class AttemptSerializer(drf.ModelSerializer):
    class Meta:
        model = WebhookAttempt
        fields = ("number", "started_at", "status_code", "response_body", "error", "duration_ms")


class DeliverySerializer(drf.ModelSerializer):
    webhook_id = drf.CharField(source="endpoint_id", allow_null=True)
    execution_id = drf.CharField()
    event = drf.CharField(source="event_type")
    payload = AnyJSONField(help_text="the body sent (null before the first attempt)")
    attempt_log = AttemptSerializer(many=True, help_text="every attempt, first to last")

    class Meta:
        model = WebhookDelivery
        fields = (
            "id",
            "webhook_id",
            "url",
            "execution_id",
            "event",
            "event_id",
            "state",
            "attempts",
            "next_attempt_at",
            "last_status",
            "last_error",
            "payload",
            "attempt_log",
            "created_at",
            "ended_at",
        )


class WebhookPage(drf.Serializer):
    """One page of the tenant's webhooks, newest first; ``next`` is the next page's URL, or null."""

    results = WebhookSerializer(many=True)
    next = drf.URLField(allow_null=True)


class DeliveryPage(drf.Serializer):
    """One page of a webhook's deliveries, newest first; ``next`` is the next page's URL, or null."""

    results = DeliverySerializer(many=True)
    next = drf.URLField(allow_null=True)


class SecretSerializer(drf.Serializer):
    secret = drf.CharField(help_text="shown this once")


class PageQuery(StrictSerializer):
    cursor = TextField(required=False, help_text="from the `next` of the page before")
    limit = drf.IntegerField(required=False, min_value=1, max_value=200, help_text="a page (50)")


def _valid(serializer_class: type[drf.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _page(view: APIView, request: Request, rows: Any, serializer: type[drf.Serializer]) -> Response:
    _valid(PageQuery, request.query_params.dict())
    paginator = NewestFirst()
    page = paginator.paginate_queryset(rows, request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)


def _with_secret(endpoint: WebhookEndpoint, secret: str) -> dict[str, Any]:
    return {**WebhookSerializer(endpoint).data, "secret": secret}


class WebhookListView(APIView):
    @extend_schema(
        operation_id="webhooks_list",
        parameters=[PageQuery],
        responses={200: WebhookPage, **READ_ERRORS, 400: ERROR},
        description="The tenant's webhooks, newest first, a page at a time.",
    )
    def get(self, request: Request) -> Response:
        return _page(self, request, webhooks.webhook_list(tenant=request_caller(request).tenant), WebhookSerializer)

    @extend_schema(
        operation_id="webhooks_create",
        request=WebhookCreate,
        responses={201: WebhookWithSecret, **WRITE_ERRORS},
        description="Register a URL for events. Its secret is in this answer only. A host the tenant's "
        "tool policy does not allow (or a private address it does not name exactly) answers 400.",
    )
    def post(self, request: Request) -> Response:
        body = _valid(WebhookCreate, request.data)
        endpoint, secret = webhooks.webhook_create(tenant=request_caller(request).tenant, **body)
        return Response(_with_secret(endpoint, secret), status=201)


class WebhookDetailView(APIView):
    @extend_schema(
        operation_id="webhooks_get", parameters=[WEBHOOK_ID], responses={200: WebhookSerializer, **READ_ERRORS}
    )
    def get(self, request: Request, webhook_id: str) -> Response:
        endpoint = webhooks.webhook_get(tenant=request_caller(request).tenant, webhook_id=webhook_id)
        return Response(WebhookSerializer(endpoint).data)

    @extend_schema(
        operation_id="webhooks_update",
        parameters=[WEBHOOK_ID],
        request=WebhookWrite,
        responses={200: WebhookSerializer, **WRITE_ERRORS},
        description="Change the given fields.",
    )
    def patch(self, request: Request, webhook_id: str) -> Response:
        tenant = request_caller(request).tenant
        webhooks.webhook_get(tenant=tenant, webhook_id=webhook_id)  # another tenant's: 404 before 400
        body = _valid(WebhookWrite, request.data)
        endpoint = webhooks.webhook_update(tenant=tenant, webhook_id=webhook_id, **body)
        return Response(WebhookSerializer(endpoint).data)

    @extend_schema(
        operation_id="webhooks_delete",
        parameters=[WEBHOOK_ID],
        responses={204: OpenApiResponse(description="deleted, with its deliveries"), **READ_ERRORS},
    )
    def delete(self, request: Request, webhook_id: str) -> Response:
        webhooks.webhook_delete(tenant=request_caller(request).tenant, webhook_id=webhook_id)
        return Response(status=204)


class WebhookDeliveriesView(APIView):
    @extend_schema(
        operation_id="webhooks_deliveries",
        parameters=[WEBHOOK_ID, PageQuery],
        responses={200: DeliveryPage, **READ_ERRORS, 400: ERROR},
        description="What was sent to the webhook, newest first, each with its attempts.",
    )
    def get(self, request: Request, webhook_id: str) -> Response:
        rows = webhooks.webhook_deliveries(tenant=request_caller(request).tenant, webhook_id=webhook_id)
        return _page(self, request, rows, DeliverySerializer)


class DeliveryQuery(PageQuery):
    execution = TextField(required=False, max_length=40, help_text="only this execution's")
    state = drf.ChoiceField(choices=WebhookDelivery.State.choices, required=False)


class DeliveryListView(APIView):
    @extend_schema(
        operation_id="webhooks_deliveries_all",
        parameters=[DeliveryQuery],
        responses={200: DeliveryPage, **READ_ERRORS, 400: ERROR},
        description="Every delivery of the tenant, its webhooks' and its submissions' own `webhook`, "
        "newest first, each with its attempts.",
    )
    def get(self, request: Request) -> Response:
        query = _valid(DeliveryQuery, request.query_params.dict())
        rows = webhooks.deliveries_list(
            tenant=request_caller(request).tenant, execution_id=query.get("execution"), state=query.get("state")
        )
        paginator = NewestFirst()
        page = paginator.paginate_queryset(rows, request, view=self)
        return paginator.get_paginated_response(DeliverySerializer(page, many=True).data)


class WebhookRotateSecretView(APIView):
    @extend_schema(
        operation_id="webhooks_rotate_secret",
        parameters=[WEBHOOK_ID],
        request=None,
        responses={200: WebhookWithSecret, **READ_ERRORS},
        description="A new secret (in this answer only); the old one signs nothing more.",
    )
    def post(self, request: Request, webhook_id: str) -> Response:
        tenant = request_caller(request).tenant
        endpoint, secret = webhooks.webhook_rotate_secret(tenant=tenant, webhook_id=webhook_id)
        return Response(_with_secret(endpoint, secret))


class SigningSecretView(APIView):
    @extend_schema(
        operation_id="webhooks_signing_secret",
        request=None,
        responses={200: SecretSerializer, **READ_ERRORS},
        description="A new secret for the per-submission `webhook` URLs that are none of the tenant's "
        "webhooks (in this answer only); the old one signs nothing more.",
    )
    def post(self, request: Request) -> Response:
        return Response({"secret": webhooks.signing_secret_rotate(tenant=request_caller(request).tenant)})
