"""The operators' admin for executions: read-only pages, and cancel / pause / resume through
``executions.services``, in bulk from the changelist or one at a time from the change page.

Rows are scoped to the requesting user's tenants as in ``tenants.admin_scoping``; the execution rows are
projections of the event log, so the admin never writes them itself.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import display_for_field, quote, unquote
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from enact_platform.errors import PlatformError
from executions import admin_webhooks  # noqa: F401  # registers the webhooks' admin pages
from executions.live.groups import STATE_AFTER_EVENT
from executions.models import Artifact, Blueprint, BlueprintVersion, Execution, ModelPrice, Schedule, Step
from executions.selectors import blueprint_version_outline, execution_events, last_event_seq
from executions.services.blueprints import blueprint_problems, blueprint_save
from executions.services.controls import execution_cancel, execution_pause, execution_resume
from executions.services.schedules import EDITABLE as schedule_fields_editable
from executions.services.schedules import next_runs as schedule_next_runs
from executions.services.schedules import schedule_apply, schedule_pause, schedule_resume
from tenants.admin_scoping import NOT_ALLOWED, TenantScopedAdmin, report, visible_tenant_ids
from tenants.models import Tenant

EVENT_LOG_LIMIT = 1000
EVENT_DATA_CHARS = 1000
STEP_ROWS_LIVE = 1000  # step rows the change page keeps current
# Tenants whose new executions the list follows: one socket each, counted against the user's
# ENACT_MAX_LIVE_CONNECTIONS, so a few, leaving the rest for the user's other pages.
LIST_FEEDS = 5


# --- controls ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Control:
    action: str
    label: str
    service: Callable[..., Execution]
    applies: Callable[[Execution], bool]
    confirm: str = ""


CONTROLS = {
    "cancel": Control(
        "cancel",
        "Cancel",
        execution_cancel,
        lambda e: not e.is_terminal,
        confirm="Cancel this execution? This cannot be undone.",
    ),
    "pause": Control("pause", "Pause", execution_pause, lambda e: e.state == Execution.State.RUNNING),
    "resume": Control(
        "resume", "Resume", execution_resume, lambda e: e.state in (Execution.State.PAUSED, Execution.State.WAITING)
    ),
}


def _outcome(action: str, after: Execution) -> str:
    """How a control that the service accepted left the execution, for the operator (one short
    phrase: the bulk actions list the executions after it)."""
    if action == "cancel":
        if after.state == Execution.State.CANCELLED:
            return "Cancelled"
        return f"Already {after.state}" if after.is_terminal else "Cancel requested"
    return "Pause requested" if action == "pause" else "Resume requested"


# What follows each outcome, said in full on the change page (and by its script, after a control
# sent over the socket and when the execution then changes state).
OUTCOME_DETAIL = {
    "Cancel requested": "The running step stops at its next check.",
    "Pause requested": "It pauses at the next step boundary.",
    "Resume requested": "It goes on from its checkpoint.",
}
LIVE_WORDING = {
    "cancelled": "Cancelled.",
    "cancel_requested": "Cancel requested; the running step stops at its next check.",
    "already_ended": "It had already ended ({state}); there was nothing to cancel.",
    "pause_requested": "Pause requested; it pauses at the next step boundary.",
    "paused": "Paused at the step boundary.",
    "resume_requested": "Resume requested; it goes on from its checkpoint.",
    "resumed": "Resumed; it is running again.",
    "failed": "The execution failed.",
    "completed": "The execution completed.",
}


def run_control(request: HttpRequest, execution: Execution, action: str) -> str:
    """Apply one control through its service; returns the outcome, raises PlatformError."""
    after = CONTROLS[action].service(
        tenant=execution.tenant, execution_id=execution.pk, actor=request.user.get_username()
    )
    return _outcome(action, after)


def error_in_words(error: Any) -> str:
    """An execution's or a step's error as a sentence: its message, then where and what kind."""
    if not error:
        return ""
    if not isinstance(error, dict):
        return str(error)
    text = str(error.get("message") or "failed without a message").rstrip(".") + "."
    where = []
    if error.get("step_id"):
        where.append(f"in step {error['step_id']}")
    if error.get("attempt"):
        where.append(f"on attempt {error['attempt']}")
    if where:
        text += f" It failed {' '.join(where)}."
    if error.get("category"):
        text += f" Kind: {str(error['category']).replace('_', ' ')}"
        text += " (retryable)." if error.get("retryable") else "."
    return text


# --- inlines: parts of the execution, read-only -----------------------------------------------


class ReadOnlyExecutionPartInline(admin.TabularInline):
    """Steps and artifacts are written by the kernel; seeing the execution is seeing them."""

    extra = 0
    can_delete = False
    show_change_link = False

    def has_view_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return request.user.has_perm("executions.view_execution") or request.user.has_perm(
            "executions.change_execution"
        )

    def has_add_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False


class StepInline(ReadOnlyExecutionPartInline):
    model = Step
    ordering = ["position"]
    fields = [
        "position",
        "id",
        "name",
        "step_type",
        "state",
        "attempt",
        "parent_step_id",
        "duration_ms",
        "started_at",
        "ended_at",
        "error_message",
    ]
    readonly_fields = fields

    @admin.display(description="error")
    def error_message(self, obj: Step) -> str:
        return error_in_words(obj.error) or "-"


class ArtifactInline(ReadOnlyExecutionPartInline):
    model = Artifact
    fk_name = "execution"
    fields = ["id", "name", "artifact_type", "content_type", "size", "step_id", "sha256", "created_at"]
    readonly_fields = fields


# --- executions -------------------------------------------------------------------------------


def _compact(data: Any) -> str:
    text = json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False, default=str)
    return text if len(text) <= EVENT_DATA_CHARS else text[:EVENT_DATA_CHARS] + "…"


@admin.register(Execution)
class ExecutionAdmin(TenantScopedAdmin):
    list_display = ["id", "tenant", "blueprint", "state", "wait_reason", "created_at", "started_at", "ended_at"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter), "state", "blueprint"]
    date_hierarchy = "created_at"
    search_fields = ["^id", "blueprint"]
    list_select_related = ["tenant"]
    # Counting every execution on each page load gets slow; the filtered count is enough.
    show_full_result_count = False
    actions = ["cancel", "pause", "resume"]
    inlines = [StepInline, ArtifactInline]
    fieldsets = [
        (None, {"fields": ["id", "tenant", "blueprint", "blueprint_version", "state", "wait_reason", "wait_detail"]}),
        ("Data", {"fields": ["input", "output", "error_message", "usage", "metadata"]}),
        ("Origin", {"fields": ["parent", "created_by", "created_by_key", "idempotency_key"]}),
        ("Times", {"fields": ["created_at", "started_at", "ended_at", "updated_at"]}),
        (
            "Worker",
            {
                "classes": ["collapse"],
                "fields": [
                    "lease_owner",
                    "lease_expires_at",
                    "claims",
                    "cancel_requested_at",
                    "cancel_reason",
                    "resume_requested",
                    "resume_input",
                ],
            },
        ),
        ("Event log", {"fields": ["event_log"]}),
    ]
    readonly_fields = [name for _, options in fieldsets for name in options["fields"]]

    # Executions change only through their services (the control actions below).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    @admin.display(description="error")
    def error_message(self, obj: Execution) -> str:
        return error_in_words(obj.error) or "-"

    @admin.display(description="events")
    def event_log(self, obj: Execution) -> SafeString:
        events = execution_events(tenant=obj.tenant, execution_id=obj.pk, limit=EVENT_LOG_LIMIT + 1)
        if not events:
            return format_html("<p>{}</p>", "No events yet.")
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            (
                (e.seq, e.type, e.step_id, e.timestamp.isoformat(timespec="milliseconds"), _compact(e.data))
                for e in events[:EVENT_LOG_LIMIT]
            ),
        )
        table = format_html(
            '<table class="event-log"><thead><tr><th>seq</th><th>type</th><th>step</th><th>timestamp</th>'
            "<th>data</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )
        if len(events) > EVENT_LOG_LIMIT:
            return format_html("{}<p>Only the first {} events are shown.</p>", table, EVENT_LOG_LIMIT)
        return table

    # -- bulk actions --

    @admin.action(description="Cancel selected executions", permissions=["operate"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Execution]) -> None:
        self._control_many(request, queryset, "cancel")

    @admin.action(description="Pause selected executions", permissions=["operate"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Execution]) -> None:
        self._control_many(request, queryset, "pause")

    @admin.action(description="Resume selected executions", permissions=["operate"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Execution]) -> None:
        self._control_many(request, queryset, "resume")

    def _control_many(self, request: HttpRequest, executions: Iterable[Execution], action: str) -> None:
        done: dict[str, list[str]] = {}
        failed: list[tuple[str, str]] = []
        for execution in executions:
            if not self.has_operate_permission(request, execution):
                failed.append((execution.pk, NOT_ALLOWED))
                continue
            try:
                outcome = run_control(request, execution, action)
            except PlatformError as exc:
                failed.append((execution.pk, exc.message))
            else:
                done.setdefault(outcome, []).append(execution.pk)
        report(request, done, failed)

    # -- buttons on the change page --

    def get_urls(self) -> list[URLPattern]:
        info = (self.opts.app_label, self.opts.model_name)
        controls = [
            path(
                f"<path:object_id>/{action}/",
                self.admin_site.admin_view(self.control_view),
                {"action": action},
                name="{}_{}_{}".format(*info, action),
            )
            for action in CONTROLS
        ]
        live = path(
            "<path:object_id>/live/",
            self.admin_site.admin_view(self.live_view),
            name="{}_{}_live".format(*info),
        )
        # Before the defaults: their catch-all "<path:object_id>/" would swallow these.
        return [*controls, live, *super().get_urls()]

    def live_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """The change page's fields and step rows as they are now, written as the page writes them;
        its script asks again whenever an event changes the execution or a step."""
        execution = self.get_object(request, unquote(object_id))
        if execution is None or not self.has_view_permission(request, execution):
            raise Http404("execution not found")
        return JsonResponse(self.live_fields(request, execution))

    def live_fields(self, request: HttpRequest, execution: Execution) -> dict[str, Any]:
        def shown(name: str, value: Any = None) -> str:
            field = Execution._meta.get_field(name)
            value = getattr(execution, name) if value is None else value
            return str(display_for_field(value, field, self.get_empty_value_display()))

        step_field = {f.name: f for f in Step._meta.get_fields() if hasattr(f, "attname")}
        steps = []
        # The latest steps (those still changing), in their order; the page keeps its rows of
        # earlier ones where they are.
        latest = Step.objects.filter(execution=execution).order_by("-position")[:STEP_ROWS_LIVE]
        for step in reversed(list(latest)):
            steps.append(
                {
                    "id": step.pk,
                    "cells": {
                        name: str(display_for_field(getattr(step, name), step_field[name], "-"))
                        for name in StepInline.fields
                        if name in step_field and name != "id"
                    }
                    | {"error_message": error_in_words(step.error) or "-"},
                }
            )
        can_operate = self.has_operate_permission(request, execution)
        return {
            "state": execution.state,
            "wait_reason": execution.wait_reason or "",
            "fields": {
                "state": shown("state"),
                "wait_reason": shown("wait_reason"),
                "started_at": shown("started_at"),
                "ended_at": shown("ended_at"),
                "updated_at": shown("updated_at"),
                "error_message": error_in_words(execution.error) or "-",
            },
            "controls": [a for a, c in CONTROLS.items() if c.applies(execution)] if can_operate else [],
            "steps": steps,
        }

    def control_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """One control from the change page: POST only (admin_view adds CSRF protection)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        execution = self.get_object(request, unquote(object_id))
        if execution is None:
            raise Http404("execution not found")
        if not self.has_operate_permission(request, execution):
            raise PermissionDenied
        try:
            outcome = run_control(request, execution, action)
        except PlatformError as exc:
            messages.error(request, f"{execution.pk}: {exc.message}")
        else:
            detail = OUTCOME_DETAIL.get(outcome)
            messages.success(request, f"{outcome}: {execution.pk}." + (f" {detail}" if detail else ""))
        return HttpResponseRedirect(self._change_url(execution))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        # What the list's script needs to show new executions as they come: the feeds to follow
        # (the tenants this user sees) and when the page was made.
        ids = visible_tenant_ids(request)
        tenants = Tenant.objects.order_by("slug") if ids is None else Tenant.objects.filter(pk__in=ids)
        context = {
            "executions_live": {
                "tenants": list(tenants.values_list("slug", flat=True)[:LIST_FEEDS]),
                "since": timezone.now().isoformat(),
                "filtered": bool(request.GET.keys() - {"o"}),
                "change_url": reverse(
                    f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                    args=["__id__"],
                    current_app=self.admin_site.name,
                ),
            },
            **(extra_context or {}),
        }
        return super().changelist_view(request, context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The last event's seq, read before the execution itself: the page's socket sends the
        # events after it, so one stored while the page is made reaches it rather than being lost
        # between the two reads.
        request.execution_last_seq = last_event_seq(execution_id=unquote(object_id))  # type: ignore[attr-defined]
        return super().change_view(request, object_id, form_url, extra_context)

    def _change_url(self, execution: Execution, action: str = "change") -> str:
        name = f"admin:{self.opts.app_label}_{self.opts.model_name}_{action}"
        return reverse(name, args=[quote(execution.pk)], current_app=self.admin_site.name)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Execution | None = None,
    ) -> HttpResponse:
        controls = []
        if obj is not None and self.has_operate_permission(request, obj):
            controls = [
                {"action": c.action, "label": c.label, "confirm": c.confirm, "url": self._change_url(obj, c.action)}
                for c in CONTROLS.values()
                if c.applies(obj)
            ]
        context["execution_controls"] = controls
        if obj is not None:
            seq = getattr(request, "execution_last_seq", None)  # read before obj (change_view)
            # What the page's script needs to follow the execution live (static/executions/admin_live.js).
            context["execution_live"] = {
                "id": obj.pk,
                "tenant": obj.tenant.slug,
                "last_seq": last_event_seq(execution_id=obj.pk) if seq is None else seq,
                "states": STATE_AFTER_EVENT,
                "live_url": self._change_url(obj, "live"),
                "controls": [{"action": c.action, "label": c.label, "confirm": c.confirm} for c in CONTROLS.values()]
                if self.has_operate_permission(request, obj)
                else [],
                "wording": LIVE_WORDING,
            }
        return super().render_change_form(request, context, add, change, form_url, obj)


