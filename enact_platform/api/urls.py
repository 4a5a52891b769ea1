"""``/api/v1/``: the REST contract of API.md, path by path."""

from __future__ import annotations

from django.urls import path

from executions import api as executions
from executions import api_derived as derived
from executions import api_schedules as schedules
from executions import api_webhooks as webhooks
from tenants import api as tenants

urlpatterns = [
    path("tenant", tenants.TenantView.as_view(), name="tenant"),
    path("blueprints", executions.BlueprintListView.as_view(), name="blueprints"),
    path("blueprints/<str:name>", executions.BlueprintDetailView.as_view(), name="blueprint"),
    path("executions", executions.ExecutionListView.as_view(), name="executions"),
    # Before the id routes: "cancel" is not an execution id.
    path("executions/cancel", executions.BulkCancelView.as_view(), name="executions-cancel"),
    path("executions/<str:execution_id>", executions.ExecutionDetailView.as_view(), name="execution"),
    path("executions/<str:execution_id>/steps", executions.ExecutionStepsView.as_view(), name="execution-steps"),
    path("executions/<str:execution_id>/events", executions.ExecutionEventsView.as_view(), name="execution-events"),
    path("executions/<str:execution_id>/stream", executions.ExecutionStreamView.as_view(), name="execution-stream"),
    path(
        "executions/<str:execution_id>/artifacts",
        executions.ExecutionArtifactsView.as_view(),
        name="execution-artifacts",
    ),
    path("executions/<str:execution_id>/cancel", executions.ExecutionCancelView.as_view(), name="execution-cancel"),
    path("executions/<str:execution_id>/pause", executions.ExecutionPauseView.as_view(), name="execution-pause"),
    path("executions/<str:execution_id>/resume", executions.ExecutionResumeView.as_view(), name="execution-resume"),
    path("executions/<str:execution_id>/input", executions.ExecutionInputView.as_view(), name="execution-input"),
    path("executions/<str:execution_id>/inbox", executions.ExecutionInboxView.as_view(), name="execution-inbox"),
    path("executions/<str:execution_id>/rerun", derived.ExecutionRerunView.as_view(), name="execution-rerun"),
    path("executions/<str:execution_id>/fork", derived.ExecutionForkView.as_view(), name="execution-fork"),
    path("schedules", schedules.ScheduleListView.as_view(), name="schedules"),
    path("schedules/<str:schedule_id>", schedules.ScheduleDetailView.as_view(), name="schedule"),
    path("schedules/<str:schedule_id>/pause", schedules.SchedulePauseView.as_view(), name="schedule-pause"),
    path("schedules/<str:schedule_id>/resume", schedules.ScheduleResumeView.as_view(), name="schedule-resume"),
    path("webhooks", webhooks.WebhookListView.as_view(), name="webhooks"),
    path("webhooks/signing-secret", webhooks.SigningSecretView.as_view(), name="webhooks-signing-secret"),
    path("webhooks/deliveries", webhooks.DeliveryListView.as_view(), name="webhooks-deliveries"),
    path("webhooks/<str:webhook_id>", webhooks.WebhookDetailView.as_view(), name="webhook"),
    path("webhooks/<str:webhook_id>/deliveries", webhooks.WebhookDeliveriesView.as_view(), name="webhook-deliveries"),
    path("webhooks/<str:webhook_id>/rotate-secret", webhooks.WebhookRotateSecretView.as_view(), name="webhook-rotate"),
    path("artifacts/<str:artifact_id>", executions.ArtifactDetailView.as_view(), name="artifact"),
    path("artifacts/<str:artifact_id>/content", executions.ArtifactContentView.as_view(), name="artifact-content"),
]
