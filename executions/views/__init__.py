"""The dashboard: server-rendered pages for a tenant's people, one module per page. Pages render
what is stored; the page's script (``static/executions/dashboard/``, ES modules the browser loads
as they are, no build step) keeps them live over the websockets."""

from executions.views.detail import execution_page
from executions.views.listing import executions_page
from executions.views.schedules import schedule_control, schedules_page
from executions.views.usage import usage_page
from executions.views.webhooks import webhooks_page

__all__ = ["execution_page", "executions_page", "schedule_control", "schedules_page", "usage_page", "webhooks_page"]
