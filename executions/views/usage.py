"""The tenant's usage: today against its limits, and over the last 7, 30 or 90 days (executions
by outcome, tokens and cost per day; totals per blueprint). Numbers are written here, on the
server, so the page reads right before (and without) its script."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse

from executions import selectors
from executions.stats import OUTCOMES, PERIODS, DayTotals, usage_over_time
from executions.views.common import no_tenant, render_page, seat_for
from tenants.models import TenantLimits
from tenants.selectors import tenant_usage

DEFAULT_PERIOD = 30
WARN_AT = 80  # percent of a limit from which its bar warns


# --- how numbers are written ----------------------------------------------------------------------


def count_text(value: Any) -> str:
    """1234567 → "1,234,567"."""
    return f"{int(value):,}"


def usd_text(value: Any) -> str:
    """100 → "$100.00"; below a cent, four places: 0.00042 → "$0.0004"."""
    amount = float(value)
    if 0 < abs(amount) < 0.01:
        return f"${amount:.4f}"
    return f"${amount:,.2f}"


def bytes_text(value: Any) -> str:
    """1073741824 → "1 GiB", 1536 → "1.5 KiB", 512 → "512 B"."""
    amount, unit = float(value), 0
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    while abs(amount) >= 1024 and unit < len(units) - 1:
        amount /= 1024
        unit += 1
    if unit == 0 or amount >= 10 or amount == int(amount):
        return f"{amount:,.0f} {units[unit]}"
    return f"{amount:.1f} {units[unit]}"


def seconds_text(value: Any) -> str:
    seconds = int(value)
    if seconds % 3600 == 0:
        hours = seconds // 3600
        return f"{hours} hour{'s' if hours != 1 else ''}"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds:,} s"


# --- today against the limits ---------------------------------------------------------------------


@dataclass(frozen=True)
class Meter:
    """One of today's figures against its limit (``limit`` None: no limit)."""

    label: str
    used: int | float
    limit: int | float | Decimal | None
    write: Any  # how its numbers are written

    @property
    def percent(self) -> int | None:
        """How much of the limit is used, uncapped (120 when over), None with no limit."""
        if self.limit is None or self.limit == 0:
            return None
        return math.floor(100 * float(self.used) / float(self.limit))

    def context(self) -> dict[str, Any]:
        percent = self.percent
        used_text = self.write(self.used)
        if percent is None:
            return {**self._figures(percent, ""), "limit_text": "no limit", "text": f"{used_text}, no limit"}
        percent_text = "under 1 %" if percent == 0 and self.used else f"{percent} %"
        limit_text = self.write(self.limit)
        return {
            **self._figures(percent, "full" if percent >= 100 else "warn" if percent >= WARN_AT else ""),
            "limit_text": limit_text,
            "percent_text": percent_text,
            "text": f"{used_text} of {limit_text} ({percent_text})",
        }

    def _figures(self, percent: int | None, level: str) -> dict[str, Any]:
        return {
            "label": self.label,
            "used": self.used,
            "limit": self.limit,
            "percent": percent,
            "width": min(100, percent or 0),
            "value_now": _plain(self.used),
            "value_max": None if self.limit is None else _plain(self.limit),
            "level": level,
            "used_text": self.write(self.used),
        }


def _plain(value: Any) -> int | float:
    """A number as aria-valuenow takes it: 100, not 100.0000."""
    number = float(value)
    return int(number) if number.is_integer() else round(number, 6)


def _meters(limits: TenantLimits, usage: dict[str, Any]) -> list[dict[str, Any]]:
    meters = [
        Meter("Running now", usage["running_executions"], limits.max_concurrent_executions, count_text),
        Meter("Executions today", usage["executions_today"], limits.executions_per_day, count_text),
        Meter("Tokens today", usage["tokens_today"], limits.tokens_per_day, count_text),
        Meter("Cost today", usage["cost_today_usd"], limits.cost_per_day_usd, usd_text),
        Meter("Storage", usage["storage_bytes"], limits.max_storage_bytes, bytes_text),
    ]
    return [meter.context() for meter in meters]


def _limits(limits: TenantLimits) -> list[tuple[str, str]]:
    def written(value: Any, write: Any) -> str:
        return "no limit" if value is None else write(value)

    return [
        ("Steps per execution", written(limits.max_steps, count_text)),
        ("Tokens per execution", written(limits.max_tokens, count_text)),
        ("Cost per execution", written(limits.max_cost_usd, usd_text)),
        ("Wall time per execution", written(limits.max_wall_time_s, seconds_text)),
        ("Executions at once", written(limits.max_concurrent_executions, count_text)),
        ("Requests per minute (per API key)", written(limits.requests_per_minute, count_text)),
    ]


