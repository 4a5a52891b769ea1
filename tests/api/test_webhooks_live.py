"""Webhooks through a real server and worker (``manage.py up``, the embedded default): a webhook
registered over the API gets one signed POST when an execution submitted over the API ends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from executions.services.webhooks import verify_signature

from ..conftest import wait_until
from ..live import ROOT, platform_up
from ..webhook_receiver import receiver

pytestmark = pytest.mark.slow


def test_a_webhook_registered_over_the_api_gets_a_signed_post_when_an_execution_ends(tmp_path: Path) -> None:
    with receiver() as hooks, platform_up(tmp_path, ENACT_WEBHOOK_POLL_SECONDS="0.2") as up:
        # The operator lets the demo tenant call the receiver (its tool policy names the host).
        allow = (
            "from tenants.models import Tenant; from tenants.services import tenant_set_limits; "
            f"tenant_set_limits(tenant=Tenant.objects.get(slug='demo'), changes={{'tool_allowed_domains': ['{hooks.host}']}})"
        )
        subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", allow], cwd=ROOT, env=up.env, check=True, timeout=60
        )
        api = httpx.Client(base_url=up.url, headers={"Authorization": f"Bearer {up.key()}"}, timeout=30)

        refused = api.post(
            "/api/v1/webhooks", json={"url": "https://elsewhere.example/hook", "events": ["data-execution-end"]}
        )
        assert refused.status_code == 400
        created = api.post("/api/v1/webhooks", json={"url": hooks.url, "events": ["data-execution-end"]})
        assert created.status_code == 201, created.text
        webhook = created.json()
        execution = api.post("/api/v1/executions", json={"blueprint": "demo.chain", "input": {"n": 2}}).json()

        assert wait_until(lambda: hooks.count() >= 1, timeout=60)
        (request,) = hooks.received
        assert verify_signature(webhook["secret"], request.headers["enact-signature"], request.body)
        assert not verify_signature("whsec_not-the-secret", request.headers["enact-signature"], request.body)
        body = json.loads(request.body)
        assert (body["type"], body["execution"]["id"], body["execution"]["state"]) == (
            "data-execution-end",
            execution["id"],
            "completed",
        )

        def delivered() -> bool:
            page = api.get(f"/api/v1/webhooks/{webhook['id']}/deliveries").json()["results"]
            return [d["state"] for d in page] == ["delivered"]

        assert wait_until(delivered, timeout=10)
