"""Every row lock the platform takes goes through here, and this is the order they are taken in.

A transaction that needs several locks takes them in the order of ``ORDER``, and several rows of
one model in primary-key order, so two transactions never wait on each other in a circle:

0. ``executions.Schedule``: firing it (its execution's submission, and the cancels of its
   overlap policy, come after, in the same transaction); changing it.
1. ``tenants.Tenant``: claiming an execution (the tenant's running count is read under it).
2. ``tenants.TenantLimits``: changing a tenant's limits.
3. ``executions.Execution``: controls (cancel, resume, input), claiming, answering a parent;
   a parent before its child.
4. ``executions.Blueprint``: saving a new version.
5. ``executions.InboxMessage``: draining an inbox, in the order the messages are read.
6. ``executions.WebhookDelivery``: claiming deliveries to send (alone in its transaction).

Locks on executions and tenants are ``NO KEY UPDATE`` (``no_key=True``): they serialize the
writers of those rows, but not the foreign-key checks of a worker appending events to the
execution meanwhile (``FOR UPDATE`` would deadlock with those). SQLite has no row locks: there
a transaction that writes takes the database's write lock, and these calls lock nothing more.

Models are named by label, not imported, so both apps can use this module while ``tenants``
never imports ``executions``.
"""

from __future__ import annotations

from typing import TypeVar

from django.db import models

ORDER = (
    "executions.Schedule",
    "tenants.Tenant",
    "tenants.TenantLimits",
    "executions.Execution",
    "executions.Blueprint",
    "executions.InboxMessage",
    "executions.WebhookDelivery",
)

M = TypeVar("M", bound=models.Model)


def locked(
    queryset: models.QuerySet[M], *, no_key: bool = False, of: tuple[str, ...] = (), skip_locked: bool = False
) -> models.QuerySet[M]:
    """``queryset`` with its rows locked (``SELECT … FOR [NO KEY] UPDATE``) when it is read;
    with ``skip_locked``, rows another transaction holds are left out instead of waited for.

    Only models with a place in ``ORDER`` may be locked: a new lock is placed there first."""
    label = queryset.model._meta.label
    if label not in ORDER:
        raise ValueError(f"{label} has no place in the lock order: add it to enact_platform/locks.py ORDER")
    return queryset.select_for_update(no_key=no_key, of=of, skip_locked=skip_locked)
