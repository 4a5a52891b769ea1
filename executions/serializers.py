"""The API's shapes: what a request may carry, and how rows are written out. No logic here:
validation of meaning (quotas, states, schemas) belongs to the services.

The OpenAPI schema is made from these same classes, so what a request serializer refuses the
schema forbids: unknown fields (``additionalProperties: false``), wrong JSON types (strings are
not numbers, numbers are not booleans), ranges and lengths.
"""

from __future__ import annotations

from typing import Any, ClassVar

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from executions.blueprints.definition import NAME as BLUEPRINT_NAME
from executions.kernel.events import iso_timestamp
from executions.models import Artifact, Execution, ExecutionEvent, Step


class StrictSerializer(serializers.Serializer):
    """Refuses a body that is not an object, and fields it does not know (a typo must not pass).
    ``schema_extra`` adds to its schema what its fields alone cannot say (give one of two)."""

    schema_extra: ClassVar[dict[str, Any]] = {}

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        unknown = sorted(set(data) - set(self.fields))
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class StrictSchema(OpenApiSerializerExtension):
    """What the OpenAPI schema says of a StrictSerializer: no properties but its fields."""

    target_class = StrictSerializer
    match_subclasses = True

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        schema = auto_schema._map_basic_serializer(self.target, direction)
        form = self.target if isinstance(self.target, type) else type(self.target)
        if not form.__dict__.get("__doc__"):
            schema.pop("description", None)  # StrictSerializer's own, not this request's
        return {**schema, "additionalProperties": False, **self.target.schema_extra}


def require_bodies(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """A drf-spectacular post-processing hook: a request body that no empty object satisfies (one of
    its forms must be given, as with ``schema_extra``'s oneOf) is required, which drf-spectacular
    infers from required fields alone."""
    schemas = result.get("components", {}).get("schemas", {})

    def needs_something(schema: dict[str, Any]) -> bool:
        if "$ref" in schema:
            return needs_something(schemas.get(schema["$ref"].rsplit("/", 1)[-1], {}))
        if schema.get("required") or schema.get("minProperties", 0) > 0:
            return True
        branches = schema.get("oneOf") or schema.get("anyOf") or []
        return bool(branches) and all(needs_something(branch) for branch in branches)

    for path in result.get("paths", {}).values():
        for operation in path.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if body and any(needs_something(media.get("schema", {})) for media in body.get("content", {}).values()):
                body["required"] = True
    return result


class TextField(serializers.CharField):
    """A string, and only a string: DRF's CharField would turn 5 into "5" (and trim " x" to "x",
    which the schema does not say)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer, and only that: DRF's IntegerField would take "1", 1.0 and true."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    """A JSON number, and only that: DRF's FloatField would take "0.5" and true."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """true or false, and only that: DRF's BooleanField would take "yes", 1 and "on"."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


@extend_schema_field({"type": "string", "pattern": BLUEPRINT_NAME.pattern})
class BlueprintNameField(TextField):
    """A name for a new blueprint: lowercase letters, digits, '.', '_' and '-', 1 to 100 of them."""

    def to_internal_value(self, data: Any) -> str:
        name = super().to_internal_value(data)
        if not BLUEPRINT_NAME.fullmatch(name):
            raise serializers.ValidationError(
                "a blueprint name is 1 to 100 characters: lowercase letters, digits, '.', '_' and '-', "
                "starting with a letter or a digit"
            )
        return name


# Versions are stored as 32-bit integers; a larger one is no version at all.
MAX_VERSION = 2**31 - 1


class AnyJSONField(serializers.JSONField):
    """Any JSON value, null included."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_null", True)
        super().__init__(**kwargs)


# --- requests ------------------------------------------------------------------------------------


class SubmitRequest(StrictSerializer):
    blueprint = TextField(max_length=200)
    version = StrictIntegerField(required=False, min_value=1, max_value=MAX_VERSION)
    input = AnyJSONField(required=False, default=dict)
    idempotency_key = TextField(required=False, max_length=200)
    metadata = serializers.DictField(required=False, child=AnyJSONField())
    webhook = TextField(
        required=False, max_length=2000, help_text="a URL POSTed to, signed, when it ends (see /webhooks)"
    )


class ReasonRequest(StrictSerializer):
    reason = TextField(required=False, allow_blank=True, max_length=500, default="")


class InputRequest(StrictSerializer):
    input = AnyJSONField(required=False, default=None)
    approve = StrictBooleanField(required=False, allow_null=True, default=None)


# Inbox messages: their kind decides their fields (the service checks their meaning).


class GuidanceMessage(StrictSerializer):
    kind = serializers.ChoiceField(choices=["guidance"])
    content = TextField(allow_blank=True, help_text="what the next step should know")
    priority = serializers.ChoiceField(choices=["normal", "high"], required=False)
    sender = TextField(required=False, max_length=200, help_text="replaced by who posted it (the key or the user)")


class EvidenceMessage(StrictSerializer):
    kind = serializers.ChoiceField(choices=["evidence"])
    source = TextField(max_length=200)
    title = TextField(max_length=200)
    content = TextField(required=False, allow_blank=True)
    confidence = StrictFloatField(required=False, min_value=0, max_value=1)
    impact = serializers.ChoiceField(
        choices=["informational", "supports_plan", "requires_change", "contradicts_plan"], required=False
    )


class A2AMessage(StrictSerializer):
    kind = serializers.ChoiceField(choices=["a2a"])
    from_agent = TextField(max_length=200)
    message_type = TextField(max_length=200)
    payload = AnyJSONField(required=False)


INBOX_MESSAGES: dict[str, type[StrictSerializer]] = {
    "guidance": GuidanceMessage,
    "evidence": EvidenceMessage,
    "a2a": A2AMessage,
}


class InboxRequest(serializers.Serializer):
    """An inbox message, checked as its kind says (the schema: one of the three, by ``kind``)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["the body must be a JSON object"]})
        kind = data.get("kind")
        if not isinstance(kind, str) or kind not in INBOX_MESSAGES:
            raise serializers.ValidationError({"kind": [f"must be one of {', '.join(INBOX_MESSAGES)}"]})
        message = INBOX_MESSAGES[kind](data=data)
        message.is_valid(raise_exception=True)
        return dict(message.validated_data)


