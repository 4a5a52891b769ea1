"""The API's shapes: what a request may carry, and how rows are written out. No logic here:
validation of meaning (quotas, states, schemas) belongs to the services."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from executions.kernel.events import iso_timestamp
from executions.models import Artifact, Execution, ExecutionEvent, Step


class StrictSerializer(serializers.Serializer):
    """Refuses a body that is not an object, and fields it does not know (a typo must not pass)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class TextField(serializers.CharField):
    """A string, and only a string: DRF's CharField would turn 5 into "5"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class AnyJSONField(serializers.JSONField):
    """Any JSON value, null included."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)


# --- requests ------------------------------------------------------------------------------------


class SubmitRequest(StrictSerializer):
    blueprint = TextField(max_length=200)
    version = serializers.IntegerField(required=False, min_value=1)
    input = AnyJSONField(required=False, default=dict)
    idempotency_key = TextField(required=False, max_length=200)
    metadata = serializers.DictField(required=False, child=AnyJSONField())


class ReasonRequest(StrictSerializer):
    reason = TextField(required=False, allow_blank=True, max_length=500, default="")


class InputRequest(StrictSerializer):
    input = AnyJSONField(required=False, default=None)
    approve = serializers.BooleanField(required=False, allow_null=True, default=None)


class InboxRequest(serializers.Serializer):
    """An inbox message: its kind decides its fields, which the service checks."""

    kind = serializers.ChoiceField(choices=["guidance", "evidence", "a2a"])

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        super().to_internal_value(data)
        return data


class BulkCancelFilter(StrictSerializer):
    state = serializers.ChoiceField(choices=Execution.State.choices, required=False)
    blueprint = TextField(required=False, max_length=200)


class BulkCancelRequest(StrictSerializer):
    ids = serializers.ListField(child=TextField(max_length=40), required=False, max_length=1000)
    filter = BulkCancelFilter(required=False)
    reason = TextField(required=False, allow_blank=True, max_length=500, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("ids" in attrs) == ("filter" in attrs):
            raise serializers.ValidationError({"non_field_errors": ["give either ids or filter"]})
        if "filter" in attrs and not attrs["filter"]:
            raise serializers.ValidationError({"filter": ["name a state and/or a blueprint"]})
        return attrs


class ExecutionFilters(StrictSerializer):
    state = serializers.ChoiceField(choices=Execution.State.choices, required=False)
    blueprint = TextField(required=False, max_length=200)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    q = TextField(required=False, max_length=200)
    cursor = TextField(required=False)
    limit = TextField(required=False)


class EventsQuery(StrictSerializer):
    after = serializers.IntegerField(required=False, min_value=0, default=0)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=1000)


# --- responses -----------------------------------------------------------------------------------


class ExecutionSerializer(serializers.ModelSerializer):
    blueprint = serializers.CharField()
    version = serializers.IntegerField(source="blueprint_version", allow_null=True)
    input = AnyJSONField()
    output = AnyJSONField()
    error = AnyJSONField()
    usage = serializers.DictField(child=AnyJSONField())
    metadata = serializers.DictField(child=AnyJSONField())
    wait_detail = AnyJSONField()
    last_seq = serializers.SerializerMethodField()

    class Meta:
        model = Execution
        fields = [
            "id", "blueprint", "version", "state", "wait_reason", "wait_detail", "input", "output", "error",
            "usage", "metadata", "parent_id", "idempotency_key", "created_at", "started_at", "ended_at", "last_seq",
        ]  # fmt: skip
        read_only_fields = fields

    def get_last_seq(self, execution: Execution) -> int:
        return int(getattr(execution, "last_seq", None) or 0)


class ExecutionSummarySerializer(ExecutionSerializer):
    """An execution as live lists show it: no input, output or error."""

    class Meta(ExecutionSerializer.Meta):
        fields = [
            "id", "blueprint", "version", "state", "wait_reason", "parent_id", "created_at", "started_at",
            "ended_at", "last_seq",
        ]  # fmt: skip
        read_only_fields = fields


class StepSerializer(serializers.ModelSerializer):
    type = serializers.CharField(source="step_type")
    output = AnyJSONField()
    error = AnyJSONField()
    parent_step_id = serializers.SerializerMethodField()

    class Meta:
        model = Step
        fields = [
            "id", "position", "name", "type", "state", "attempt", "parent_step_id", "output", "error",
            "duration_ms", "started_at", "ended_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_parent_step_id(self, step: Step) -> str | None:
        return step.parent_step_id or None


class EventSerializer(serializers.ModelSerializer):
    """The event wire form (KERNEL.md §7)."""

    step_id = serializers.SerializerMethodField()
    timestamp = serializers.SerializerMethodField()
    data = serializers.DictField(child=AnyJSONField())

    class Meta:
        model = ExecutionEvent
        fields = ["id", "seq", "type", "execution_id", "step_id", "timestamp", "data"]
        read_only_fields = fields

    def get_step_id(self, event: ExecutionEvent) -> str | None:
        return event.step_id or None

    def get_timestamp(self, event: ExecutionEvent) -> str:
        return iso_timestamp(event.timestamp)


class ArtifactSerializer(serializers.ModelSerializer):
    type = serializers.CharField(source="artifact_type")
    metadata = serializers.DictField(child=AnyJSONField())
    step_id = serializers.SerializerMethodField()

    class Meta:
        model = Artifact
        fields = [
            "id", "execution_id", "step_id", "name", "type", "content_type", "size", "sha256", "metadata",
            "created_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_step_id(self, artifact: Artifact) -> str | None:
        return artifact.step_id or None


class BlueprintSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.IntegerField()
    description = serializers.CharField(allow_blank=True)
    input_schema = serializers.DictField(child=AnyJSONField())
    source = serializers.CharField()


class BlueprintDetailSerializer(BlueprintSerializer):
    definition = serializers.DictField(child=AnyJSONField(), allow_null=True, help_text="null for built-in graphs")
    versions = serializers.ListField(child=serializers.IntegerField())
    created_at = serializers.DateTimeField(allow_null=True)


class BlueprintCreateRequest(StrictSerializer):
    name = TextField(max_length=100)
    definition = serializers.DictField(child=AnyJSONField())


class BlueprintUpdateRequest(StrictSerializer):
    definition = serializers.DictField(child=AnyJSONField())


class VersionQuery(StrictSerializer):
    version = serializers.IntegerField(required=False, min_value=1)


class BulkCancelResult(serializers.Serializer):
    cancelled = serializers.IntegerField()
    cancel_requested = serializers.IntegerField()
    already_terminal = serializers.IntegerField()
    not_found = serializers.IntegerField()


class InboxResult(serializers.Serializer):
    id = serializers.CharField()


class ExecutionPage(serializers.Serializer):
    """One page of executions, newest first; ``next`` is the next page's URL, or null at the end."""

    results = ExecutionSerializer(many=True)
    next = serializers.URLField(allow_null=True)
