"""The dashboard's pages."""

from __future__ import annotations

from django.urls import path

from executions import views
from executions.views.operator import operator_executions_page

app_name = "dashboard"
urlpatterns = [
    path("", views.executions_page, name="executions"),
    path("executions/<str:execution_id>/", views.execution_page, name="execution"),
    path(
        "executions/<str:execution_id>/steps/<str:step_id>.json",
        views.detail.execution_step_detail,
        name="execution-step",
    ),
    path("operator/executions/", operator_executions_page, name="operator-executions"),
    path("usage/", views.usage_page, name="usage"),
    path("schedules/", views.schedules_page, name="schedules"),
    path("schedules/<str:schedule_id>/<str:action>/", views.schedule_control, name="schedule-control"),
    path("webhooks/", views.webhooks_page, name="webhooks"),
]
