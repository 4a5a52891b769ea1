"""The dashboard's execution page with a long history: how soon is it usable in a browser?

One finished execution of 10,000 events (about 3,300 steps: each a start, a usage report and an
end; some nested under a parent step; one step fails and so does the run) is written straight
into the platform's tables (a SQLite database of the benchmark's own), as the runtime stores
them. ``manage.py runserver`` serves it (as the browser tests start it: it serves the page's
script and style sheets too) and Debian's Chromium opens ``/executions/<id>/``, first in a fresh
profile, then again with its cache. Time to interactive is from the navigation's start until the
page is usable: the state badge says "failed", the timeline and the event log are drawn, and a
choice in the log's type filter has been answered (the count of matches shown). Also measured:
when the whole log is in memory (read through the API behind the page), a search over it, and
the page's long tasks (PerformanceObserver), the longest of which is what a reader feels as a
frozen tab.

    .venv/bin/python -m bench.dashboard                # 10,000 and 100,000 events
    .venv/bin/python -m bench.dashboard --tiny         # 1,000 events: a CI smoke check, no JSON

Target: interactive within 1 s at 10,000 events.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, machine_info, markdown_table, write_json

TARGET_INTERACTIVE_S = 1.0
CHROMIUM = os.environ.get("ENACT_CHROMIUM", "/usr/bin/chromium")

# Collects the page's long tasks from its very start (before the page's own script runs).
LONG_TASKS_SCRIPT = """
window.__longTasks = [];
try {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) window.__longTasks.push({ start: entry.startTime, duration: entry.duration });
  }).observe({ type: "longtask", buffered: true });
} catch (e) { window.__longTasks = null; }
"""


def build_execution(tenant: Any, *, events: int = 10_000, fail: bool = True) -> Any:
    """A finished (failed) execution of ``events`` events in the shape the runtime stores: an
    execution start, then per step a start, a usage report and an end (every 25th step a parent
    whose next 24 steps are nested under it), one step failed near the end, then the execution
    failed. Written with bulk_create; returns the Execution."""
    from executions.kernel import ids
    from executions.models import Execution, ExecutionEvent, Step

    steps_count = max(2, (events - 2) * 25 // 76)  # 25 steps: 75 events and a parent's text
    began = datetime.now(UTC) - timedelta(minutes=30)
    clock = {"t": began}

    def tick(ms: int) -> datetime:
        clock["t"] += timedelta(milliseconds=ms)
        return clock["t"]

    # Made finished from the start: a running one without a lease would be a worker's to recover.
    execution = Execution.objects.create(
        tenant=tenant,
        blueprint="demo.pipeline",
        state="failed" if fail else "completed",
        input={"text": "a long run"},
        started_at=began,
        ended_at=began,
    )
    rows: list[ExecutionEvent] = []
    step_rows: list[Step] = []

    def event(kind: str, at: datetime, data: dict[str, Any], step_id: str = "") -> None:
        rows.append(
            ExecutionEvent(
                id=ids.new_event_id(),
                execution=execution,
                tenant=tenant,
                seq=len(rows) + 1,
                type=kind,
                step_id=step_id,
                timestamp=at,
                data=data,
            )
        )

    event("data-execution-start", began, {"tenant_id": tenant.pk, "parent_id": None})
    usage = {"steps": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "wall_time_ms": 0}
    failed_at = steps_count - 3 if fail else -1
    parent: tuple[str, datetime, Step] | None = None
    for n in range(steps_count):
        step_id = ids.new_step_id()
        is_parent = n % 25 == 0
        parent_id = parent[0] if parent and not is_parent else ""
        name = f"fan-out-{n // 25}" if is_parent else f"item-{n}"
        start = tick(3)
        event(
            "data-step-start",
            start,
            {"name": name, "step_type": "node", "parent_step_id": parent_id or None, "source": None, "attempt": 1},
            step_id,
        )
        tokens = 20 + n % 17
        usage = {
            **usage,
            "steps": usage["steps"] + 1,
            "input_tokens": usage["input_tokens"] + tokens,
            "output_tokens": usage["output_tokens"] + tokens // 2,
            "cost_usd": round(usage["cost_usd"] + 0.00002 * tokens, 6),
            "wall_time_ms": int((start - began).total_seconds() * 1000),
        }
        delta = {"input_tokens": tokens, "output_tokens": tokens // 2, "cost_usd": 0.00002 * tokens}
        event("data-usage", tick(2), {**usage, "delta": delta}, step_id)
        step = Step(
            id=step_id,
            execution=execution,
            position=n,
            name=name,
            step_type="node",
            state="completed",
            attempt=1,
            parent_step_id=parent_id,
            started_at=start,
        )
        step_rows.append(step)
        if is_parent:
            # A parent ends after its children: its end event comes when the next parent starts.
            if parent:
                _end_parent(parent, tick, event)
            parent = (step_id, start, step)
            event("data-text-delta", tick(1), {"delta": f"fanning out over items {n + 1} to {n + 24}"}, step_id)
            continue
        end = tick(20 + n % 40)
        ms = int((end - start).total_seconds() * 1000)
        step.ended_at, step.duration_ms = end, ms
        if n == failed_at:
            error = {
                "category": "node_error",
                "message": f"item {n}: the upstream answered 503",
                "code": "upstream",
                "attempt": 1,
            }
            step.state, step.error = "failed", error
            event("data-step-failed", end, {"name": name, "error": error, "duration_ms": ms}, step_id)
        else:
            step.output = {"item": n, "words": n % 13, "summary": f"item {n} done"}
            event("data-step-end", end, {"name": name, "output": step.output, "duration_ms": ms}, step_id)
    if parent:
        _end_parent(parent, tick, event)
    while len(rows) < events - 1:
        event("data-text-delta", tick(1), {"delta": "…"})
    ended = tick(5)
    if fail:
        error = {"category": "node_error", "message": "a step failed: the upstream answered 503", "code": "upstream"}
        event("data-execution-failed", ended, {"error": error, "usage": usage})
        execution.state, execution.error = "failed", error
    else:
        event("data-execution-end", ended, {"output": {"items": steps_count}, "duration_ms": 0, "usage": usage})
        execution.state, execution.output = "completed", {"items": steps_count}
    Step.objects.bulk_create(step_rows, batch_size=500)
    ExecutionEvent.objects.bulk_create(rows, batch_size=1000)
    execution.ended_at, execution.usage = ended, usage
    execution.save(update_fields=["state", "error", "output", "ended_at", "usage", "updated_at"])
    return execution


def _end_parent(parent: tuple[str, datetime, Any], tick: Any, event: Any) -> None:
    step_id, start, step = parent
    end = tick(1)
    ms = int((end - start).total_seconds() * 1000)
    step.ended_at, step.duration_ms, step.output = end, ms, {"children": 24}
    event("data-step-end", end, {"name": step.name, "output": step.output, "duration_ms": ms}, step_id)


def time_to_interactive(page: Any, url: str, *, state: str = "failed", events: int | None = None) -> dict[str, Any]:
    """Open ``url`` (an execution page) in ``page`` and measure, in the page's own clock
    (performance.now(), from the navigation's start): when it was usable, when the whole log was
    in memory, and its long tasks. The page must have LONG_TASKS_SCRIPT as an init script."""
    page.goto(url, wait_until="commit")
    page.wait_for_function(
        """(state) => document.querySelector('#state')?.textContent.trim() === state
          && document.querySelector('#waterfall .tl-row')
          && document.querySelector('#events tbody tr')""",
        arg=state,
        timeout=30_000,
    )
    drawn_ms = page.evaluate("performance.now()")
    # A control answers: choose the step starts in the log's type filter; wait for the count of
    # matches and the rows it lets through.
    page.select_option("#log-type", "data-step-start")
    page.wait_for_function(
        "() => /match/.test(document.querySelector('#log-count').textContent)"
        " && document.querySelector('#events tbody tr.type-step-start')"
        " && !document.querySelector('#events tbody tr:not(.type-step-start)')",
        timeout=30_000,
    )
    interactive_ms = page.evaluate("performance.now()")
    page.select_option("#log-type", "")
    page.wait_for_function("() => document.querySelector('#event-log').dataset.loaded === 'all'", timeout=60_000)
    # A search over everything loaded (after its 200 ms pause for typing), in the page's clock.
    before = page.evaluate("performance.now()")
    page.fill("#log-search", "item 1234 done")
    page.wait_for_function(
        "() => / match(es)?$/.test(document.querySelector('#log-count').textContent)", timeout=60_000
    )
    search_ms = page.evaluate("performance.now()") - before
    page.fill("#log-search", "")
    page.wait_for_function("() => /^[\\d,.\\s]+ events?$/.test(document.querySelector('#log-count').textContent)")
    figures = page.evaluate(
        """() => ({
          html: performance.getEntriesByType('navigation')[0]?.responseEnd ?? null,
          contentLoaded: performance.getEntriesByType('navigation')[0]?.domContentLoadedEventEnd ?? null,
          loaded: performance.getEntriesByName('enact:log-loaded')[0]?.startTime ?? null,
          firstPage: performance.getEntriesByName('enact:log-first-page')[0]?.startTime ?? null,
          domRows: document.querySelectorAll('#events tbody tr').length,
          timelineRows: document.querySelectorAll('#waterfall .tl-row').length,
          count: document.querySelector('#log-count').textContent,
          longTasks: window.__longTasks,
        })"""
    )
    tasks = figures["longTasks"] or []
    return {
        "html_ms": figures["html"] and round(figures["html"], 1),
        "dom_content_loaded_ms": figures["contentLoaded"] and round(figures["contentLoaded"], 1),
        "drawn_ms": round(drawn_ms, 1),
        "interactive_ms": round(interactive_ms, 1),
        "log_first_page_ms": figures["firstPage"] and round(figures["firstPage"], 1),
        "log_loaded_ms": figures["loaded"] and round(figures["loaded"], 1),
        "search_ms": round(search_ms, 1),
        "long_tasks": len(tasks),
        "longest_task_ms": round(max((t["duration"] for t in tasks), default=0.0), 1),
        "long_tasks_total_ms": round(sum(t["duration"] for t in tasks), 1),
        "log_rows_in_dom": figures["domRows"],
        "timeline_rows_in_dom": figures["timelineRows"],
        "log_count": figures["count"],
    }


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--runs", type=int, default=5, help="page loads per size (a fresh browser context each)")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    if args.tiny:
        args.events, args.runs = [1_000], 2
    return args


def _setup(workdir: Path) -> dict[str, str]:
    """A SQLite database of the bench's own (the embedded deployment), migrated."""
    env = {"ENACT_SQLITE_PATH": str(workdir / "enact.sqlite3"), "DJANGO_SETTINGS_MODULE": "enact_platform.settings"}
    for name in ("DATABASE_URL", "REDIS_URL"):
        os.environ.pop(name, None)
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def _web(env: dict[str, str], port: int, log: Path) -> Any:
    """The web process as the browser tests start it: ``runserver``, which also serves the page's
    script and style sheets (daphne alone serves no static files)."""
    from bench.deployment import Process

    command = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
    return Process(command, env, log)


def _wait_ready(base: str, process: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(base + "/login/", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if process.process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the web process did not start; see {process.log}")
        time.sleep(0.2)


def main() -> int:
    args = _parse()
    from playwright.sync_api import sync_playwright

    from bench.deployment import free_port

    with tempfile.TemporaryDirectory(prefix="enact-bench-dashboard-") as tmp:
        workdir = Path(tmp)
        env = _setup(workdir)
        from django.contrib.auth.models import User

        from tenants.models import Membership
        from tenants.services import membership_set, tenant_create

        tenant = tenant_create(slug="bench-dashboard")
        user = User.objects.create_user("bench", password="a-long-password-for-the-bench")
        membership_set(tenant=tenant, user=user, role=Membership.Role.VIEWER)
        executions = {}
        for size in args.events:
            started = time.perf_counter()
            executions[size] = build_execution(tenant, events=size).pk
            print(f"{size:,} events written in {time.perf_counter() - started:.1f} s", flush=True)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = _web({**os.environ, **env}, port, workdir / "web.log")
        results: dict[str, Any] = {}
        try:
            _wait_ready(base, server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    login = browser.new_context()
                    page = login.new_page()
                    page.goto(base + "/login/")
                    page.fill("input[name=username]", "bench")
                    page.fill("input[name=password]", "a-long-password-for-the-bench")
                    page.click("button[type=submit]")
                    page.wait_for_selector('h1:has-text("Executions")')
                    state = login.storage_state()
                    login.close()
                    for size, execution_id in executions.items():
                        url = f"{base}/executions/{execution_id}/"
                        first: list[dict[str, Any]] = []
                        again: list[dict[str, Any]] = []
                        for n in range(args.runs + 1):  # the first load warms the server: not counted
                            # A first visit (a fresh browser profile: the page's script and style
                            # sheets fetched too), then the same page again (they come from the cache).
                            context = browser.new_context(viewport={"width": 1400, "height": 900}, storage_state=state)
                            context.add_init_script(LONG_TASKS_SCRIPT)
                            tab = context.new_page()
                            figures = time_to_interactive(tab, url), time_to_interactive(tab, url)
                            context.close()
                            if n:
                                first.append(figures[0])
                                again.append(figures[1])
                                print(f"  {size:,} events, run {n}, first visit: {figures[0]}", flush=True)
                                print(f"  {size:,} events, run {n}, again: {figures[1]}", flush=True)
                        results[str(size)] = {"first_visit": _summary(first), "again": _summary(again)}
                finally:
                    browser.close()
        finally:
            server.stop()
    rows = [
        [
            f"{int(size):,}",
            visit.replace("_", " "),
            f"{r['interactive_ms_median']:.0f}",
            f"{r['interactive_ms_max']:.0f}",
            f"{r['log_loaded_ms_median']:.0f}",
            f"{r['search_ms_median']:.0f}",
            f"{r['longest_task_ms_max']:.0f}",
            str(r["log_rows_in_dom"]),
        ]
        for size, by_visit in results.items()
        for visit, r in by_visit.items()
    ]
    print()
    print(
        markdown_table(
            [
                "events",
                "visit",
                "interactive p50 ms",
                "interactive max ms",
                "whole log p50 ms",
                "search p50 ms",
                "longest task ms",
                "log rows in DOM",
            ],
            rows,
        )
    )
    for visit, r in results.get("10000", {}).items():
        met = r["interactive_ms_median"] <= TARGET_INTERACTIVE_S * 1000
        print(
            f"target: interactive within {TARGET_INTERACTIVE_S:.0f} s at 10,000 events, "
            f"{visit.replace('_', ' ')}: {'met' if met else 'NOT met'} ({r['interactive_ms_median']:.0f} ms)"
        )
    if not args.tiny:
        write_json(
            RESULTS_DIR / "dashboard.json",
            {
                "machine": machine_info(),
                "target_interactive_s": TARGET_INTERACTIVE_S,
                "runs": args.runs,
                "results": results,
            },
        )
    return 0


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        values = [r[key] for r in runs if r[key] is not None]
        return round(statistics.median(values), 1) if values else 0.0

    return {
        "interactive_ms_median": median("interactive_ms"),
        "interactive_ms_max": max(r["interactive_ms"] for r in runs),
        "drawn_ms_median": median("drawn_ms"),
        "log_first_page_ms_median": median("log_first_page_ms"),
        "log_loaded_ms_median": median("log_loaded_ms"),
        "search_ms_median": median("search_ms"),
        "longest_task_ms_max": max(r["longest_task_ms"] for r in runs),
        "long_tasks_total_ms_median": median("long_tasks_total_ms"),
        "log_rows_in_dom": runs[-1]["log_rows_in_dom"],
        "timeline_rows_in_dom": runs[-1]["timeline_rows_in_dom"],
        "runs": runs,
    }


if __name__ == "__main__":
    sys.exit(main())
