"""Fixtures shared by the platform's tests: every test gets two tenants, so cross-tenant checks
are routine, and work is run by calling the worker directly rather than a queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from executions import queue
from executions.runtime.run import execution_run
from executions.services.controls import execution_cancel

if TYPE_CHECKING:
    from tenants.models import Tenant


@pytest.fixture
def tenant_a(db: None) -> Tenant:
    from tenants.services import tenant_create

    return tenant_create(slug="acme", name="Acme")


@pytest.fixture
def tenant_b(db: None) -> Tenant:
    from tenants.services import tenant_create

    return tenant_create(slug="globex", name="Globex")


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record what would be queued instead of queueing it."""
    calls: list[str] = []
    monkeypatch.setattr(queue, "enqueue_run", calls.append)
    monkeypatch.setattr(queue, "enqueue_runs", calls.extend)
    return calls


@pytest.fixture
def inline_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[threading.Thread]]:
    """Run queued executions at once, each on its own thread, as a worker process would."""

    threads: list[threading.Thread] = []

    def run(execution_id: str) -> None:
        thread = threading.Thread(target=_run_closing_connection, args=(execution_run, execution_id), daemon=True)
        threads.append(thread)
        thread.start()

    monkeypatch.setattr(queue, "enqueue_run", run)
    monkeypatch.setattr(queue, "enqueue_runs", lambda ids: [run(i) for i in ids])
    yield threads
    for thread in threads:
        thread.join(10)


def _run_closing_connection(fn: Callable[[str], Any], execution_id: str) -> None:
    from django.db import connection

    try:
        fn(execution_id)
    finally:
        connection.close()


@pytest.fixture
def fresh_channel_layer(settings: Any) -> Iterator[None]:
    """A channel layer object of the test's own: each test runs its own event loop, and a layer
    keeps queues and locks bound to the loop that first used them (a server has one loop). With
    Redis it is the real layer, new; without, an in-memory one."""
    from channels.layers import channel_layers

    if not settings.REDIS_URL:
        settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@pytest.fixture(scope="session", autouse=True)
def _end_stray_database_sessions(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    """Threads that ran node code (the kernel's runner threads) keep their own connections, as
    worker threads should; PostgreSQL refuses to drop the test database while they are open."""
    yield
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            # This process's own pooled connections first: terminated under the pool, one would
            # be handed to the test database's teardown.
            connection.close()
            connection.close_pool()
            params = {**connection.get_connection_params(), "dbname": connection.settings_dict["NAME"]}
            try:
                own = psycopg.connect(**params, autocommit=True)
            except psycopg.OperationalError:
                return  # the test database is gone already: nobody is left on it
            with own:
                own.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        connection.close()


def cancel_on_this_thread(tenant: Any, execution_id: str) -> None:
    """Cancel an execution from a thread of the test's own (``asyncio.to_thread``), closing the
    connection that thread opened, as a request thread does."""
    from django.db import connection

    try:
        execution_cancel(tenant=tenant, execution_id=execution_id, reason="quiet")
    finally:
        connection.close()