class InboxSchema(OpenApiSerializerExtension):
    """What the OpenAPI schema says of an inbox message: one of the three kinds, told by ``kind``."""

    target_class = InboxRequest

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        refs = {kind: auto_schema.resolve_serializer(form, direction).ref for kind, form in INBOX_MESSAGES.items()}
        return {
            "type": "object",
            "properties": {"kind": {"type": "string", "enum": list(INBOX_MESSAGES)}},
            "required": ["kind"],
            "oneOf": list(refs.values()),
            "discriminator": {"propertyName": "kind", "mapping": {kind: ref["$ref"] for kind, ref in refs.items()}},
        }


class BulkCancelFilter(StrictSerializer):
    schema_extra = {"minProperties": 1}

    state = serializers.ChoiceField(choices=Execution.State.choices, required=False)
    blueprint = TextField(required=False, max_length=200)


class BulkCancelRequest(StrictSerializer):
    schema_extra = {"oneOf": [{"required": ["ids"]}, {"required": ["filter"]}]}

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
    origin = serializers.ChoiceField(choices=Execution.Origin.choices, required=False, help_text="what started them")
    source = TextField(required=False, max_length=40, help_text="the reruns and forks of this execution")
    cursor = TextField(required=False, help_text="from the `next` of the page before")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=200, help_text="a page (50)")


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
            "usage", "metadata", "parent_id", "origin", "source_id", "schedule_id", "idempotency_key", "created_at",
            "started_at", "ended_at", "last_seq",
        ]  # fmt: skip
        read_only_fields = fields

    def get_last_seq(self, execution: Execution) -> int:
        return int(getattr(execution, "last_seq", None) or 0)


class ExecutionSummarySerializer(ExecutionSerializer):
    """An execution as live lists show it: no input, output or error."""

    class Meta(ExecutionSerializer.Meta):
        fields = [
            "id", "blueprint", "version", "state", "wait_reason", "parent_id", "origin", "source_id", "schedule_id",
            "created_at", "started_at", "ended_at", "last_seq",
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
    name = BlueprintNameField()
    definition = serializers.DictField(child=AnyJSONField())


class BlueprintUpdateRequest(StrictSerializer):
    definition = serializers.DictField(child=AnyJSONField())


class VersionQuery(StrictSerializer):
    version = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_VERSION, help_text="a version (default: the latest)"
    )


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
