"""Settings for the Enact Platform, driven by the environment.

With no variables at all this is the embedded default: SQLite in the project folder, the
in-memory channel layer, django-q2 on the ORM broker. ``DATABASE_URL`` and ``REDIS_URL`` move
to PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote, urlparse

from csp.constants import NONCE, NONE, SELF

BASE_DIR = Path(__file__).resolve().parent.parent


class SettingError(ValueError):
    pass


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingError(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), not {raw!r}")


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingError(f"{name} must be a number, not {raw!r}") from None
    if value < minimum:
        raise SettingError(f"{name} must be at least {minimum}, not {value}")
    return value


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise SettingError(f"{name} must be at least {minimum}, not {value}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(url: str) -> dict[str, object]:
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise SettingError(f"DATABASE_URL must be a postgres:// URL, not {parsed.scheme or url!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")) or "postgres",
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        # A pool per process (psycopg's, through Django): however many requests are in flight or
        # executions run in a worker's slots, a process holds at most ENACT_DB_POOL_SIZE
        # connections; a thread borrows one for a unit of work and gives it back (see README,
        # "Sizing slots, workers and connections").
        "CONN_MAX_AGE": 0,
        "OPTIONS": {
            # How the processes show in pg_stat_activity.
            "application_name": env_str("ENACT_DB_APPLICATION_NAME", "enact"),
            "pool": {
                "min_size": env_int("ENACT_DB_POOL_MIN", 1, minimum=0),
                "max_size": env_int("ENACT_DB_POOL_SIZE", 10, minimum=1),
                "timeout": env_float("ENACT_DB_POOL_TIMEOUT", 10.0, minimum=0.1),
            },
        },
    }


DEBUG = env_bool("ENACT_DEBUG", True)
# The embedded default runs on one machine for one operator; a deployment sets its own key.
SECRET_KEY = env_str("SECRET_KEY", "enact-embedded-default-insecure-key")
if not DEBUG and SECRET_KEY.startswith("enact-embedded-default"):
    raise SettingError("SECRET_KEY must be set when ENACT_DEBUG is off")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])

# TLS. A deployment served over HTTPS sets ENACT_TLS=1: plain HTTP is redirected to HTTPS (except
# the probes a load balancer sends from inside), browsers are told to use only HTTPS from then on
# (HSTS, ENACT_HSTS_SECONDS), and the session and CSRF cookies travel only over HTTPS. Whether
# HSTS covers subdomains and may be preloaded into browsers is a decision about the whole domain,
# so each has a variable of its own. Behind a proxy that ends TLS, ENACT_PROXY_SSL_HEADER names
# the header it sets to "https" (X-Forwarded-Proto): the proxy must set it on every request and
# strip it from what clients send.
ENACT_TLS = env_bool("ENACT_TLS", False)
SECURE_SSL_REDIRECT = ENACT_TLS
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
SESSION_COOKIE_SECURE = ENACT_TLS
CSRF_COOKIE_SECURE = ENACT_TLS
SECURE_HSTS_SECONDS = env_int("ENACT_HSTS_SECONDS", 365 * 24 * 3600, minimum=0) if ENACT_TLS else 0
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("ENACT_HSTS_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("ENACT_HSTS_PRELOAD", False)
_PROXY_SSL_HEADER = env_str("ENACT_PROXY_SSL_HEADER").strip()
if _PROXY_SSL_HEADER and not _PROXY_SSL_HEADER.replace("-", "").replace("_", "").isalnum():
    raise SettingError(
        f"ENACT_PROXY_SSL_HEADER must be a header name such as X-Forwarded-Proto, not {_PROXY_SSL_HEADER!r}"
    )
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _PROXY_SSL_HEADER.upper().replace("-", "_"), "https") if _PROXY_SSL_HEADER else None
)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "django_q",
    "axes",
    "tenants",
    "executions",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "enact_platform.api.middleware.ApiErrorMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes asks: it answers a locked-out login with the lockout page.
    "axes.middleware.AxesMiddleware",
]

# Content Security Policy (django-csp) on every response: scripts, styles, images, fonts and
# connections (fetch and websockets) come from this origin only; no inline script, style or event
# handler runs unless it carries the response's nonce (``{{ request.csp_nonce }}``), no plugin
# loads, no other site frames the pages, and forms post only here. The dashboard and the admin
# keep to it (tests/browser/test_csp.py); styles set from script (element.style) are allowed.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF, NONCE],
        "style-src": [SELF, NONCE],
        # data: for the icons the API docs (Swagger UI) draw in their stylesheet.
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

# Login throttling (django-axes), for the dashboard's and the admin's login alike: after
# ENACT_LOGIN_FAILURE_LIMIT wrong passwords for one username from one address, that username is
# refused from that address (even with the right password) until ENACT_LOGIN_COOLOFF_MINUTES
# have passed since the last failure. Operators lift a lockout with `manage.py axes_reset_username
# <name>` (or axes_reset_ip, axes_reset) or in the admin (Axes: access attempts). Behind a proxy,
# daphne's --proxy-headers makes the client's own address the one counted.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("ENACT_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("ENACT_LOGIN_COOLOFF_MINUTES", 15.0, minimum=0.1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# A failure while locked out does not push the end of the lockout further away: the page tells
# how long to wait, and that stays true.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"

ROOT_URLCONF = "enact_platform.urls"
ASGI_APPLICATION = "enact_platform.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if env_str("DATABASE_URL"):
    DATABASES = {"default": database_from_url(env_str("DATABASE_URL"))}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env_str("ENACT_SQLITE_PATH", str(BASE_DIR / "enact.sqlite3")),
            # WAL lets the web process read while a worker writes. IMMEDIATE transactions take the
            # write lock up front, so check-then-write inside one (a quota, a claim) is race-free.
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
            },
            # Keep connections: the web process's event relay and its websocket consumers read
            # many times a second, and opening SQLite (with its pragmas) each time was most of it.
            "CONN_MAX_AGE": 60,
            # A file (worker processes in the tests must see it), one per test session.
            "TEST": {
                "NAME": env_str(
                    "ENACT_SQLITE_TEST_PATH", str(Path(tempfile.gettempdir()) / f"enact-test-{os.getpid()}.sqlite3")
                )
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    # Redis pub/sub: a group message reaches each web process once, and the process hands it to
    # its own sockets in memory. (The list-based RedisChannelLayer stores every message in Redis
    # and pops it back per process, which costs a web process several times the CPU per event.)
    # Nothing is kept while a process is away from Redis: listeners find what they missed in the
    # event log by its seq, and look there whenever they have been quiet a while
    # (executions.live). Connections live for weeks: a dead one must show, not hang.
    _REDIS_HOST = {
        "address": REDIS_URL,
        "socket_timeout": 5,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 30,
    }
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [_REDIS_HOST]}}
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The cache holds the API's request counters; every web process must share it when scaled.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "enact",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard:executions"
LOGOUT_REDIRECT_URL = "login"

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

# django-q2. ``retry`` must exceed ``timeout`` or the broker hands a long task out twice; our
# lease makes a second delivery harmless anyway. With REDIS_URL the queue is Redis, else the ORM.
Q_CLUSTER: dict[str, object] = {
    # The queue's name: processes that share a broker but not work (a benchmark) use their own.
    "name": env_str("ENACT_QUEUE_NAME", "enact"),
    "workers": env_int("ENACT_WORKERS", 2, minimum=1),
    "timeout": env_int("ENACT_TASK_TIMEOUT", 6 * 3600, minimum=10),
    "retry": env_int("ENACT_TASK_TIMEOUT", 6 * 3600, minimum=10) + 600,
    "max_attempts": 1,
    "catch_up": False,
    "ack_failures": True,
    "save_limit": 1000,
    # Executions do not travel through the broker (the execution table is the queue, and workers
    # are woken by executions/wakeups.py): an idle cluster looks at it seldom.
    "poll": env_float("ENACT_QUEUE_POLL_SECONDS", 0.2, minimum=0.001),
    "sync": env_bool("ENACT_QUEUE_SYNC", False),
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

# Live events: with Redis every process publishes what it commits; without it the web process
# relays rows of the event log (see executions/live/relay.py).
ENACT_PUBLISH_DIRECT = env_bool("ENACT_PUBLISH_DIRECT", bool(REDIS_URL))
# The relay reads the log when a worker says it committed events (executions/wakeups.py), and
# this often besides, in case that news was lost.
ENACT_RELAY_POLL_SECONDS = env_float("ENACT_RELAY_POLL_SECONDS", 1.0, minimum=0.001)

# Workers. A worker holds a lease on each execution it runs and renews it with heartbeats; the
# reaper hands executions whose lease expired to another worker.
ENACT_LEASE_SECONDS = env_float("ENACT_LEASE_SECONDS", 30.0, minimum=1.0)
ENACT_HEARTBEAT_SECONDS = env_float("ENACT_HEARTBEAT_SECONDS", 5.0, minimum=0.1)
# Cancels, pauses and messages are pushed to the worker that holds the execution (wake-ups); the
# monitor also looks at the database this often, in case a push was lost.
ENACT_CONTROL_POLL_SECONDS = env_float("ENACT_CONTROL_POLL_SECONDS", 0.05, minimum=0.005)
# Slots: executions one worker process runs at once, each on a thread (most of an agent's time
# is waiting on a model or a tool, which costs a thread, not a process).
ENACT_SLOTS = env_int("ENACT_SLOTS", 100, minimum=1)
# Workers are woken when work is ready; they also look for it this often, in case a wake-up was lost.
ENACT_DISPATCH_POLL_SECONDS = env_float("ENACT_DISPATCH_POLL_SECONDS", 1.0, minimum=0.01)
# On SIGTERM a worker stops claiming and gives its executions this long to reach a step boundary
# and hand themselves back; what is still running then is handed back mid-step (that step reruns).
ENACT_STOP_SECONDS = env_float("ENACT_STOP_SECONDS", 2.0, minimum=0.0)
# Where the embedded default's worker processes listen for wake-ups (default: a folder in the
# temporary directory named after the database).
ENACT_WAKE_DIR = env_str("ENACT_WAKE_DIR", "")
ENACT_REAP_SECONDS = env_float("ENACT_REAP_SECONDS", 5.0, minimum=0.1)
# How often each worker deletes what the tenants' retention periods let go of (0: never; then
# run `manage.py enact sweep` from a scheduler).
ENACT_SWEEP_SECONDS = env_float("ENACT_SWEEP_SECONDS", 3600.0, minimum=0.0)
# Schedules: each worker process sleeps until the next schedule is due, this long at most (a
# schedule created or changed meanwhile is seen then).
ENACT_SCHEDULE_POLL_SECONDS = env_float("ENACT_SCHEDULE_POLL_SECONDS", 5.0, minimum=0.05)
# Webhooks (executions/services/webhooks.py): a send's timeout, the first retry's delay (each next
# one three times longer, up to 6 h), how many attempts in all, and how often idle workers look.
ENACT_WEBHOOK_TIMEOUT_SECONDS = env_float("ENACT_WEBHOOK_TIMEOUT_SECONDS", 5.0, minimum=0.1)
ENACT_WEBHOOK_RETRY_SECONDS = env_float("ENACT_WEBHOOK_RETRY_SECONDS", 10.0, minimum=0.01)
ENACT_WEBHOOK_MAX_ATTEMPTS = env_int("ENACT_WEBHOOK_MAX_ATTEMPTS", 11, minimum=1)
ENACT_WEBHOOK_POLL_SECONDS = env_float("ENACT_WEBHOOK_POLL_SECONDS", 5.0, minimum=0.05)
if ENACT_HEARTBEAT_SECONDS * 2 > ENACT_LEASE_SECONDS:
    raise SettingError("ENACT_LEASE_SECONDS must be at least twice ENACT_HEARTBEAT_SECONDS")

# Where the embedded default keeps its local state besides the database (the admin password).
ENACT_STATE_DIR = Path(env_str("ENACT_STATE_DIR", str(BASE_DIR)))

# The REST API (enact_platform/api/ and each app's api.py).
ENACT_API_MAX_BODY_BYTES = env_int("ENACT_API_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
# How many requests of a web process run Django's (threaded) code at once; the others wait in the
# event loop, holding no thread and no connection, and past ENACT_REQUEST_QUEUE waiting a request
# is answered 429 server_busy at once (enact_platform/admission.py). Keep it below the pool size.
ENACT_REQUEST_THREADS = env_int("ENACT_REQUEST_THREADS", 8, minimum=1)
ENACT_REQUEST_QUEUE = env_int("ENACT_REQUEST_QUEUE", 2000, minimum=0)
ENACT_SSE_KEEPALIVE_SECONDS = env_float("ENACT_SSE_KEEPALIVE_SECONDS", 15.0, minimum=0.05)
# How often a websocket looks at the database for what never came live (an execution's socket
# only once it has been quiet that long).
ENACT_SOCKET_RESYNC_SECONDS = env_float("ENACT_SOCKET_RESYNC_SECONDS", 15.0, minimum=0.05)
# Sockets and event streams one API key or one user may hold open at once (across the web
# processes when REDIS_URL is set; per process while Redis is away).
ENACT_MAX_LIVE_CONNECTIONS = env_int("ENACT_MAX_LIVE_CONNECTIONS", 20, minimum=1)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "enact_platform.api.auth.ApiKeyAuthentication",
        "enact_platform.api.auth.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["enact_platform.api.auth.TenantScoped"],
    "DEFAULT_THROTTLE_CLASSES": ["enact_platform.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_PARSER_CLASSES": ["enact_platform.api.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "enact_platform.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "URL_FORMAT_OVERRIDE": None,  # JSON only; ?format= means nothing here
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Enact Platform API",
    "DESCRIPTION": "Run agent and workflow graphs for your tenant, and follow them live.\n\n"
    "No text anywhere in a request body (an input, a definition, metadata) may hold NUL (\\u0000) or a "
    "lone surrogate: no database stores them, and such a request is refused with 400 invalid_input.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_AUTHENTICATION": [],
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Several models have a "state": each set of choices gets a name of its own in the schema.
    "ENUM_NAME_OVERRIDES": {
        "ExecutionStateEnum": "executions.models.ExecutionStateChoices",
        "DeliveryStateEnum": "executions.models.WebhookDelivery.State",
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        # A body one of whose forms must be given is required (executions/serializers.py).
        "executions.serializers.require_bodies",
    ],
}

# Tenant secrets (provider keys) are encrypted with this key (Fernet: 32 url-safe base64 bytes;
# `python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`).
# Without it, a key derived from SECRET_KEY is used; a deployment sets its own, and keeps it:
# secrets saved under one key cannot be read under another.
ENACT_SECRETS_KEY = env_str("ENACT_SECRETS_KEY", "")
if not DEBUG and not ENACT_SECRETS_KEY:
    raise SettingError("ENACT_SECRETS_KEY must be set when ENACT_DEBUG is off")
if ENACT_SECRETS_KEY:
    import base64
    import binascii

    try:
        _secrets_key_bytes = base64.urlsafe_b64decode(ENACT_SECRETS_KEY.encode())
    except (binascii.Error, ValueError):
        _secrets_key_bytes = b""
    if len(_secrets_key_bytes) != 32:
        raise SettingError("ENACT_SECRETS_KEY must be 32 bytes in url-safe base64 (a Fernet key)")
# The `llm` node's default timeout for one model call, in seconds.
ENACT_LLM_TIMEOUT_SECONDS = env_float("ENACT_LLM_TIMEOUT_SECONDS", 120.0, minimum=1.0)

# /metrics: with a token, scrapers send it as a bearer token; without, only this machine (and
# staff sessions) may read the figures.
ENACT_METRICS_TOKEN = env_str("ENACT_METRICS_TOKEN", "")

# Logs: every record carries the tenant and execution it concerns ("-" when none); one JSON
# object a line with ENACT_LOG_FORMAT=json.
ENACT_LOG_FORMAT = env_str("ENACT_LOG_FORMAT", "text")
if ENACT_LOG_FORMAT not in ("text", "json"):
    raise SettingError(f"ENACT_LOG_FORMAT must be text or json, not {ENACT_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "executions.ops.logs.ContextFilter"}},
    "formatters": {
        "text": {
            "format": "%(asctime)s %(levelname)s %(name)s [tenant=%(tenant_id)s execution=%(execution_id)s] %(message)s"
        },
        "json": {"()": "executions.ops.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "filters": ["context"], "formatter": ENACT_LOG_FORMAT}},
    # WARNING by default, as Python logs without configuration; ENACT_LOG_LEVEL=INFO says more.
    "root": {"handlers": ["console"], "level": env_str("ENACT_LOG_LEVEL", "WARNING")},
    # Django's own logging gives "django" a console handler of its own (with DEBUG on) that prints
    # every request and error a second time, unformatted, before it reaches ours: one handler only.
    "loggers": {"django": {"handlers": [], "level": "INFO", "propagate": True}},
}
