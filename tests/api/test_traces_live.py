"""Traces through a real server and worker (``manage.py up``, the embedded default, exporting to
an OTLP receiver of the test's own): an execution submitted over HTTP with a ``traceparent`` is
one trace in the caller's trace, the web process's request span the parent of the worker
process's execution span, a span for each step."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from ..live import platform_up
from ..otlp_receiver import ReceivedSpan, otlp_receiver

pytestmark = pytest.mark.slow

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def test_an_execution_submitted_over_http_is_one_trace_across_the_web_and_worker_processes(tmp_path: Path) -> None:
    with (
        otlp_receiver() as found,
        platform_up(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=found.endpoint, OTEL_BSP_SCHEDULE_DELAY="50") as up,
    ):
        api = httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {up.key()}"}, timeout=30)
        submitted = api.post(
            "/api/v1/executions",
            json={"blueprint": "demo.chain", "input": {"n": 3}},
            headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        assert submitted.status_code == 201, submitted.text

        def whole(spans: list[ReceivedSpan]) -> bool:
            names = [s.name for s in spans if s.trace_id == CALLER_TRACE]
            return sum(name.startswith("execution ") for name in names) == 1 and len(names) >= 5

        found.wait_for(whole, timeout=60)
        spans = found.of_trace(CALLER_TRACE)
        (request,) = [s for s in spans if s.parent_span_id == CALLER_SPAN]  # the web process's span
        (root,) = [s for s in spans if s.name.startswith("execution ")]  # the worker's
        assert root.parent_span_id == request.span_id
        steps = [s for s in spans if s.parent_span_id == root.span_id]
        assert sorted(s.name for s in steps) == ["n_1", "n_2", "n_3"]
