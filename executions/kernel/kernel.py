"""The execution kernel: the single place where an execution runs.

Every state change goes through :meth:`ExecutionKernel.dispatch` (reduce -> emit -> snapshot ->
signal). Only the kernel's own thread dispatches; node code runs on runner threads and talks to
the kernel through its :class:`NodeContext`, whose calls are queued back to the kernel's thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from . import ids
from .artifacts import ArtifactInfo, ArtifactStore, ArtifactType, PutArtifactRequest
from .cancellation import CancellationToken
from .context import TenantContext
from .enforcement import (
    Blocked,
    CostAlert,
    EnforcementMiddleware,
    ExecutionUsage,
    LongRunningPolicy,
    Warning,
)
from .errors import ExecutionError
from .events import EventEmitter, EventSink, EventType, PiiMaskingProcessor, ProtectedEventEmitter, StreamEvent
from .graph import CompiledGraph
from .graph_run import GraphRun
from .inbox import InboxStore
from .memory import InMemoryEventSink
from .node import MISSING, RunResult
from .persistence import Checkpoint, ExecutionSnapshot
from .ports import CheckpointStore, Clock, SignalBus, SnapshotStore, SystemClock, UnitOfWork
from .reducer import (
    Action,
    Cancel,
    Complete,
    Fail,
    InputReceived,
    Pause,
    Resume,
    Start,
    StepCompleted,
    StepFailed,
    StepStarted,
    Wait,
    reduce,
)
from .spawn import SpawnMode
from .state import Execution, ExecutionState, StepType, WaitReason

logger = logging.getLogger(__name__)


class ExecutionKernel:
    """Runs one execution for one tenant. Build it with ``new`` or ``with_execution`` and the
    ``with_*`` options, then call :meth:`execute_graph` or :meth:`resume_graph`."""

    def __init__(self, execution: Execution, tenant_context: TenantContext, *, last_seq: int = 0) -> None:
        if execution.tenant_id != tenant_context.tenant_id:
            raise ValueError(
                f"execution {execution.id} belongs to tenant {execution.tenant_id}, not {tenant_context.tenant_id}"
            )
        self._execution = execution
        self._tenant = tenant_context
        self._sink: EventSink = InMemoryEventSink()
        self._emitter = EventEmitter(self._sink, start_seq=last_seq)
        self._protected: ProtectedEventEmitter | None = None
        self._token = CancellationToken()
        self._inbox: InboxStore | None = None
        self._snapshots: SnapshotStore | None = None
        self._checkpoints: CheckpointStore | None = None
        self._signal_bus: SignalBus | None = None
        self._artifacts: ArtifactStore | None = None
        self._enforcement = EnforcementMiddleware()
        self._long_running = tenant_context.long_running
        self._usage: ExecutionUsage | None = None
        self._spawn_mode: SpawnMode | None = None
        self._parent_id: str | None = execution.parent_id
        self._uow: UnitOfWork | None = None
        # Called on the caller's thread just before it waits for a run driven elsewhere: a host
        # gives back what that thread holds meanwhile (a pooled database connection).
        self._before_wait: Callable[[], None] = lambda: None
        self._checkpoint_events = True
        # While a graph runs: its wall time so far, in ms (see ``graph_run``), so the events that
        # end a run or let it go carry it.
        self._wall_time_ms: Callable[[], int] | None = None
        self.clock: Clock = SystemClock()
        if tenant_context.pii_masking:
            self._protected = ProtectedEventEmitter(self._emitter, [PiiMaskingProcessor()])

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def new(cls, tenant_context: TenantContext, *, execution_id: str | None = None) -> ExecutionKernel:
        """A kernel with a fresh execution (``created``)."""
        execution = Execution(id=execution_id or ids.new_execution_id(), tenant_id=tenant_context.tenant_id)
        return cls(execution, tenant_context)

    @classmethod
    def with_execution(
        cls, execution: Execution, tenant_context: TenantContext, *, last_seq: int = 0
    ) -> ExecutionKernel:
        """A kernel for an existing execution; ``last_seq`` is the last seq in its event log."""
        return cls(execution, tenant_context, last_seq=last_seq)

    def with_event_sink(self, sink: EventSink) -> ExecutionKernel:
        self._sink = sink
        self._emitter = EventEmitter(sink, start_seq=self._emitter.last_seq)
        if self._protected is not None:
            self._protected = ProtectedEventEmitter(self._emitter, self._protected.processors)
        return self

    def with_protected_emitter(self, processors: list[Any] | ProtectedEventEmitter) -> ExecutionKernel:
        chain = processors.processors if isinstance(processors, ProtectedEventEmitter) else list(processors)
        self._protected = ProtectedEventEmitter(self._emitter, chain)
        return self

    def with_inbox(self, inbox: InboxStore) -> ExecutionKernel:
        self._inbox = inbox
        return self

    def with_state_store(self, store: SnapshotStore) -> ExecutionKernel:
        self._snapshots = store
        return self

    def with_checkpoint_store(self, store: CheckpointStore, *, emit_events: bool = True) -> ExecutionKernel:
        self._checkpoints = store
        self._checkpoint_events = emit_events
        return self

    def with_signal_bus(self, bus: SignalBus) -> ExecutionKernel:
        self._signal_bus = bus
        return self

    def with_artifact_store(self, store: ArtifactStore) -> ExecutionKernel:
        self._artifacts = store
        return self

    def with_enforcement(self, enforcement: EnforcementMiddleware) -> ExecutionKernel:
        self._enforcement = enforcement
        return self

    def with_long_running_policy(self, policy: LongRunningPolicy) -> ExecutionKernel:
        self._long_running = policy
        return self

    def with_spawn_mode(self, spawn_mode: SpawnMode) -> ExecutionKernel:
        self._spawn_mode = spawn_mode
        return self

    def with_parent_execution_id(self, parent_id: str) -> ExecutionKernel:
        self._parent_id = parent_id
        self._execution.parent_id = parent_id
        return self

    def with_cancellation_token(self, token: CancellationToken) -> ExecutionKernel:
        self._token = token
        return self

    def with_unit_of_work(self, uow: UnitOfWork) -> ExecutionKernel:
        self._uow = uow
        return self

    def with_before_wait(self, hook: Callable[[], None]) -> ExecutionKernel:
        """Call ``hook`` on the caller's thread when it starts waiting for a run it handed to a
        runner thread (``execute_graph``, ``resume_graph``)."""
        self._before_wait = hook
        return self

    def before_wait(self) -> None:
        self._before_wait()

    def with_clock(self, clock: Clock) -> ExecutionKernel:
        self.clock = clock
        return self

    def spawn_child(self, spawn_mode: SpawnMode, *, execution_id: str | None = None) -> ExecutionKernel:
        """A kernel for a child execution: same tenant and ports, linked to this execution, with a
        child cancellation token (cancelling this execution cancels the child)."""
        child = ExecutionKernel.new(self._tenant, execution_id=execution_id)
        child._parent_id = child._execution.parent_id = self._execution.id
        child._spawn_mode = spawn_mode
        child._token = self._token.child_token()
        child._inbox, child._artifacts, child._signal_bus = self._inbox, self._artifacts, self._signal_bus
        child._enforcement, child._long_running, child.clock = self._enforcement, self._long_running, self.clock
        return child

    # --- accessors (the seed's getters) -------------------------------------------------------

    def inbox(self) -> InboxStore | None:
        return self._inbox

    def state_store(self) -> SnapshotStore | None:
        return self._snapshots

    def checkpoint_store(self) -> CheckpointStore | None:
        return self._checkpoints

    def signal_bus(self) -> SignalBus | None:
        return self._signal_bus

    def artifact_store(self) -> ArtifactStore | None:
        return self._artifacts

    def enforcement(self) -> EnforcementMiddleware:
        return self._enforcement

    def long_running_policy(self) -> LongRunningPolicy:
        return self._long_running

    def spawn_mode(self) -> SpawnMode | None:
        return self._spawn_mode

    def parent_execution_id(self) -> str | None:
        return self._parent_id

    @property
    def tenant_context(self) -> TenantContext:
        return self._tenant

    @property
    def execution_id(self) -> str:
        return self._execution.id

    @property
    def state(self) -> ExecutionState:
        return self._execution.state

    @property
    def emitter(self) -> EventEmitter:
        return self._emitter

    @property
    def sink(self) -> EventSink:
        return self._sink

    @property
    def execution(self) -> Execution:
        return self._execution

    # --- enforcement --------------------------------------------------------------------------

    def register_for_enforcement(self, usage: ExecutionUsage | None = None) -> ExecutionUsage:
        self._usage = self._enforcement.register_execution(self._execution.id, usage)
        return self._usage

    def unregister_from_enforcement(self) -> None:
        self._enforcement.unregister_execution(self._execution.id)

    def usage_snapshot(self) -> dict[str, Any] | None:
        return self._usage.to_dict() if self._usage else None

    def check_limits_before_step(
        self, next_step: str | None = None, *, running_ms: int = 0, idle_ms: int = 0
    ) -> CostAlert | None:
        """Check every limit. Raises the ``quota_exceeded`` error when one blocks; returns a cost
        alert when the execution should wait for an operator; emits each decision as an event."""
        if self._usage is None:
            self.register_for_enforcement()
        findings = self._enforcement.check_all_limits(
            self._execution.id,
            self._tenant.limits,
            self._long_running,
            next_step=next_step,
            running_ms=running_ms,
            idle_ms=idle_ms,
        )
        for finding in findings:
            if isinstance(finding, Blocked):
                violation = finding.violation
                self._policy_event(
                    "deny",
                    violation.message,
                    limit=violation.limit.value,
                    used=violation.used,
                    maximum=violation.maximum,
                )
                raise violation.to_error()
            if isinstance(finding, CostAlert):
                self._policy_event(
                    "pause",
                    f"cost ${finding.cost_usd:.4f} reached the alert threshold ${finding.threshold_usd:.4f}",
                    limit="cost_alert",
                )
                return finding
            if isinstance(finding, Warning) and self._enforcement.emit_warning_events_enabled():
                assert self._usage is not None
                self._usage.warned.add(finding.limit.value)
                logger.warning("enforcement warning for %s: %s", self._execution.id, finding.message)
                self._policy_event(
                    "warn", finding.message, limit=finding.limit.value, usage_percent=finding.usage_percent
                )
        return None

    def _policy_event(self, decision: str, reason: str, **details: Any) -> None:
        data = {"decision": decision, "tool_name": "enforcement", "reason": reason, **details}
        self.emit_unprotected(StreamEvent(EventType.POLICY_DECISION, self._execution.id, self.clock.now(), data))

    def _require_usage(self) -> ExecutionUsage:
        return self._usage or self.register_for_enforcement()

    def record_step_completed(self, name: str | None = None) -> None:
        self._require_usage()
        self._enforcement.record_step(self._execution.id, name)

    def record_token_usage(self, input_tokens: int, output_tokens: int) -> None:
        self._require_usage()
        self._enforcement.record_tokens(self._execution.id, input_tokens, output_tokens)

    def record_cost(self, cost_usd: float) -> None:
        self._require_usage()
        self._enforcement.record_cost(self._execution.id, cost_usd)

    def record_discovered_step(self) -> None:
        self._require_usage()
        self._enforcement.record_discovered_step(self._execution.id)

    def push_discovery_depth(self) -> int:
        self._require_usage()
        return self._enforcement.push_discovery_depth(self._execution.id)

    def pop_discovery_depth(self) -> int:
        self._require_usage()
        return self._enforcement.pop_discovery_depth(self._execution.id)

    # --- artifacts ----------------------------------------------------------------------------

    def store_artifact(
        self,
        step_id: str,
        name: str,
        artifact_type: ArtifactType,
        content: bytes | str | Any,
        *,
        content_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str | None:
        """Store an artifact and emit ``data-artifact-created``. ``None`` without a store or when
        the store fails (logged; as in the seed, a failed store does not fail the step)."""
        info = self._put_artifact(step_id, name, artifact_type, content, content_type, metadata)
        if info is None:
            return None
        self.emit_unprotected(self._artifact_event(info))
        return info.artifact_id

    def store_text_artifact(self, step_id: str, name: str, content: str) -> str | None:
        return self.store_artifact(step_id, name, ArtifactType.TEXT, content)

    def store_json_artifact(self, step_id: str, name: str, value: Any) -> str | None:
        """Store ``value`` as a JSON document, whatever its type: a ``str`` becomes a JSON string
        (``"hello"`` is stored as ``"hello"`` with its quotes), as in the seed."""
        info = self._put_artifact(step_id, name, ArtifactType.JSON, value, None, None, as_json=True)
        if info is None:
            return None
        self.emit_unprotected(self._artifact_event(info))
        return info.artifact_id

    def _put_artifact(
        self,
        step_id: str,
        name: str,
        artifact_type: ArtifactType,
        content: bytes | str | Any,
        content_type: str | None,
        metadata: dict[str, Any] | None,
        *,
        as_json: bool = False,
    ) -> ArtifactInfo | None:
        """``as_json``: ``content`` is a value to serialize, even a ``str``. Otherwise ``str`` and
        ``bytes`` are the content as it is, and must parse as JSON for a JSON content type."""
        if self._artifacts is None:
            return None
        try:
            # NaN and the infinities are not JSON (Python writes and reads them; other readers
            # refuse the document): a value holding one is not stored.
            if as_json or not isinstance(content, (str, bytes, bytearray)):
                raw = json.dumps(content, indent=2, sort_keys=True, allow_nan=False).encode()
            else:
                raw = content.encode() if isinstance(content, str) else bytes(content)
                if _is_json(content_type or artifact_type.default_content_type):
                    json.loads(raw, parse_constant=_not_json)
        except (TypeError, ValueError):
            logger.warning("artifact %r of %s is not JSON; not stored", name, self._execution.id, exc_info=True)
            return None
        request = PutArtifactRequest(
            ids.new_artifact_id(),
            self._execution.id,
            step_id,
            name,
            artifact_type,
            raw,
            content_type or artifact_type.default_content_type,
            dict(metadata or {}),
        )
        try:
            return self._artifacts.put(request)
        except Exception:
            logger.warning("failed to store artifact %r of %s", name, self._execution.id, exc_info=True)
            return None

    def _artifact_event(self, info: ArtifactInfo) -> StreamEvent:
        return StreamEvent(
            EventType.ARTIFACT_CREATED, self._execution.id, self.clock.now(), info.to_dict(), info.step_id
        )

    # --- cancellation -------------------------------------------------------------------------

    def is_cancelled(self) -> bool:
        return self._token.is_cancelled

    def cancel(self, reason: str = "cancelled") -> None:
        """Request cancellation; a running graph stops at once. Safe from any thread."""
        self._token.cancel(reason)

    def child_cancellation_token(self) -> CancellationToken:
        return self._token.child_token()

    def cancellation_token(self) -> CancellationToken:
        return self._token

    # --- dispatch: the only way to change the execution ----------------------------------------

    def dispatch(self, action: Action) -> None:
        """Reduce, then emit, then snapshot (best effort), then signal (best effort)."""
        skipped = self._execution.running_step_ids() if isinstance(action, Cancel) else []
        reduce(self._execution, action)
        self._emit_for_action(action, skipped)
        self._persist_snapshot_best_effort()
        self._emit_signal_best_effort(action)

    def start(self) -> None:
        self.dispatch(Start(self.clock.now()))

    def begin_step(
        self,
        step_type: StepType,
        name: str,
        parent_step_id: str | None = None,
        *,
        source: str | None = None,
        attempt: int = 1,
    ) -> str:
        step_id = ids.new_step_id()
        self.dispatch(StepStarted(step_id, name, self.clock.now(), step_type, parent_step_id, source, attempt))
        return step_id

    def complete_step(self, step_id: str, output: Any, duration_ms: int) -> None:
        self.dispatch(StepCompleted(step_id, output, duration_ms, self.clock.now()))

    def fail_step(self, step_id: str, error: ExecutionError, duration_ms: int | None = None) -> None:
        self.dispatch(StepFailed(step_id, self._stamp(error.with_step_id(step_id)), self.clock.now(), duration_ms))

    def fail_step_with_message(self, step_id: str, message: str) -> None:
        self.fail_step(step_id, ExecutionError.kernel_internal(message))

    def pause(self, reason: str) -> None:
        self.dispatch(Pause(reason, self.clock.now()))

    def resume(self) -> None:
        self.dispatch(Resume(self.clock.now()))

    def wait_for(self, reason: WaitReason, detail: Any = None) -> None:
        self.dispatch(Wait(reason, self.clock.now(), detail))

    def input_received(self, value: Any = None) -> None:
        self.dispatch(InputReceived(self.clock.now(), value))

    def complete(self, output: Any) -> None:
        self.dispatch(Complete(output, self.clock.now()))

    def fail(self, error: ExecutionError) -> None:
        self.dispatch(Fail(self._stamp(error), self.clock.now()))

    def fail_with_message(self, message: str) -> None:
        self.fail(ExecutionError.kernel_internal(message))

    def cancel_execution(self, reason: str) -> None:
        self.dispatch(Cancel(reason, self.clock.now()))

    def _stamp(self, error: ExecutionError) -> ExecutionError:
        return error if error.timestamp else error.with_timestamp(self.clock.now())

    def _emit_for_action(self, action: Action, skipped: list[str]) -> None:
        ex = self._execution
        step_id: str | None = None
        data: dict[str, Any]
        if isinstance(action, Start):
            event_type, data = EventType.EXECUTION_START, {"tenant_id": ex.tenant_id, "parent_id": ex.parent_id}
        elif isinstance(action, StepStarted):
            step_id = action.step_id
            event_type, data = (
                EventType.STEP_START,
                {
                    "name": action.name,
                    "step_type": action.step_type.value,
                    "parent_step_id": action.parent_step_id,
                    "source": action.source,
                    "attempt": action.attempt,
                },
            )
        elif isinstance(action, StepCompleted):
            step_id = action.step_id
            name = ex.steps[step_id].name
            event_type, data = (
                EventType.STEP_END,
                {"name": name, "output": action.output, "duration_ms": action.duration_ms},
            )
        elif isinstance(action, StepFailed):
            step_id = action.step_id
            name = ex.steps[step_id].name
            event_type, data = (
                EventType.STEP_FAILED,
                {"name": name, "error": action.error.to_dict(), "duration_ms": action.duration_ms},
            )
        elif isinstance(action, Pause):
            event_type, data = EventType.EXECUTION_PAUSED, {"reason": action.reason}
        elif isinstance(action, Resume):
            event_type, data = EventType.EXECUTION_RESUMED, {}
        elif isinstance(action, Wait):
            event_type, data = EventType.EXECUTION_WAITING, {"reason": action.reason.value, "detail": action.detail}
        elif isinstance(action, InputReceived):
            event_type, data = EventType.EXECUTION_INPUT_RECEIVED, {"input": action.input}
        elif isinstance(action, Complete):
            event_type, data = EventType.EXECUTION_END, {"output": action.output, "duration_ms": ex.duration_ms() or 0}
        elif isinstance(action, Fail):
            event_type, data = EventType.EXECUTION_FAILED, {"error": action.error.to_dict()}
        else:
            assert isinstance(action, Cancel)
            event_type, data = EventType.EXECUTION_CANCELLED, {"reason": action.reason, "skipped_step_ids": skipped}
        if self._usage is not None and isinstance(action, (Complete, Fail, Cancel, Pause, Wait)):
            # Where a run ends or lets go, the event carries the usage so far: a listener (and
            # the platform's rows) get it in the same commit as the state. Its wall_time_ms is
            # the time spent running, up to this event: not paused, waiting or queued.
            if self._wall_time_ms is not None:
                self._usage.wall_time_ms = self._wall_time_ms()
            data["usage"] = self._usage.to_dict()
        event = StreamEvent(event_type, ex.id, action.at, data, step_id)
        if event_type.carries_content:
            self.emit_protected(event)
        else:
            self.emit_unprotected(event)

    def _persist_snapshot_best_effort(self) -> None:
        if self._snapshots is None:
            return
        ex = self._execution
        running = ex.running_step_ids()
        snapshot = ExecutionSnapshot(
            execution_id=ex.id,
            tenant_id=self._tenant.tenant_id,
            user_id=self._tenant.user_id,
            state=ex.state,
            step_count=len(ex.step_order),
            seq=self._emitter.last_seq,
            current_step_id=running[-1] if running else None,
            step_outputs={sid: s.output for sid, s in ex.steps.items() if s.output is not None},
        )
        try:
            self._snapshots.save_snapshot(snapshot)
        except Exception:
            logger.debug("snapshot persistence failed for %s", ex.id, exc_info=True)

    def _emit_signal_best_effort(self, action: Action) -> None:
        if self._signal_bus is None:
            return
        payload = json.dumps(
            {
                "execution_id": self._execution.id,
                "tenant_id": self._tenant.tenant_id,
                "action": _SIGNAL_NAMES[type(action)],
                "state": self._execution.state.value,
            }
        ).encode()
        try:
            self._signal_bus.emit("execution.lifecycle", payload)
        except Exception:
            logger.debug("signal emit failed for %s", self._execution.id, exc_info=True)

    # --- emission -----------------------------------------------------------------------------

    def emit_protected(self, event: StreamEvent) -> StreamEvent:
        """Emit an event that may carry sensitive content, through the processors if any."""
        if self._protected is not None:
            return self._protected.emit(event)
        return self._emitter.emit(event)

    def emit_unprotected(self, event: StreamEvent) -> StreamEvent:
        """Emit a lifecycle event that carries no content."""
        return self._emitter.emit(event)

    def has_protected_emitter(self) -> bool:
        return self._protected is not None

    def protected_emitter(self) -> ProtectedEventEmitter | None:
        return self._protected

    # --- inbox --------------------------------------------------------------------------------

    def get_inbox_execution_ids(self) -> list[str]:
        """Which inboxes this execution reads: its own, plus its parent's for a child that inherits."""
        mode = self._spawn_mode
        if mode is not None and mode.inherit_inbox and self._parent_id is not None:
            return [self._execution.id, self._parent_id]
        return [self._execution.id]

    def _atomic(self) -> AbstractContextManager[object]:
        return self._uow.atomic() if self._uow is not None else nullcontext()

    # --- graphs -------------------------------------------------------------------------------

    def execute_graph(self, graph: CompiledGraph, input: Any) -> RunResult:
        """Run ``graph`` from its entry point with ``input`` as the first node's state.

        Returns when the execution is terminal, or paused or waiting (after a checkpoint, so a
        later :meth:`resume_graph` continues where it stopped). The run itself, and the stores'
        I/O, happen on a runner thread (see ``graph_run``): call this outside any database
        transaction of your own, as a worker does."""
        return GraphRun.fresh(self, graph, input).run()

    def resume_graph(self, graph: CompiledGraph, checkpoint: Checkpoint, *, input: Any = MISSING) -> RunResult:
        """Continue from ``checkpoint``: after a pause or wait (``input`` answers a waiting
        execution), or after the process running it died (its running steps are failed as
        abandoned, and no completed step runs again).

        Only the execution's last checkpoint resumes it: an older one would run again the steps
        completed since, so it is refused (``ValueError``), as is one past the end of the log."""
        if checkpoint.execution_id != self._execution.id:
            raise ValueError(f"checkpoint {checkpoint.id} is not of execution {self._execution.id}")
        if checkpoint.seq > self._emitter.last_seq:
            raise ValueError(
                f"checkpoint {checkpoint.id} covers seq {checkpoint.seq}, past the end of the log "
                f"of {self._execution.id} (seq {self._emitter.last_seq})"
            )
        last = self._checkpoints.load_checkpoint(self._execution.id) if self._checkpoints is not None else None
        if last is not None and last.id != checkpoint.id and last.seq >= checkpoint.seq:
            raise ValueError(
                f"checkpoint {checkpoint.id} (seq {checkpoint.seq}) is older than the last checkpoint "
                f"{last.id} (seq {last.seq}) of {self._execution.id}: resume from the last one"
            )
        return GraphRun.from_checkpoint(self, graph, checkpoint, input).run()

    def _result(self, checkpoint: Checkpoint | None = None, prompt: Any = None) -> RunResult:
        ex = self._execution
        return RunResult(ex.state, ex.output, ex.error, ex.wait_reason, prompt, checkpoint)


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


_SIGNAL_NAMES: dict[type, str] = {
    Start: "start",
    StepStarted: "step_started",
    StepCompleted: "step_completed",
    StepFailed: "step_failed",
    Pause: "paused",
    Resume: "resumed",
    Complete: "completed",
    Fail: "failed",
    Cancel: "cancelled",
    Wait: "waiting",
    InputReceived: "input_received",
}
