"""Settings come from the environment and fail loudly on bad values."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from enact_platform.settings import SettingError, database_from_url, env_bool, env_float, env_int

ROOT = Path(__file__).resolve().parents[1]


def test_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    db = database_from_url("postgres://ann:s%40cret@db.local:6543/enact")
    assert (db["ENGINE"], db["NAME"], db["USER"], db["PASSWORD"], db["HOST"], db["PORT"]) == (
        "django.db.backends.postgresql",
        "enact",
        "ann",
        "s@cret",
        "db.local",
        "6543",
    )
    with pytest.raises(SettingError, match="postgres:// URL"):
        database_from_url("mysql://x/y")


@pytest.mark.parametrize(
    ("fn", "raw", "message"),
    [
        (lambda: env_bool("X", False), "maybe", "must be a boolean"),
        (lambda: env_int("X", 1), "1.5", "must be a whole number"),
        (lambda: env_int("X", 1, minimum=1), "0", "must be at least 1"),
        (lambda: env_float("X", 1.0), "fast", "must be a number"),
    ],
)
def test_bad_values_fail_loudly(monkeypatch: pytest.MonkeyPatch, fn: object, raw: str, message: str) -> None:
    monkeypatch.setenv("X", raw)
    with pytest.raises(SettingError, match=message):
        fn()  # type: ignore[operator]


def test_the_embedded_default_needs_no_variables() -> None:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='enact_platform.settings'; django.setup();"
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'], 'orm' in s.Q_CLUSTER, s.ENACT_PUBLISH_DIRECT)"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["django.db.backends.sqlite3", "channels.layers.InMemoryChannelLayer", "True", "False"]


def test_a_bad_lease_setting_stops_start_up() -> None:
    code = "import os; os.environ['DJANGO_SETTINGS_MODULE']='enact_platform.settings'; import django; django.setup()"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "ENACT_LEASE_SECONDS": "2", "ENACT_HEARTBEAT_SECONDS": "5"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ENACT_LEASE_SECONDS must be at least twice ENACT_HEARTBEAT_SECONDS" in out.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "ENACT_SECRETS_KEY must be set when ENACT_DEBUG is off"),
        ({"ENACT_SECRETS_KEY": "short"}, "ENACT_SECRETS_KEY must be 32 bytes in url-safe base64 (a Fernet key)"),
    ],
)
def test_a_deployment_needs_a_proper_secrets_key(extra: dict[str, str], message: str) -> None:
    code = "import os; os.environ['DJANGO_SETTINGS_MODULE']='enact_platform.settings'; import django; django.setup()"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "ENACT_DEBUG": "0", "SECRET_KEY": "a-real-one", **extra}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert message in out.stderr


# A deployment behind TLS: debug off, its own keys, and the variables README's security section names.
DEPLOYED = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/tmp",
    "ENACT_DEBUG": "0",
    "SECRET_KEY": "k3y-Of-a-real-deployment-" + "x9Q2mZ7pL4vR8sT1wY6uB3nE5hJ0cF" * 2,
    "ENACT_SECRETS_KEY": "3pA0Q5m1b0zvJ8uZ0Zs8y3yVb1o8mO1kQz2n4Zb6Q1E=",
    "ALLOWED_HOSTS": "enact.example.com",
    "ENACT_TLS": "1",
    "ENACT_HSTS_SUBDOMAINS": "1",
    "ENACT_HSTS_PRELOAD": "1",
    "ENACT_PROXY_SSL_HEADER": "X-Forwarded-Proto",
}


def test_a_deployment_behind_tls_passes_check_deploy_without_a_warning() -> None:
    out = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=DEPLOYED,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "System check identified no issues" in out.stdout


def test_behind_a_tls_proxy_plain_http_is_redirected_and_https_gets_hsts_and_secure_cookies() -> None:
    code = """
import os, json
os.environ['DJANGO_SETTINGS_MODULE'] = 'enact_platform.settings'
import django; django.setup()
from django.test import Client
c = Client(HTTP_HOST='enact.example.com')
plain = c.get('/login/')
health = c.get('/healthz')
tls = c.get('/login/', HTTP_X_FORWARDED_PROTO='https')
print(json.dumps({
    'plain': [plain.status_code, plain.get('Location')],
    'health': health.status_code,
    'tls': tls.status_code,
    'hsts': tls.get('Strict-Transport-Security'),
    'csrf_cookie_secure': bool(tls.cookies['csrftoken']['secure']),
}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=DEPLOYED, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["plain"] == [301, "https://enact.example.com/login/"]
    assert seen["health"] == 200  # a load balancer's probe over plain HTTP is not redirected
    assert seen["tls"] == 200
    assert seen["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert seen["csrf_cookie_secure"] is True


def test_without_tls_nothing_is_redirected_or_marked_secure() -> None:
    code = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE']='enact_platform.settings'; import django; django.setup();"
        "from django.conf import settings as s;"
        "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SECURE_PROXY_SSL_HEADER)"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False", "0", "None"]


def test_a_proxy_ssl_header_must_name_a_header() -> None:
    code = "import os; os.environ['DJANGO_SETTINGS_MODULE']='enact_platform.settings'; import django; django.setup()"
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "ENACT_PROXY_SSL_HEADER": "X Forwarded: https"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "ENACT_PROXY_SSL_HEADER must be a header name" in out.stderr