# --- blueprints and model prices ------------------------------------------------------------------


class IndentedJSONField(forms.JSONField):
    """JSON in a textarea as people write it: indented, keys in their order."""

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, forms.fields.InvalidJSONInput):
            return value
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)


class BlueprintForm(forms.ModelForm):
    definition = IndentedJSONField(
        widget=forms.Textarea(attrs={"rows": 30, "cols": 100, "class": "vLargeTextField", "spellcheck": "false"}),
        help_text="The JSON definition: entry, nodes (each with a kind and its config), edges, routes, "
        "input_schema. Saving makes a new version; executions keep the version they ran.",
    )

    class Meta:
        model = Blueprint
        fields = ["tenant", "name"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        tenant, name = (
            data.get("tenant") or getattr(self.instance, "tenant", None),
            data.get("name") or self.instance.name,
        )
        definition = data.get("definition")
        if tenant is None or not name or definition is None:
            return data
        for problem in blueprint_problems(tenant=tenant, name=name, definition=definition):
            self.add_error("definition", f"{problem.path}: {problem.message}" if problem.path else problem.message)
        return data


class BlueprintVersionInline(admin.TabularInline):
    model = BlueprintVersion
    fields = ["version", "created_at", "created_by", "nodes"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False
    ordering = ["-version"]

    @admin.display(description="nodes")
    def nodes(self, obj: BlueprintVersion) -> str:
        nodes = obj.definition.get("nodes", {})
        return ", ".join(f"{name} ({node.get('kind')})" for name, node in nodes.items())

    # Versions are written by the service only; here they are shown.
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Blueprint)
class BlueprintAdmin(TenantScopedAdmin):
    """Blueprints are saved through ``blueprint_save``: each save of the form is a new version."""

    form = BlueprintForm
    list_display = ["name", "tenant", "latest_version", "description", "updated_at"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "description"]
    list_select_related = ["tenant"]
    inlines = [BlueprintVersionInline]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else ["tenant", "name", "latest_version"]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change, **kwargs)
        if obj is not None:
            latest = obj.versions.order_by("-version").first()
            form.base_fields["definition"].initial = latest.definition if latest else {}
        return form

    def save_model(self, request: HttpRequest, obj: Blueprint, form: forms.ModelForm, change: bool) -> None:
        saved = blueprint_save(
            tenant=obj.tenant, name=obj.name, definition=form.cleaned_data["definition"], user=request.user
        )
        obj.pk, obj.latest_version = saved.blueprint.pk, saved.version
        obj._state.adding = False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # executions point at their versions; a blueprint is retired, not erased

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        blueprint = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if blueprint is not None:
            context["blueprint_versions"] = blueprint_versions_context(blueprint, request.GET)
        return super().change_view(request, object_id, form_url, context)


