"""Growth: is the platform still fast with 100,000 executions and 1,000,000 events in PostgreSQL?

A fixture fills the benchmark's own database fast, in the database itself (INSERT … SELECT over
generate_series): 10 tenants of 10,000 executions each, 10 events an execution, and one execution
of 10,000 events. Then, through the REST API and the dashboard as clients call them (in process,
with Django's test client, so the figures are the server's own time):

- the executions list (newest first, a page of 50), with and without a state filter: p50/p95;
- the dashboard's executions page: p50/p95;
- replay of the 10,000-event execution: every event through ``GET …/events`` pages of 1,000.

    .venv/bin/python -m bench.growth                 # 100,000 executions, 1,000,000 events
    .venv/bin/python -m bench.growth --tiny          # 2,000 and 20,000: a CI smoke check, no JSON

The data stays between runs (``--fresh`` makes it again); ``--database`` names the database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

from bench._common import RESULTS_DIR, machine_info, markdown_table, write_json
from bench.deployment import create_database, database_url

TENANTS = 10
TARGET_LIST_P95_MS = 50.0
TARGET_REPLAY_S = 1.0


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--events-each", type=int, default=10)
    parser.add_argument("--replay-events", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--database", default="enact_bench_growth")
    parser.add_argument("--fresh", action="store_true", help="make the data again")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    if args.tiny:
        args.executions, args.replay_events, args.requests = 2_000, 1_000, 10
    return args


def _setup(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "enact_platform.settings")
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def _fill(executions: int, events_each: int, replay_events: int, fresh: bool) -> tuple[list[Any], str]:
    """The tenants and the id of the long execution; made once, kept unless ``fresh``."""
    from django.db import connection

    from executions.models import Execution
    from tenants.models import Tenant
    from tenants.services import tenant_create

    slugs = [f"growth-{i}" for i in range(TENANTS)]
    if fresh:
        Tenant.objects.filter(slug__in=slugs).delete()
    tenants = [Tenant.objects.filter(slug=s).first() or tenant_create(slug=s) for s in slugs]
    long_id = "exec_" + "z" * 27
    if Execution.objects.filter(pk=long_id).exists():
        return tenants, long_id
    started = time.perf_counter()
    per_tenant = executions // TENANTS
    with connection.cursor() as cursor:
        for n, tenant in enumerate(tenants):
            cursor.execute(_EXECUTIONS_SQL, [n, tenant.pk, per_tenant])
        cursor.execute(_EVENTS_SQL, [events_each, [t.pk for t in tenants]])
        cursor.execute(_LONG_SQL, [long_id, tenants[0].pk])
        cursor.execute(_LONG_EVENTS_SQL, [long_id, tenants[0].pk, replay_events])
        cursor.execute("ANALYZE")
    print(f"made {executions:,} executions and {executions * events_each + replay_events:,} events "
          f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
    return tenants, long_id


_COLUMNS = (
    "id, tenant_id, blueprint, state, wait_reason, input, output, usage, metadata, created_at, updated_at, "
    "started_at, ended_at, lease_owner, claims, cancel_reason, resume_requested, origin, webhook"
)
# Ids keep the kernel's shape (a prefix and 27 base62 characters); states cycle through the usual mix.
_EXECUTIONS_SQL = f"""
INSERT INTO executions_execution ({_COLUMNS})
SELECT 'exec_' || lpad(%s::text, 3, '0') || lpad(i::text, 24, '0'), %s, 'demo.chain',
       (ARRAY['completed','completed','completed','failed','cancelled','running','queued','waiting'])[1 + i %% 8],
       '', '{{"n": 3}}', '3', '{{"steps": 3}}', '{{}}',
       now() - (i || ' seconds')::interval, now(), now() - (i || ' seconds')::interval,
       now() - (i || ' seconds')::interval, '', 1, '', false, 'submit', ''
FROM generate_series(1, %s) AS i
"""
_EVENTS_SQL = """
INSERT INTO executions_executionevent (id, execution_id, tenant_id, seq, type, step_id, timestamp, data)
SELECT 'evt_' || substr(e.id, 6) || lpad(s::text, 5, '0'), e.id, e.tenant_id, s, 'data-step-end', '',
       e.created_at, '{"name": "n_1", "output": 1, "duration_ms": 1}'