# --- over time --------------------------------------------------------------------------------------


def _height(value: float, peak: float) -> float:
    return round(100 * value / peak, 2) if peak else 0


def _day_label(day: date) -> str:
    return f"{day:%b} {day.day}"


def _columns(days: list[DayTotals], series: list[tuple[str, str, Any]], write: Any) -> dict[str, Any]:
    """One chart: a column per day, stacked from ``series`` (css class, name, value of a day)."""
    peak = max([sum(value(d) for _, _, value in series) for d in days] + [0])
    every = math.ceil(len(days) / 7)  # about seven dates written under the columns
    columns = []
    for index, day in enumerate(days):
        parts = [(css, name, value(day)) for css, name, value in series]
        said = ", ".join(f"{write(v)} {name}".strip() for _, name, v in parts)
        columns.append(
            {
                "day": day.day,
                "label": _day_label(day.day),
                "show_label": (len(days) - 1 - index) % every == 0,
                "said": f"{_day_label(day.day)}: {said}",
                "segments": [
                    {"css": css, "height": _height(v, peak), "title": f"{write(v)} {name}".strip()}
                    for css, name, v in parts
                    if v
                ],
            }
        )
    return {"columns": columns, "peak": peak, "peak_text": write(peak)}


def _charts(days: list[DayTotals]) -> list[dict[str, Any]]:
    return [
        {
            "id": "executions-per-day",
            "title": "Executions per day",
            "legend": [(o, o) for o in OUTCOMES] + [("other", "not finished")],
            **_columns(
                days,
                [(o, o, lambda d, o=o: getattr(d, o)) for o in OUTCOMES]
                + [("other", "not finished", lambda d: d.other)],
                count_text,
            ),
        },
        {
            "id": "tokens-per-day",
            "title": "Tokens per day",
            "legend": [],
            **_columns(days, [("tokens", "tokens", lambda d: d.tokens)], count_text),
        },
        {
            "id": "cost-per-day",
            "title": "Cost per day",
            "legend": [],
            **_columns(days, [("cost", "", lambda d: d.cost_usd)], usd_text),
        },
    ]


def _period(request: HttpRequest) -> int:
    try:
        days = int(request.GET.get("days", DEFAULT_PERIOD))
    except ValueError:
        return DEFAULT_PERIOD
    return days if days in PERIODS else DEFAULT_PERIOD


@login_required
def usage_page(request: HttpRequest) -> HttpResponse:
    seat = seat_for(request)
    if seat is None:
        return no_tenant(request)
    limits = TenantLimits.objects.get(tenant=seat.tenant)
    days = _period(request)
    over_time = usage_over_time(tenant=seat.tenant, days=days)
    most = max([b.executions for b in over_time.blueprints] + [1])
    per_hour = selectors.executions_per_hour(tenant=seat.tenant)
    peak = max([h["count"] for h in per_hour] + [1])
    return render_page(
        request,
        "dashboard/usage.html",
        seat,
        bars=_meters(limits, tenant_usage(tenant=seat.tenant)),
        limits=_limits(limits),
        days=days,
        periods=PERIODS,
        over_time=over_time,
        total={
            "executions": count_text(over_time.total.executions),
            "failed": count_text(over_time.total.failed),
            "tokens": count_text(over_time.total.tokens),
            "cost": usd_text(over_time.total.cost_usd),
        },
        charts=_charts(over_time.days),
        table=[
            {
                "day": d.day,
                **{o: count_text(getattr(d, o)) for o in (*OUTCOMES, "other")},
                "tokens": count_text(d.tokens),
                "cost": usd_text(d.cost_usd),
            }
            for d in reversed(over_time.days)
        ],
        blueprints=[
            {
                "name": b.blueprint,
                "executions": count_text(b.executions),
                "failed": count_text(b.failed),
                "tokens": count_text(b.tokens),
                "cost": usd_text(b.cost_usd),
                "width": _height(b.executions, most),
            }
            for b in over_time.blueprints
        ],
        per_hour=[{**h, "height": round(100 * h["count"] / peak)} for h in per_hour],
        peak=peak,
    )
