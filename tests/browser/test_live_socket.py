"""The dashboard's live socket when the server refuses it for too many live connections (close
code 4429, the user's other tabs): it tries again a few seconds later instead of leaving the page
static; other refusals are final."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from executions.services.submit import execution_submit
from tenants.models import Membership, Tenant

from .test_live_pages import _log_in, _user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _attempts_after_refusal(page: Any, code: int, url: str) -> list[str]:
    attempts: list[str] = []

    def refuse_first(socket: Any) -> None:
        attempts.append(socket.url)
        if len(attempts) == 1:
            socket.close(code=code, reason="refused")
        else:
            socket.connect_to_server()

    page.route_web_socket(lambda u: "/ws/executions/" in u, refuse_first)
    page.goto(url)
    for _ in range(24):  # the page's timers run while Playwright waits, not while Python sleeps
        if len(attempts) >= 2:
            break
        page.wait_for_timeout(500)
    return attempts


def test_a_page_refused_for_too_many_connections_comes_back_live(
    live_server_url: str, page: Any, tenant_a: Tenant
) -> None:
    _user(tenant_a, "lena", Membership.Role.VIEWER)
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": "a b"})
    _log_in(page, live_server_url, "lena")
    attempts = _attempts_after_refusal(page, 4429, f"{live_server_url}/executions/{execution.pk}/")
    assert len(attempts) == 2
    expect(page.locator("body[data-live=on]")).to_have_count(1, timeout=15_000)


def test_a_page_refused_for_good_does_not_knock_again(live_server_url: str, page: Any, tenant_a: Tenant) -> None:
    _user(tenant_a, "lena", Membership.Role.VIEWER)
    execution, _ = execution_submit(tenant=tenant_a, blueprint="demo.pipeline", input={"text": "a b"})
    _log_in(page, live_server_url, "lena")
    attempts = _attempts_after_refusal(page, 4403, f"{live_server_url}/executions/{execution.pk}/")
    assert len(attempts) == 1
    expect(page.locator("body[data-live=off]")).to_have_count(1)
