"""The executions list and its start form: filters kept in the query string, a pager with the
total, the run tree (children under their parent), and the rows the page's script asks for as
the tenant's feed tells it of changes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.shortcuts import redirect
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from executions import selectors
from executions.catalog import blueprint_catalog
from executions.kernel.ids import IdKind, is_valid_id
from executions.models import Execution
from executions.views.common import STATES, no_tenant, render_page, seat_for

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
CHILDREN_INLINE = 50  # children shown under their parent; the rest on the parent's own list
ROWS_ASKED_AT_ONCE = max(PAGE_SIZES)  # a whole page's rows in one look

WAIT_WORDS = {
    "approval": "waits for approval",
    "user_input": "waits for input",
    "rate_limit": "waits out a rate limit",
    "external": "waits for an external event",
    "checkpoint": "waits at a checkpoint",
    "cost_threshold": "waits: over its cost threshold",
    "memory_pressure": "waits for memory",
    "sub_agent": "waits for a child execution",
}


@dataclass(frozen=True)
class ListFilters:
    """What the reader asked for, read from the query string (unknown values are ignored)."""

    state: str = ""
    blueprint: str = ""
    q: str = ""
    created_from: str = ""  # as typed (datetime-local), in ``tz``
    created_to: str = ""
    tz: str = "UTC"
    parent: str = ""
    tenant: str = ""  # the all-tenants view's tenant filter (a slug)
    size: int = DEFAULT_PAGE_SIZE

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def created_after(self) -> datetime | None:
        return _moment(self.created_from, self.zone)

    @property
    def created_before(self) -> datetime | None:
        moment = _moment(self.created_to, self.zone)
        if moment is None:
            return None
        # "to 10:30" takes in the whole of that minute, "to 10:30:15" that second; a date, its day.
        typed = re.match(r"[^T]*(T\d\d:\d\d(:\d\d)?(\.\d+)?)?", self.created_to)
        assert typed is not None
        if typed[3]:
            step = timedelta(microseconds=1)
        else:
            step = timedelta(seconds=1) if typed[2] else timedelta(minutes=1) if typed[1] else timedelta(days=1)
        try:
            return _in_range(moment + step)
        except OverflowError:
            return None  # to the end of time: no upper bound

    @property
    def any(self) -> bool:
        return bool(self.state or self.blueprint or self.q or self.created_from or self.created_to or self.tenant)

    def as_data(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "blueprint": self.blueprint,
            "q": self.q,
            "from": self.created_from,
            "to": self.created_to,
            "tz": self.tz,
            "parent": self.parent,
            "tenant": self.tenant,
            "size": self.size,
        }


@cache
def _zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _text(query: QueryDict, key: str, limit: int) -> str:
    """A parameter as text the database takes (no NUL byte), trimmed and cut to ``limit``."""
    return (query.get(key) or "").replace("\x00", "").strip()[:limit]


def read_filters(query: QueryDict) -> ListFilters:
    tz = _text(query, "tz", 100) or "UTC"
    if tz not in _zones():
        tz = "UTC"
    try:
        size = int(query.get("size") or DEFAULT_PAGE_SIZE)
    except ValueError:
        size = DEFAULT_PAGE_SIZE
    return ListFilters(
        state=state if (state := query.get("state") or "") in STATES else "",
        blueprint=_text(query, "blueprint", 200),
        q=_text(query, "q", 200),
        created_from=_typed_moment(query.get("from")),
        created_to=_typed_moment(query.get("to")),
        tz=tz,
        parent=_text(query, "parent", 40),
        tenant=_text(query, "tenant", 100),
        size=size if size in PAGE_SIZES else DEFAULT_PAGE_SIZE,
    )


def _typed_moment(value: str | None) -> str:
    value = (value or "").strip()[:40]
    try:
        return value if value and parse_datetime(value if "T" in value else value + "T00:00") else ""
    except ValueError:
        return ""


def _moment(value: str, zone: ZoneInfo) -> datetime | None:
    """A moment typed in the reader's zone (a date, a datetime-local, or an ISO time with its own
    offset, which wins)."""
    if not value:
        return None
    moment = parse_datetime(value if "T" in value else value + "T00:00")
    if moment is None:
        return None
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)
    try:
        return _in_range(moment)
    except OverflowError:
        return None  # before the first year or after the last the database can hold: no bound


def _in_range(moment: datetime) -> datetime:
    """``moment`` if it is still a moment in UTC (the database keeps UTC); OverflowError if not."""
    moment.astimezone(ZoneInfo("UTC"))
    return moment


def browse(filters: ListFilters, tenants: Any, *, ids: list[str] | None = None) -> QuerySet[Execution]:
    """The rows the filters select among ``tenants``: top-level executions unless a search or a
    parent asks for children too."""
    return selectors.execution_browse(
        tenants=tenants,
        state=filters.state or None,
        blueprint=filters.blueprint or None,
        created_after=filters.created_after,
        created_before=filters.created_before,
        q=filters.q or None,
        parent_id=filters.parent or None,
        top_level=not (filters.q or filters.parent),
        ids=ids,
    )


def decorate(rows: list[Execution]) -> list[Execution]:
    """What a row says in words (its wait, where it came from)."""
    for row in rows:
        row.wait_words = WAIT_WORDS.get(row.wait_reason, row.wait_reason.replace("_", " "))  # type: ignore[attr-defined]
    return rows


def rows_html(request: HttpRequest, rows: list[Execution], table: dict[str, Any], level: int = 0) -> str:
    return render_to_string(
        "dashboard/list/rows.html", {"executions": decorate(rows), "table": table, "level": level}, request=request
    )


def partial_rows(request: HttpRequest, filters: ListFilters, tenants: Any, table: dict[str, Any]) -> JsonResponse:
    """What the page's script asks for: a parent's children (``children=<id>``), or which of
    some executions the feed named match the filters (``ids=a,b``), as rows; and the total now."""
    children_of = request.GET.get("children", "")[:40]
    level = 0
    if children_of:
        if not is_valid_id(children_of, IdKind.EXECUTION):
            return JsonResponse({"error": "children must name an execution by its id."}, status=400)
        every = browse(ListFilters(tz=filters.tz, parent=children_of), tenants)
        rows = list(every[:CHILDREN_INLINE])
        typed = request.GET.get("level", "")
        level = int(typed) if typed.isascii() and typed.isdecimal() else 1
        level = max(1, min(level, 6))
        total = every.count() if len(rows) == CHILDREN_INLINE else len(rows)
        return JsonResponse(
            {
                "html": rows_html(request, rows, table, level),
                "ids": [r.pk for r in rows],
                "total": total,
                "more": f"{request.path}?parent={children_of}" if total > len(rows) else None,
            }
        )
    # ``asked``: the ids looked at (well-formed ones, up to a page's worth): a row the script
    # asked about that is not among them was not looked at, so it may still match.
    named = [i for i in request.GET.get("ids", "").split(",") if i]
    asked = list(dict.fromkeys(i for i in named if is_valid_id(i, IdKind.EXECUTION)))[:ROWS_ASKED_AT_ONCE]
    rows = list(browse(filters, tenants, ids=asked)) if asked else []
    # ``newer``: the newest row's creation the page shows; what matches and came after it (while
    # no socket was open) is given too, a page's worth at most.
    newer = _moment(_typed_moment(request.GET.get("newer")), ZoneInfo("UTC"))
    if newer is not None:
        known = {r.pk for r in rows}
        fresh = browse(filters, tenants).filter(created_at__gt=newer)[: filters.size]
        rows += [r for r in fresh if r.pk not in known]
    return JsonResponse(
        {
            "html": rows_html(request, rows, table, level),
            "ids": [r.pk for r in rows],
            "asked": asked,
            "total": browse(filters, tenants).count(),
        }
    )


def list_context(request: HttpRequest, filters: ListFilters, tenants: Any) -> dict[str, Any]:
    """The page of rows, the pager's numbers, and the filters as the form shows them."""
    paginator = Paginator(browse(filters, tenants), filters.size)
    page = paginator.get_page(request.GET.get("page"))
    rows = decorate(list(page.object_list))
    return {
        "executions": rows,
        "page_obj": page,
        "paginator": paginator,
        "filters": filters,
        "states": STATES,
        "page_sizes": PAGE_SIZES,
        "live": {
            "filters": filters.as_data(),
            "page": page.number,
            "first": page.number == 1,
            "pages": paginator.num_pages,
            "total": paginator.count,
            "loaded_at": timezone.now().isoformat(),
            "start": page.start_index(),
            "end": page.end_index(),
        },
    }


