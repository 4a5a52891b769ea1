"""What node code sees: its context, the interrupt that makes an execution wait, and how a run ends."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .artifacts import ArtifactType
from .cancellation import CancellationToken, Cancelled
from .errors import ExecutionError
from .events import EventType, StreamEvent
from .inbox import InboxMessage
from .persistence import Checkpoint
from .state import ExecutionState, WaitReason

if TYPE_CHECKING:
    from .kernel import ExecutionKernel

#: Marks "no value given" where ``None`` is a value.
MISSING: Any = object()


class Interrupt(BaseException):
    """Raised by :meth:`NodeContext.interrupt` to make the execution wait.

    A ``BaseException`` so that node code's ``except Exception`` does not swallow it.
    """

    def __init__(self, reason: WaitReason, prompt: Any = None, schema: Any = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.prompt = prompt
        self.schema = schema


@dataclass(frozen=True)
class StepResult:
    """What a node may return instead of its new state: the ``state`` that flows on to the next
    node (and to routers), and the ``output`` recorded on the step. Without it, the returned
    value is both.

    Declarative blueprints keep the run's state as one object that every node adds to, while a
    step's record shows only what that node produced."""

    state: Any
    output: Any


@dataclass(frozen=True)
class RunResult:
    """How a run of a graph ended: terminal, or let go of (paused, waiting) until resumed."""

    state: ExecutionState
    output: Any = None
    error: ExecutionError | None = None
    wait_reason: WaitReason | None = None
    prompt: Any = None
    checkpoint: Checkpoint | None = None


