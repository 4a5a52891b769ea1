"""Mid-execution messages: checked after every step, control first."""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from . import ids


class ControlAction(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    CANCEL = "cancel"
    CHECKPOINT = "checkpoint"
    COMPACT = "compact"


class GuidancePriority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"


class EvidenceImpact(StrEnum):
    INFORMATIONAL = "informational"
    SUPPORTS_PLAN = "supports_plan"
    REQUIRES_CHANGE = "requires_change"
    CONTRADICTS_PLAN = "contradicts_plan"


@dataclass(frozen=True)
class ControlMessage:
    action: ControlAction
    actor: str
    reason: str | None = None
    id: str = field(default_factory=ids.new_message_id)
    kind: str = "control"


@dataclass(frozen=True)
class GuidanceMessage:
    content: str
    priority: GuidancePriority = GuidancePriority.NORMAL
    sender: str | None = None
    id: str = field(default_factory=ids.new_message_id)
    kind: str = "guidance"


@dataclass(frozen=True)
class EvidenceMessage:
    source: str
    title: str
    content: Any
    confidence: float = 1.0
    impact: EvidenceImpact = EvidenceImpact.INFORMATIONAL
    id: str = field(default_factory=ids.new_message_id)
    kind: str = "evidence"

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError("evidence confidence must be between 0 and 1")


@dataclass(frozen=True)
class A2AMessage:
    from_agent: str
    message_type: str
    payload: Any
    id: str = field(default_factory=ids.new_message_id)
    kind: str = "a2a"


InboxMessage = ControlMessage | GuidanceMessage | EvidenceMessage | A2AMessage


def priority_rank(message: InboxMessage) -> int:
    """Lower is handled first: control, contradicting evidence, evidence, high guidance, guidance, a2a."""
    if isinstance(message, ControlMessage):
        return 0
    if isinstance(message, EvidenceMessage):
        return 1 if message.impact is EvidenceImpact.CONTRADICTS_PLAN else 2
    if isinstance(message, GuidanceMessage):
        return 3 if message.priority is GuidancePriority.HIGH else 4
    return 5


def priority_order(messages: Iterable[InboxMessage]) -> list[InboxMessage]:
    """Sort by rank; ``sorted`` is stable, so arrival order holds within a rank."""
    return sorted(messages, key=priority_rank)


def message_to_dict(message: InboxMessage) -> dict[str, Any]:
    data: dict[str, Any] = {"id": message.id, "kind": message.kind}
    if isinstance(message, ControlMessage):
        data.update(action=message.action.value, actor=message.actor, reason=message.reason)
    elif isinstance(message, GuidanceMessage):
        data.update(content=message.content, priority=message.priority.value, sender=message.sender)
    elif isinstance(message, EvidenceMessage):
        data.update(
            source=message.source,
            title=message.title,
            content=message.content,
            confidence=message.confidence,
            impact=message.impact.value,
        )
    else:
        data.update(from_agent=message.from_agent, message_type=message.message_type, payload=message.payload)
    return data


def message_from_dict(data: dict[str, Any]) -> InboxMessage:
    """Rebuild a message; raises ``KeyError``/``ValueError`` on malformed data."""
    kind = data["kind"]
    mid = data.get("id") or ids.new_message_id()
    if kind == "control":
        return ControlMessage(
            ControlAction(data["action"]), str(data.get("actor") or "unknown"), data.get("reason"), mid
        )
    if kind == "guidance":
        return GuidanceMessage(
            str(data["content"]), GuidancePriority(data.get("priority", "normal")), data.get("sender"), mid
        )
    if kind == "evidence":
        return EvidenceMessage(
            str(data["source"]),
            str(data["title"]),
            data.get("content"),
            float(data.get("confidence", 1.0)),
            EvidenceImpact(data.get("impact", "informational")),
            mid,
        )
    if kind == "a2a":
        return A2AMessage(str(data["from_agent"]), str(data["message_type"]), data.get("payload"), mid)
    raise ValueError(f"unknown inbox message kind: {kind!r}")


class InboxStore(Protocol):
    """Per-execution inboxes. ``drain`` hands each message out once."""

    def push(self, execution_id: str, message: InboxMessage) -> None: ...

    def has_messages(self, execution_ids: list[str]) -> bool: ...

    def drain(self, execution_ids: list[str]) -> list[InboxMessage]:
        """Remove and return the messages of these inboxes, in priority order across all of them."""
        ...


class InMemoryInbox:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrival = itertools.count()
        self._boxes: dict[str, list[tuple[int, InboxMessage]]] = defaultdict(list)

    def push(self, execution_id: str, message: InboxMessage) -> None:
        with self._lock:
            self._boxes[execution_id].append((next(self._arrival), message))

    def has_messages(self, execution_ids: list[str]) -> bool:
        return any(self._boxes.get(eid) for eid in execution_ids)

    def drain(self, execution_ids: list[str]) -> list[InboxMessage]:
        with self._lock:
            taken = [item for eid in execution_ids for item in self._boxes.pop(eid, [])]
        taken.sort(key=lambda item: item[0])
        return priority_order(message for _, message in taken)