@login_required
def executions_page(request: HttpRequest) -> HttpResponse:
    if request.GET.get("tenant") == "*" and (request.user.is_staff or request.user.is_superuser):
        query = request.GET.copy()
        query.pop("tenant")
        return redirect(reverse("dashboard:operator-executions") + ("?" + query.urlencode() if query else ""))
    seat = seat_for(request)
    if seat is None:
        return no_tenant(request)
    filters = read_filters(request.GET)
    filters = ListFilters(**{**filters.__dict__, "tenant": ""})  # the header's switcher chose it
    tenants = [seat.tenant]
    table = {"select": seat.can_operate, "tenant_column": False, "operable": None}
    if request.GET.get("partial") == "rows":
        return partial_rows(request, filters, tenants, table)
    blueprints = [
        {"name": g.name, "version": g.version, "description": g.description, "input_schema": g.input_schema}
        for g in blueprint_catalog(tenant=seat.tenant)
    ]
    context = list_context(request, filters, tenants)
    context["live"]["tenants"] = [seat.tenant.slug]
    return render_page(
        request,
        "dashboard/executions.html",
        seat,
        blueprints=blueprints,
        table=table,
        parent=_parent(filters, tenants),
        **context,
    )


def _parent(filters: ListFilters, tenants: Any) -> Execution | None:
    if not filters.parent:
        return None
    return Execution.objects.filter(tenant__in=tenants, pk=filters.parent).first()
