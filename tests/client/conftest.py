"""The client's tests run against the platform as ``manage.py up`` runs it: a real web server
(daphne) and a real worker cluster, on a SQLite database of their own, one for the whole
directory. The client package is imported from ``client/`` when it is not installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ..test_up import ROOT, _free_port

CLIENT_DIR = ROOT / "client"
if str(CLIENT_DIR) not in sys.path:
    sys.path.insert(0, str(CLIENT_DIR))

# The callers the tests need, made once in the server's database: a write and a read key of
# the demo tenant, a key of another tenant, of a tenant allowed 3 requests a minute, of one
# allowed no executions today, and of one whose executions only the list test makes.
SETUP = """
import json
from tenants.models import ApiKey, Tenant
from tenants.services import api_key_create, tenant_create, tenant_set_limits

def key(tenant, scope="write"):
    return api_key_create(tenant=tenant, scope=scope, name="client tests")[1]

demo = Tenant.objects.get(slug="demo")
other = tenant_create(slug="other", name="Other")
limited = tenant_create(slug="limited", name="Limited")
tenant_set_limits(tenant=limited, changes={"requests_per_minute": 3})
broke = tenant_create(slug="broke", name="Broke")
tenant_set_limits(tenant=broke, changes={"executions_per_day": 0})
lister = tenant_create(slug="lister", name="Lister")
print(json.dumps({
    "write": key(demo), "read": key(demo, ApiKey.Scope.READ), "other": key(other),
    "limited": key(limited), "broke": key(broke), "lister": key(lister),
}))
"""


@dataclass(frozen=True)
class Platform:
    url: str
    port: int
    keys: dict[str, str]
    env: dict[str, str]


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    tmp = tmp_path_factory.mktemp("client-platform")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(ENACT_SQLITE_PATH=str(tmp / "db.sqlite3"), ENACT_STATE_DIR=str(tmp), ENACT_WAKE_DIR=str(tmp / "wake"))
    log = tmp / "up.log"
    with log.open("w") as output:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "up", "--port", str(port)],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "log in as" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "log in as" in log.read_text(), log.read_text()[-2000:]
        made = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", SETUP],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True,
        )  # fmt: skip
        keys = json.loads(made.stdout.strip().splitlines()[-1])
        yield Platform(f"http://127.0.0.1:{port}", port, keys, env)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
