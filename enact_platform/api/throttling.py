"""Requests per minute, per API key, as its tenant's limits say (``requests_per_minute``).

A fixed one-minute window counted in the cache with an atomic increment, so every web process
behind the same cache (Redis when scaled) shares one count. Sessions are not limited here: the
dashboard's requests are paced by the people using it.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from tenants.models import ApiKey, TenantLimits

WINDOW_SECONDS = 60


def key_rate_wait(key: ApiKey) -> float | None:
    """Count one request of ``key``; ``None`` if it is within its tenant's rate, else the
    seconds until the window ends."""
    per_minute = TenantLimits.objects.filter(tenant_id=key.tenant_id).values_list("requests_per_minute", flat=True)
    limit = per_minute.first()
    if limit is None:
        return None
    now = time.time()
    window = int(now // WINDOW_SECONDS)
    counter = f"enact:rate:{key.prefix}:{window}"  # the prefix is random: unique across databases
    # add() creates the counter only if absent, and incr() is atomic, so concurrent requests
    # (from any web process sharing the cache) each get their own count.
    cache.add(counter, 0, timeout=WINDOW_SECONDS * 2)
    try:
        count = cache.incr(counter)
    except ValueError:  # evicted between add and incr: this request starts the count again
        cache.set(counter, 1, timeout=WINDOW_SECONDS * 2)
        count = 1
    return None if count <= limit else (window + 1) * WINDOW_SECONDS - now


class ApiKeyRateThrottle(BaseThrottle):
    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        if not isinstance(request.auth, ApiKey):
            return True
        self._wait = key_rate_wait(request.auth)
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait
