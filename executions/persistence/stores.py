"""The kernel's other ports on Django: checkpoints, the inbox, artifacts, units of work."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from enact_platform.locks import locked
from executions.kernel import Checkpoint as KernelCheckpoint
from executions.kernel.artifacts import ArtifactInfo, PutArtifactRequest
from executions.kernel.inbox import InboxMessage as KernelMessage
from executions.kernel.inbox import message_from_dict, message_to_dict, priority_order
from executions.models import Artifact, Checkpoint, ExecutionEvent, InboxMessage, PastCheckpoint
from executions.persistence.connections import give_back
from executions.persistence.events import DjangoEventSink
from tenants.models import TenantLimits
from tenants.services import tenant_reserve_storage

logger = logging.getLogger(__name__)

# Content up to this size is kept in the row; larger content goes to the default storage.
INLINE_CONTENT_BYTES = 256 * 1024


def last_seq(execution_id: str) -> int:
    found = ExecutionEvent.objects.filter(execution_id=execution_id).aggregate(n=Max("seq"))["n"]
    return int(found or 0)


class DjangoCheckpointStore:
    """Keeps the latest checkpoint of each execution (one row, replaced), and its usage; every
    checkpoint is also kept among the execution's past ones (where a fork starts).

    Given the execution's sink, a checkpoint taken inside a unit of work is written with that
    unit's events, in the same statement."""

    def __init__(self, sink: DjangoEventSink | None = None) -> None:
        self.sink = sink

    def save_checkpoint(self, checkpoint: KernelCheckpoint) -> None:
        # Live usage is read from here while a run goes on; the event that ends a run or lets
        # it go carries the usage onto the execution row (one write per step saved).
        data = checkpoint.to_dict()
        if self.sink is not None and self.sink.stage_checkpoint(checkpoint.id, checkpoint.seq, data):
            return
        if self.sink is not None:
            self.sink.sync()  # an older checkpoint still queued must not land after this one
        fields = {"checkpoint_id": checkpoint.id, "seq": checkpoint.seq, "data": data}
        if not Checkpoint.objects.filter(execution_id=checkpoint.execution_id).update(**fields):
            Checkpoint.objects.create(execution_id=checkpoint.execution_id, **fields)
        PastCheckpoint.objects.create(execution_id=checkpoint.execution_id, created_at=timezone.now(), **fields)

    def load_checkpoint(self, execution_id: str) -> KernelCheckpoint | None:
        row = Checkpoint.objects.filter(execution_id=execution_id).first()
        return KernelCheckpoint.from_dict(row.data) if row else None


class DjangoInboxStore:
    """Inbox messages as rows; draining marks them consumed in the caller's transaction.

    ``pending`` (set by the worker's monitor, which polls for new messages) spares a query per
    step: without it, ``has_messages`` asks the database."""

    def __init__(self, tenant_id: int, pending: threading.Event | None = None) -> None:
        self.tenant_id = tenant_id
        self.pending = pending

    def push(self, execution_id: str, message: KernelMessage, *, actor: str = "") -> None:
        """Store a message; ``actor`` is who posted it (else the names the message carries)."""
        payload = message_to_dict(message)
        actor = actor or payload.get("actor") or payload.get("sender") or payload.get("from_agent") or ""
        InboxMessage.objects.create(
            id=message.id,
            execution_id=execution_id,
            tenant_id=self.tenant_id,
            kind=message.kind,
            payload=payload,
            actor=actor,
        )

    def has_messages(self, execution_ids: list[str]) -> bool:
        if self.pending is not None:
            return self.pending.is_set()
        return _readable(execution_ids).exists()

    def drain(self, execution_ids: list[str]) -> list[KernelMessage]:
        if self.pending is not None:
            self.pending.clear()  # before reading, so a message that lands meanwhile sets it again
        with transaction.atomic(savepoint=False):
            rows = list(locked(_readable(execution_ids)).order_by("created_at", "id"))
            InboxMessage.objects.filter(pk__in=[r.pk for r in rows], consumed_at__isnull=True).update(
                consumed_at=timezone.now()
            )
        messages = []
        for row in rows:
            try:
                messages.append(message_from_dict(row.payload))
            except (KeyError, ValueError):
                logger.warning("dropping malformed inbox message %s", row.pk)
        return priority_order(messages)


def _readable(execution_ids: list[str]) -> Any:
    """Unread messages of an execution (the first id) and of the inboxes it inherits (a child
    reading its parent's): from those, everything but control messages, which stay for their
    own execution (a pause sent to a parent is not its child's to take)."""
    own, *inherited = execution_ids
    mine = Q(execution_id=own) | (Q(execution_id__in=inherited) & ~Q(kind="control"))
    return InboxMessage.objects.filter(mine, consumed_at__isnull=True)


class ArtifactRefused(Exception):
    """The tenant's artifact size or storage quota would be exceeded."""


class DjangoArtifactStore:
    """Artifact content in the row (small) or in Django's default storage (large).

    The content is written before the short transaction that reserves the tenant's storage and
    inserts the row, so no lock is held during file I/O; a refused or failed insert removes the
    file again. A worker that lost its lease (``fence``) stores nothing."""

    def __init__(
        self,
        tenant_id: int,
        limits: TenantLimits,
        fence: threading.Event | None = None,
        sink: DjangoEventSink | None = None,
    ) -> None:
        self.sink = sink
        self.tenant_id = tenant_id
        self.max_artifact_bytes = limits.max_artifact_bytes
        self.max_storage_bytes = limits.max_storage_bytes
        self.fence = fence or threading.Event()

    def put(self, request: PutArtifactRequest) -> ArtifactInfo:
        size = request.size
        if self.fence.is_set():
            raise ArtifactRefused("this worker no longer owns the execution")
        if size > self.max_artifact_bytes:
            raise ArtifactRefused(f"artifact of {size} bytes is over the limit of {self.max_artifact_bytes}")
        if self.sink is not None:
            self.sink.sync()  # the step that stores it is in the log before the artifact's row
        row = self._row(request)
        if size > INLINE_CONTENT_BYTES:
            row.file.save(request.artifact_id, ContentFile(request.content), save=False)
        else:
            row.content = request.content
        try:
            with transaction.atomic():
                if not tenant_reserve_storage(tenant_id=self.tenant_id, size=size, maximum=self.max_storage_bytes):
                    raise ArtifactRefused("the tenant's storage quota is full")
                row.save(force_insert=True)
        except BaseException:
            if row.file:
                row.file.delete(save=False)
            raise
        return ArtifactInfo(
            request.artifact_id,
            request.execution_id,
            request.step_id,
            request.name,
            request.artifact_type,
            request.content_type,
            size,
            request.sha256,
            dict(request.metadata),
        )

    def _row(self, request: PutArtifactRequest) -> Artifact:
        return Artifact(
            id=request.artifact_id,
            execution_id=request.execution_id,
            tenant_id=self.tenant_id,
            step_id=request.step_id,
            name=request.name,
            artifact_type=request.artifact_type.value,
            content_type=request.content_type,
            size=request.size,
            sha256=request.sha256,
            metadata=request.metadata,
        )


class DjangoUnitOfWork:
    """A transaction around a unit of the kernel's work; the sink writes what it staged at its end."""

    def __init__(self, sink: DjangoEventSink) -> None:
        self.sink = sink

    @contextmanager
    def atomic(self) -> Iterator[None]:
        if self.sink.in_unit:
            # A nested unit joins the outer one: a failure rolls the whole unit back, never half.
            self.sink.begin()
            try:
                yield
            except BaseException:
                self.sink.end(ok=False)
                transaction.set_rollback(True)
                raise
            self.sink.end(ok=True)
            return
        try:
            with transaction.atomic(savepoint=False):
                self.sink.begin()
                try:
                    yield
                except BaseException:
                    self.sink.end(ok=False)
                    raise
                self.sink.end(ok=True)
        finally:
            # Between units the run waits for its step: with a pool, hold no connection meanwhile.
            give_back()