FROM executions_execution e CROSS JOIN generate_series(1, %s) AS s
WHERE e.tenant_id = ANY(%s)
"""
_LONG_SQL = f"""
INSERT INTO executions_execution ({_COLUMNS})
VALUES (%s, %s, 'demo.chain', 'completed', '', '{{"n": 1}}', '1', '{{}}', '{{}}', now(), now(), now(), now(),
        '', 1, '', false, 'submit', '')
"""
_LONG_EVENTS_SQL = """
INSERT INTO executions_executionevent (id, execution_id, tenant_id, seq, type, step_id, timestamp, data)
SELECT 'evt_long' || lpad(s::text, 23, '0'), %s, %s, s, 'data-step-end', '', now(),
       '{"name": "n_1", "output": 1, "duration_ms": 1}'
FROM generate_series(1, %s) AS s
"""


def _timed_ms(fn: Any, count: int) -> list[float]:
    fn()  # warm: connections, plans
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _measure(tenants: list[Any], long_id: str, requests: int) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.test import Client

    from tenants.models import Membership
    from tenants.services import api_key_create, membership_set

    tenant = tenants[0]
    raw = api_key_create(tenant=tenant, scope="read", name="growth bench")[1]
    api = Client(HTTP_AUTHORIZATION=f"Bearer {raw}")

    def get(path: str, **params: Any) -> Any:
        response = api.get(path, params)
        assert response.status_code == 200, response.content[:300]
        return response

    user = User.objects.filter(username="growth-bench").first() or User.objects.create_user("growth-bench")
    membership_set(tenant=tenant, user=user, role=Membership.Role.VIEWER)
    browser = Client()
    browser.force_login(user)

    def replay() -> int:
        after, count = 0, 0
        while True:
            page = get(f"/api/v1/executions/{long_id}/events", after=after, limit=1000).json()
            events = page["results"] if isinstance(page, dict) else page
            if not events:
                return count
            count += len(events)
            after = events[-1]["seq"]

    replayed = replay()
    second_page = get("/api/v1/executions").json()["next"]
    figures = {
        "list": _timed_ms(lambda: get("/api/v1/executions"), requests),
        "list_filtered": _timed_ms(lambda: get("/api/v1/executions", state="failed"), requests),
        "list_next_page": _timed_ms(lambda: get(second_page), requests),
        "dashboard": _timed_ms(lambda: browser.get("/"), requests),
        "replay": _timed_ms(replay, max(3, requests // 20)),
    }
    return {"replayed_events": replayed, "samples_ms": figures}


def main() -> None:
    args = _parse()
    url = create_database(database_url(args.database))
    _setup(url)
    tenants, long_id = _fill(args.executions, args.events_each, args.replay_events, args.fresh)
    from executions.models import Execution, ExecutionEvent

    counts = {"executions": Execution.objects.count(), "events": ExecutionEvent.objects.count()}
    measured = _measure(tenants, long_id, args.requests)
    rows = []
    for name, samples in measured["samples_ms"].items():
        rows.append([name, f"{statistics.median(samples):.1f}", f"{_percentile(samples, 0.95):.1f}", str(len(samples))])
    print(f"\nGrowth: {counts['executions']:,} executions, {counts['events']:,} events; "
          f"replay of {measured['replayed_events']:,} events\n")  # fmt: skip
    print(markdown_table(["what", "p50 ms", "p95 ms", "requests"], rows))
    if not args.tiny:
        write_json(
            RESULTS_DIR / "growth.json",
            {
                "benchmark": "growth",
                "machine": machine_info(),
                "counts": counts,
                "replayed_events": measured["replayed_events"],
                "samples_ms": {k: [round(v, 2) for v in s] for k, s in measured["samples_ms"].items()},
                "targets": {"list_p95_ms": TARGET_LIST_P95_MS, "replay_s": TARGET_REPLAY_S},
            },
        )
        print(f"\nwrote {RESULTS_DIR / 'growth.json'}")


if __name__ == "__main__":
    main()
