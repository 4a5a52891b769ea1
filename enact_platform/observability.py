"""Health, readiness and metrics endpoints, for load balancers, orchestrators and Prometheus."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from executions.ops.health import readiness
from executions.ops.metrics import metrics_text

LOOPBACK = {"127.0.0.1", "::1"}


@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. It checks nothing else, so a busy database never gets a
    healthy process restarted."""
    return JsonResponse({"status": "ok"})


@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """Readiness: the database answers, the channel layer carries a message, a worker was seen
    recently. 503 with each failing check's reason otherwise."""
    checks = readiness()
    failing = {name: problem for name, problem in checks.items() if problem}
    body = {"status": "ready" if not failing else "not ready", "checks": {k: v or "ok" for k, v in checks.items()}}
    return JsonResponse(body, status=503 if failing else 200)


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text. The figures name tenants, so they are not public: with ENACT_METRICS_TOKEN
    set, its bearer token is needed; without, a request from this machine or a staff session."""
    if not _may_scrape(request):
        return HttpResponse("metrics need a token (ENACT_METRICS_TOKEN) or a staff session\n", status=403)
    return HttpResponse(metrics_text(), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def _may_scrape(request: HttpRequest) -> bool:
    token = settings.ENACT_METRICS_TOKEN
    if token:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        return hmac.compare_digest(given.encode(), token.encode())
    user = getattr(request, "user", None)
    return request.META.get("REMOTE_ADDR") in LOOPBACK or bool(user and user.is_staff)
