"""Database connections of long-lived threads: give them back between units of work.

With PostgreSQL each process has a pool (``DATABASES`` ``pool`` option): a thread borrows a
connection when it first queries and holds it until it closes it. Worker threads live long and
wait long (a slot's run waits on a model, the monitor sleeps between ticks), so they give their
connection back to the pool when a unit of work is done; then a process holds at most the pool's
size, whatever its slot count. SQLite has no pool: its connections are cheap to keep and are kept.
"""

from __future__ import annotations

from django.db import connection, connections
from django.db.backends.postgresql.base import DatabaseWrapper as PostgreSQLWrapper


def pooled() -> bool:
    return bool((connection.settings_dict.get("OPTIONS") or {}).get("pool"))


def give_back() -> None:
    """Return this thread's connection to the pool, if it has one and no transaction is open."""
    if pooled() and connection.connection is not None and not connection.in_atomic_block:
        connection.close()


def forget_after_fork() -> None:
    """In a forked child process (django-q2 forks its sentinel, monitor, pusher and workers):
    the connections and the pool it inherited are its parent's, the same sockets. Forget them,
    unclosed (closing would end the parent's sessions), so this process makes its own."""
    for wrapper in connections.all(initialized_only=True):
        wrapper.connection = None
    PostgreSQLWrapper._connection_pools.clear()
