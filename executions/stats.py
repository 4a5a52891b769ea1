"""What the dashboard reads over time: a tenant's executions, tokens and cost per day and per
blueprint, and a schedule's recent firings. Days are UTC days (the platform's clock), said so on
the page. One GROUP BY query for the usage: the database counts and sums, so what comes back is
at most days x blueprints x states rows however many executions there were."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, FloatField, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, TruncDate
from django.utils import timezone

from executions.models import Execution
from tenants.models import Tenant

PERIODS = (7, 30, 90)
OUTCOMES = ("completed", "failed", "cancelled")


@dataclass
class Totals:
    """Executions by outcome (``other``: not finished yet), tokens and cost."""

    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    other: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def executions(self) -> int:
        return self.completed + self.failed + self.cancelled + self.other

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(
        self, state: str, count: int, input_tokens: float | None, output_tokens: float | None, cost: float | None
    ) -> None:
        outcome = state if state in OUTCOMES else "other"
        setattr(self, outcome, getattr(self, outcome) + count)
        self.input_tokens += round(input_tokens or 0)
        self.output_tokens += round(output_tokens or 0)
        self.cost_usd += float(cost or 0)


@dataclass
class DayTotals(Totals):
    day: date = field(default_factory=date.today)


@dataclass
class BlueprintTotals(Totals):
    blueprint: str = ""


@dataclass
class UsageOverTime:
    first_day: date
    last_day: date
    days: list[DayTotals]  # every day of the period, oldest first, empty days too
    blueprints: list[BlueprintTotals]  # those with executions, the most executions first
    total: Totals


def _number(name: str) -> Cast:
    # KT reads the JSON key as text on every database (->> on PostgreSQL, json_extract on SQLite);
    # a float holds both the token counts and the cost.
    return Cast(KT(f"usage__{name}"), FloatField())


def usage_over_time(*, tenant: Tenant, days: int = 30, now: datetime | None = None) -> UsageOverTime:
    """The tenant's executions created in the last ``days`` UTC days (today included): per day
    split by outcome, with their tokens and cost; and per blueprint over the whole period."""
    last = (now or timezone.now()).astimezone(UTC).date()
    first = last - timedelta(days=days - 1)
    rows = (
        Execution.objects.for_tenant(tenant)
        .filter(created_at__gte=datetime.combine(first, time.min, tzinfo=UTC))
        .annotate(day=TruncDate("created_at", tzinfo=UTC))
        .values("day", "blueprint", "state")
        .annotate(
            n=Count("id"),
            input_tokens=Sum(_number("input_tokens")),
            output_tokens=Sum(_number("output_tokens")),
            cost=Sum(_number("cost_usd")),
        )
        .order_by()
    )
    per_day = {first + timedelta(days=i): DayTotals(day=first + timedelta(days=i)) for i in range(days)}
    per_blueprint: dict[str, BlueprintTotals] = {}
    total = Totals()
    for row in rows:
        figures = (row["state"], row["n"], row["input_tokens"], row["output_tokens"], row["cost"])
        day = per_day.get(row["day"])
        if day is not None:  # a row created a moment past midnight, after `last` was read
            day.add(*figures)
        per_blueprint.setdefault(row["blueprint"], BlueprintTotals(blueprint=row["blueprint"])).add(*figures)
        total.add(*figures)
    blueprints = sorted(per_blueprint.values(), key=lambda b: (-b.executions, -b.cost_usd, b.blueprint))
    return UsageOverTime(first, last, list(per_day.values()), blueprints, total)