def _version_number(value: Any, numbers: list[int], default: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return default
    return number if number in numbers else default


def definition_text(definition: Any) -> str:
    """A definition as people read it: indented, keys in the order they were written."""
    return json.dumps(definition, indent=2, ensure_ascii=False, default=str)


def definition_diff(old: Any, new: Any, old_name: str, new_name: str) -> list[dict[str, str]]:
    """A line diff of two definitions (keys sorted, so that moving a key is no change), each line
    with its kind: "add", "del", "hunk", "file" or "same"."""

    def lines(value: Any) -> list[str]:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str).splitlines()

    kinds = {"+": "add", "-": "del", "@": "hunk", " ": "same"}
    diff = difflib.unified_diff(lines(old), lines(new), old_name, new_name, n=3, lineterm="")
    out = []
    for line in diff:
        kind = "file" if line.startswith(("+++", "---")) else kinds.get(line[:1], "same")
        out.append({"kind": kind, "text": line})
    return out


def blueprint_versions_context(blueprint: Blueprint, query: Any) -> dict[str, Any]:
    """What the blueprint's page shows of its versions: one version's definition (``?version=``,
    the latest by default) as indented JSON and as a picture, and the lines that changed between
    two versions (``?from=`` and ``?to=``, the one before the latest and the latest by default)."""
    versions = list(blueprint.versions.select_related("blueprint", "created_by").order_by("-version"))
    if not versions:
        return {"versions": []}
    by_number = {v.version: v for v in versions}
    numbers = list(by_number)
    shown = by_number[_version_number(query.get("version"), numbers, numbers[0])]
    to = by_number[_version_number(query.get("to"), numbers, numbers[0])]
    before = numbers[1] if len(numbers) > 1 else numbers[0]
    old = by_number[_version_number(query.get("from"), numbers, before)]
    definition = shown.definition if isinstance(shown.definition, dict) else {"definition": shown.definition}
    return {
        "versions": versions,
        "shown": shown,
        "text": definition_text(shown.definition),
        "sections": [{"key": key, "text": definition_text(value)} for key, value in definition.items()],
        "outline": blueprint_version_outline(version=shown),
        "from": old,
        "to": to,
        "diff": definition_diff(old.definition, to.definition, f"version {old.version}", f"version {to.version}")
        if old.version != to.version
        else None,
    }


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    """Prices per model: ``llm`` nodes record the cost of their tokens from here. Superusers set them."""

    list_display = ["model", "input_usd_per_million", "output_usd_per_million", "updated_at"]
    search_fields = ["model"]


