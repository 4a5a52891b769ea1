"""Every tenant's executions on one list, for the platform's staff: superusers see every tenant,
other staff the tenants they belong to (as the admin shows them); anyone else is refused."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from executions.views.common import no_tenant, render_page, seat_for
from executions.views.listing import list_context, partial_rows, read_filters
from tenants.admin_scoping import may_operate, memberships_of
from tenants.models import Tenant

LIVE_TENANTS = 5  # tenant feeds the page follows at once (each is a socket counted against the user)


@login_required
def operator_executions_page(request: HttpRequest) -> HttpResponse:
    user = request.user
    if not (user.is_staff or user.is_superuser):
        raise PermissionDenied("the all-tenants list is for the platform's staff")
    seat = seat_for(request)
    if seat is None:
        return no_tenant(request)
    visible = Tenant.objects.order_by("slug")
    operable: set[int] | None = None
    if not user.is_superuser:
        memberships = memberships_of(request)
        visible = visible.filter(pk__in=list(memberships))
        operable = {tenant_id for tenant_id, m in memberships.items() if may_operate(m)}
    choices = list(visible)
    filters = read_filters(request.GET)
    tenants = [t for t in choices if t.slug == filters.tenant] if filters.tenant else visible
    table = {"select": bool(user.is_superuser or operable), "tenant_column": True, "operable": operable}
    if request.GET.get("partial") == "rows":
        return partial_rows(request, filters, tenants, table)
    context = list_context(request, filters, tenants)
    shown = list(dict.fromkeys(e.tenant.slug for e in context["executions"]))
    following = [t.slug for t in tenants] if filters.tenant else (shown + [t.slug for t in choices])
    context["live"]["tenants"] = list(dict.fromkeys(following))[:LIVE_TENANTS]
    context["live"]["operator"] = True
    return render_page(
        request,
        "dashboard/executions.html",
        seat,
        operator={"tenants": choices, "limited": not user.is_superuser},
        blueprints=None,
        table=table,
        parent=None,
        **context,
    )