class NodeContext:
    """What node code gets besides its state. Safe to use from the node's own thread."""

    __slots__ = (
        "_abandoned",
        "_kernel",
        "_lock",
        "_parent_token",
        "_post",
        "_resume_input",
        "_token",
        "attempt",
        "evidence",
        "execution_id",
        "guidance",
        "messages",
        "node",
        "step_id",
        "tenant",
    )

    def __init__(
        self,
        kernel: ExecutionKernel,
        post: Callable[[tuple[Any, ...]], None],
        *,
        step_id: str,
        node: str,
        attempt: int,
        parent_token: CancellationToken,
        messages: list[InboxMessage],
        resume_input: Any,
    ) -> None:
        self._kernel = kernel
        self._post = post
        self.execution_id = kernel.execution_id
        self.tenant = kernel.tenant_context
        self.step_id = step_id
        self.node = node
        self.attempt = attempt
        self._parent_token = parent_token
        self._token: CancellationToken | None = None
        self._lock = threading.Lock()
        # Why the kernel stopped waiting for this step (the execution failed, a time limit);
        # ``None`` while it still counts on the step.
        self._abandoned: str | None = None
        self.guidance = [m for m in messages if m.kind == "guidance"]
        self.evidence = [m for m in messages if m.kind == "evidence"]
        self.messages = [m for m in messages if m.kind == "a2a"]
        self._resume_input = resume_input

    @property
    def cancellation(self) -> CancellationToken:
        """This step's token: fires when the execution is cancelled or the step is abandoned.

        Made on first use, so a step whose code never asks costs nothing; made cancelled if
        the step was abandoned before it asked."""
        with self._lock:
            if self._token is None:
                self._token = self._parent_token.child_token()
                if self._abandoned is not None:
                    self._token.cancel(self._abandoned)
            return self._token

    @property
    def is_cancelled(self) -> bool:
        """Whether the step should stop: the execution was cancelled, or the kernel no longer
        waits for this step (the execution failed, or hit a time limit, while it ran)."""
        return self._abandoned is not None or self._parent_token.is_cancelled

    def _abandon(self, reason: str) -> None:
        with self._lock:
            self._abandoned = reason
            token = self._token
        if token is not None:
            token.cancel(reason)

    def _finish(self) -> None:
        if self._token is not None:
            self._parent_token.detach(self._token)

    def sleep(self, seconds: float) -> None:
        """Sleep that a cancel cuts short (raising :class:`Cancelled`)."""
        if self.cancellation.wait(seconds):
            raise Cancelled(self.cancellation.reason or "cancelled")

    @property
    def has_answer(self) -> bool:
        """Whether this run of the node is the one resumed with an answer (``interrupt`` returns it)."""
        return self._resume_input is not MISSING

    def interrupt(self, reason: WaitReason = WaitReason.USER_INPUT, *, prompt: Any = None, schema: Any = None) -> Any:
        """Ask for input or approval: the first time, the execution waits; on resume the node
        runs again and this returns the answer. Work before the call must be safe to repeat."""
        if self._resume_input is not MISSING:
            value, self._resume_input = self._resume_input, MISSING
            return value
        raise Interrupt(reason, prompt, schema)

    def record_usage(self, *, input_tokens: int = 0, output_tokens: int = 0, cost_usd: float = 0.0) -> None:
        self._post(("usage", input_tokens, output_tokens, cost_usd))

    def record_discovered_step(self) -> None:
        self._post(("discovered",))

    @property
    def steps_used(self) -> int:
        """Steps the execution has counted so far, this one included."""
        usage = self._kernel.usage_snapshot()
        return int(usage["steps"]) if usage else 0

    def record_steps(self, count: int) -> None:
        """Count ``count`` runs of work done within this step (a map's items, a nested graph's
        steps) as steps of the execution, so that its step limit covers them. Handed to the
        run like usage: counted under its lock, and only while the kernel waits for this step."""
        if count > 0:
            self._post(("steps", count))

    def text_delta(self, delta: str) -> None:
        self._post(("emit", self._event(EventType.TEXT_DELTA, {"delta": delta})))

    def tool_input(self, tool_call_id: str, tool_name: str, input: Any) -> None:
        data = {"tool_call_id": tool_call_id, "tool_name": tool_name, "input": input}
        self._post(("emit", self._event(EventType.TOOL_INPUT_AVAILABLE, data)))

    def tool_output(self, tool_call_id: str, tool_name: str, output: Any) -> None:
        data = {"tool_call_id": tool_call_id, "tool_name": tool_name, "output": output}
        self._post(("emit", self._event(EventType.TOOL_OUTPUT_AVAILABLE, data)))

    def policy_decision(self, decision: str, tool_name: str, reason: str, **details: Any) -> None:
        data = {"decision": decision, "tool_name": tool_name, "reason": reason, **details}
        self._post(("emit", self._event(EventType.POLICY_DECISION, data)))

    def store_artifact(
        self,
        name: str,
        artifact_type: ArtifactType,
        content: bytes | str | Any,
        *,
        content_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str | None:
        """Store content; returns the artifact id, or ``None`` if storing failed (the step goes on).

        ``bytes`` and ``str`` are stored as they are (for ``ArtifactType.JSON`` they must be JSON
        text); any other value is stored as JSON. A step the kernel no longer waits for (see
        :attr:`is_cancelled`) stores nothing."""
        if self.is_cancelled:
            return None
        info = self._kernel._put_artifact(self.step_id, name, artifact_type, content, content_type, metadata)
        if info is not None:
            self._post(("emit", self._kernel._artifact_event(info)))
        return info.artifact_id if info else None

    def store_json_artifact(self, name: str, value: Any, *, metadata: dict[str, Any] | None = None) -> str | None:
        """Store ``value`` as a JSON document, whatever its type (a ``str`` becomes a JSON string)."""
        if self.is_cancelled:
            return None
        info = self._kernel._put_artifact(self.step_id, name, ArtifactType.JSON, value, None, metadata, as_json=True)
        if info is not None:
            self._post(("emit", self._kernel._artifact_event(info)))
        return info.artifact_id if info else None

    def _event(self, event_type: EventType, data: dict[str, Any]) -> StreamEvent:
        return StreamEvent(event_type, self.execution_id, self._kernel.clock.now(), data, self.step_id)
