"""A tenant secret never leaves the request it is sent with: a server that echoes it back (in its
answer, in an error) has it redacted from everything the run stores or emits (events, step
outputs, the error, the checkpoint, artifacts) and so from every API answer and the admin."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client

from executions.blueprints.functions import blueprint_function
from executions.kernel import ArtifactType
from executions.models import Artifact, Checkpoint, Execution, ExecutionEvent, Step
from executions.runtime.run import execution_run
from executions.services.blueprints import blueprint_save
from executions.services.submit import execution_submit
from tenants.models import Tenant
from tenants.services import tenant_secret_set, tenant_set_limits

from .conftest import Api

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "BOB-SECRET-456"


class EchoServer:
    """Answers with what it was sent: the secret header in its body, or in a 403's."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                key = self.headers.get("X-Api-Key", "")
                owner.seen.append(key)
                if self.path.startswith("/denied"):
                    status, kind, body = 403, "text/plain", f"denied: / {key}"
                else:
                    status, kind = 200, "application/json"
                    body = json.dumps({"you_sent": key, "auth": self.headers.get("Authorization"), "in": f"x{key}y"})
                payload = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.server.shutdown()
    server.server.server_close()


@blueprint_function("tests.keep_as_artifact")
def _keep_as_artifact(value: Any, ctx: Any) -> Any:
    ctx.store_artifact("answer.json", ArtifactType.JSON, value)
    ctx.store_artifact("answer.txt", ArtifactType.TEXT, json.dumps(value))
    return {"kept": True}


def _blueprint(tenant: Tenant, host: str) -> None:
    secret_headers = {"X-Api-Key": "BOB_KEY"}
    nodes = {
        "fetch": {
            "kind": "http",
            "config": {"url": f"http://{host}/echo", "secret_headers": secret_headers, "auth_secret": "BOB_KEY"},
        },
        "agent": {
            "kind": "llm",
            "config": {
                "provider": "demo",
                "model": "demo",
                "prompt": "Look it up",
                "tools": [{"name": "echo", "http": {"url": f"http://{host}/echo", "secret_headers": secret_headers}}],
            },
        },
        "keep": {"kind": "function", "config": {"function": "tests.keep_as_artifact", "input": "{{ state.fetch }}"}},
        "deny": {"kind": "http", "config": {"url": f"http://{host}/denied", "secret_headers": secret_headers}},
    }
    edges = [("fetch", "agent"), ("agent", "keep"), ("keep", "deny"), ("deny", "end")]
    definition = {"entry": "fetch", "nodes": nodes, "edges": [{"from": a, "to": b} for a, b in edges]}
    blueprint_save(tenant=tenant, name="echoes", definition=definition)


def test_a_secret_a_server_echoes_is_redacted_from_everything(
    tenant_a: Tenant, reader_a: Api, echo: EchoServer, enqueued: list[str], admin_client: Client
) -> None:
    tenant_secret_set(tenant=tenant_a, name="BOB_KEY", value=SECRET)
    tenant_set_limits(
        tenant=tenant_a, changes={"tool_allowed_domains": [echo.host], "tool_trusted_domains": [echo.host]}
    )
    _blueprint(tenant_a, echo.host)
    execution, _ = execution_submit(tenant=tenant_a, blueprint="echoes", input={})
    assert execution_run(execution.pk) == "failed"
    execution.refresh_from_db()

    assert echo.seen == [SECRET, SECRET, SECRET]  # the secret did reach the server, every time
    assert execution.error["message"] == "deny: HTTP 403: denied: / [redacted]"
    fetched = Step.objects.get(execution=execution, name="fetch").output
    assert fetched["body"] == {"you_sent": "[redacted]", "auth": "Bearer [redacted]", "in": "x[redacted]y"}
    assert Artifact.objects.filter(execution=execution).count() == 2

    stored = [
        list(ExecutionEvent.objects.filter(execution=execution).values()),
        list(Step.objects.filter(execution=execution).values()),
        list(Execution.objects.filter(pk=execution.pk).values()),
        list(Checkpoint.objects.filter(execution_id=execution.pk).values()),
        [(a.content, a.metadata) for a in Artifact.objects.filter(execution=execution)],
    ]
    text = json.dumps(stored, default=lambda v: v.decode() if isinstance(v, bytes) else str(v))
    assert "[redacted]" in text
    assert SECRET not in text

    for path in ("", "/steps", "/events", "/artifacts"):
        response = reader_a.get(f"executions/{execution.pk}{path}")
        assert response.status_code == 200, path
        assert SECRET not in response.content.decode(), path
    for artifact in Artifact.objects.filter(execution=execution):
        response = reader_a.get(f"artifacts/{artifact.pk}/content")
        assert response.status_code == 200
        content = b"".join(response.streaming_content) if response.streaming else response.content
        assert b"[redacted]" in content
        assert SECRET.encode() not in content
    page = admin_client.get(f"/admin/executions/execution/{execution.pk}/change/")
    assert page.status_code == 200
    assert SECRET not in page.content.decode()
