"""What the kernel persists: snapshots (a cache) and checkpoints (resume points)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .state import ExecutionState


@dataclass(frozen=True)
class ExecutionSnapshot:
    """The seed's mutable snapshot cache: trusted only if its ``seq`` matches the event log."""

    execution_id: str
    tenant_id: str
    user_id: str | None
    state: ExecutionState
    step_count: int
    seq: int
    current_step_id: str | None = None
    step_outputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Lane:
    """One line of work: where it stands and the node state it carries.

    ``node`` is the next node to run (``None``: the lane is done). ``interrupted`` means that node
    asked for input and runs again, with the answer, on resume.
    """

    key: str
    node: str | None
    state: Any
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "node": self.node, "state": self.state, "interrupted": self.interrupted}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Lane:
        return cls(str(data["key"]), data.get("node"), data.get("state"), bool(data.get("interrupted", False)))


@dataclass(frozen=True)
class Position:
    """Where a graph run stands: one lane, or the branches of a fan-out and where they join."""

    lanes: tuple[Lane, ...]
    fanout_origin: str | None = None
    origin_step_id: str | None = None

    @property
    def done(self) -> bool:
        return all(lane.node is None for lane in self.lanes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lanes": [lane.to_dict() for lane in self.lanes],
            "fanout_origin": self.fanout_origin,
            "origin_step_id": self.origin_step_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Position:
        return cls(
            tuple(Lane.from_dict(d) for d in data["lanes"]),
            data.get("fanout_origin"),
            data.get("origin_step_id"),
        )


@dataclass(frozen=True)
class Checkpoint:
    """All a later process needs to resume a graph after its last completed step.

    ``step_outputs`` holds the outputs behind the current position (the last step's, or each
    branch's in a fan-out), not the whole run's: a checkpoint's size does not grow with the run.

    ``retries`` holds the nodes that failed and are to run again, by node name: the attempt
    they run as next, the inbox messages their failed attempt was given (the retry gets them
    too) and ``not_before``, when their backoff ends (ISO 8601, or ``None``: due now). A run
    let go of during a backoff, or a worker that died in one, goes on with the next attempt."""

    id: str
    execution_id: str
    graph: str
    seq: int
    position: Position
    usage: dict[str, Any]
    created_at: datetime
    pending_messages: list[dict[str, Any]] = field(default_factory=list)
    step_outputs: dict[str, Any] = field(default_factory=dict)
    retries: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def current_nodes(self) -> list[str]:
        return [lane.node for lane in self.position.lanes if lane.node is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "execution_id": self.execution_id,
            "graph": self.graph,
            "seq": self.seq,
            "position": self.position.to_dict(),
            "usage": self.usage,
            "created_at": self.created_at.isoformat(),
            "pending_messages": self.pending_messages,
            "step_outputs": self.step_outputs,
            "retries": self.retries,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(
            id=data["id"],
            execution_id=data["execution_id"],
            graph=data["graph"],
            seq=int(data["seq"]),
            position=Position.from_dict(data["position"]),
            usage=dict(data.get("usage") or {}),
            created_at=datetime.fromisoformat(data["created_at"]),
            pending_messages=list(data.get("pending_messages") or []),
            step_outputs=dict(data.get("step_outputs") or {}),
            retries={str(k): dict(v) for k, v in (data.get("retries") or {}).items()},
        )