# --- schedules ------------------------------------------------------------------------------------


class ScheduleForm(forms.ModelForm):
    input = forms.JSONField(required=False, widget=forms.Textarea(attrs={"rows": 4, "cols": 80}))

    class Meta:
        model = Schedule
        fields = [
            "tenant",
            "name",
            "blueprint",
            "blueprint_version",
            "input",
            "cron",
            "timezone",
            "interval_seconds",
            "overlap",
            "paused",
        ]

    def clean(self) -> dict[str, Any]:
        """Checked as the API checks it (``schedule_apply``), which also sets the next firing."""
        data = super().clean() or {}
        tenant = data.get("tenant") or getattr(self.instance, "tenant", None)
        if tenant is None or self.errors:
            return data
        self.instance.tenant = tenant
        values = {name: data.get(name) for name in schedule_fields_editable}
        values["version"] = data.get("blueprint_version")
        values["cron"] = values["cron"] or ""
        try:
            schedule_apply(self.instance, values)
        except PlatformError as exc:
            field = exc.details.get("field")
            self.add_error(field if field in self.fields else None, exc.message)
        return data


@admin.register(Schedule)
class ScheduleAdmin(TenantScopedAdmin):
    """A tenant's schedules, checked and timed as through the API; pause and resume in bulk."""

    form = ScheduleForm
    list_display = ["name", "tenant", "blueprint", "timing", "overlap", "paused", "next_fire_at", "last_fired_at"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter), "paused", "overlap"]
    search_fields = ["name", "blueprint"]
    list_select_related = ["tenant"]
    readonly_fields = ["next_runs", "last_fired_at", "last_error", "created_at", "updated_at"]
    actions = ["pause", "resume"]

    @admin.display(description="when")
    def timing(self, obj: Schedule) -> str:
        return f"{obj.cron} ({obj.timezone})" if obj.cron else f"every {obj.interval_seconds} s"

    @admin.display(description="next times")
    def next_runs(self, obj: Schedule) -> str:
        return ", ".join(t.isoformat() for t in schedule_next_runs(obj)) if obj.pk else "-"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self.readonly_fields + (["tenant"] if obj is not None else [])

    @admin.action(description="Pause the selected schedules")
    def pause(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_paused(request, queryset, True)

    @admin.action(description="Resume the selected schedules")
    def resume(self, request: HttpRequest, queryset: QuerySet[Schedule]) -> None:
        self._set_paused(request, queryset, False)

    def _set_paused(self, request: HttpRequest, queryset: QuerySet[Schedule], paused: bool) -> None:
        done: list[str] = []
        failed: list[tuple[str, str]] = []
        for schedule in queryset.select_related("tenant"):
            if not self.has_change_permission(request, schedule):
                failed.append((schedule.name, NOT_ALLOWED))
                continue
            change = schedule_pause if paused else schedule_resume
            change(tenant=schedule.tenant, schedule_id=schedule.pk)
            done.append(schedule.name)
        report(request, {"Paused" if paused else "Resumed": done}, failed)
