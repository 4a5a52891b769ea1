"""One run of a compiled graph through the kernel, from a start or a checkpoint to a stop.

The run is a set of lanes: one for a plain chain, one per branch during a fan-out.

Two threads share it, under one lock. The *driver* (a runner thread) runs the loop: it does the
bookkeeping, runs a single lane's node inline, and waits on a queue for fan-out branches, which
run on runner threads of their own. The *caller* (the thread that called ``execute_graph``) waits
for the outcome. If a cancel (or a time limit) comes while the driver is blocked inside node code,
the caller takes the lock, fails the step, cancels the execution and returns at once; the driver
is abandoned and, when the node finally returns, quietly stops. So a cancel never waits for a
step, and a plain chain pays no thread hand-off per step.

A failed attempt is a step boundary like a completed one: the inbox is read (a cancel or pause
stops the retries), and a checkpoint records the retry (its attempt number, the messages the
failed attempt was given, when its backoff ends), so a run let go of, or lost, during a backoff
goes on with the next attempt. A backoff is the kernel waiting on purpose: it is not idle time,
and the inbox is looked at every ``INBOX_POLL_S`` while one lasts.

Wall time (``usage.wall_time_ms``, and the ``max_wall_time_s`` limit) is the time the execution
spent running: summed over its runs, from the start of each run to where it ends or lets go.
Time paused, waiting for a person (input, approval, a cost alert) or queued is not counted; a
retry's backoff, during which the execution is running, is.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import ids
from .cancellation import LONGEST_WAIT_S, Cancelled
from .enforcement import ExecutionUsage, LimitType, Violation
from .errors import ExecutionError
from .events import EventType, StreamEvent
from .graph import END, CompiledGraph, FanOut, Node
from .inbox import ControlAction, ControlMessage, InboxMessage, message_from_dict, message_to_dict, priority_order
from .node import MISSING, Interrupt, NodeContext, RunResult, StepResult
from .persistence import Checkpoint, Lane, Position
from .runner import default_pool
from .state import ExecutionState, WaitReason

if TYPE_CHECKING:
    from .kernel import ExecutionKernel

#: How often the inbox is looked at while a retry's backoff lasts.
INBOX_POLL_S = 0.25


@dataclass
class _Flight:
    """A step whose node is running (inline on the driver, or on a runner thread)."""

    step_id: str
    node: Node
    attempt: int
    started: float
    ctx: NodeContext
    messages: list[InboxMessage]


@dataclass
class _Retry:
    """A node that failed and runs again: as which attempt, with which inbox messages, and
    not before when (wall clock; ``None``: due now)."""

    attempt: int
    messages: list[InboxMessage] = field(default_factory=list)
    not_before: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "messages": [message_to_dict(m) for m in self.messages],
            "not_before": self.not_before.isoformat() if self.not_before else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Retry:
        not_before = data.get("not_before")
        return cls(
            int(data["attempt"]),
            [message_from_dict(m) for m in data.get("messages") or []],
            datetime.fromisoformat(not_before) if not_before else None,
        )


@dataclass
class _Stop:
    """Why launching has stopped; acted on once nothing is in flight."""

    pause: str | None = None
    interrupt: Interrupt | None = None
    cost_alert: dict[str, Any] | None = None

    def __bool__(self) -> bool:
        return self.pause is not None or self.interrupt is not None or self.cost_alert is not None


@dataclass
class GraphRun:
    kernel: ExecutionKernel
    graph: CompiledGraph
    lanes: list[Lane]
    fanout: FanOut | None = None
    origin_step_id: str | None = None
    resume_input: Any = MISSING
    pending: list[InboxMessage] = field(default_factory=list)
    retries: dict[str, _Retry] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.wake: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.flights: dict[int, _Flight] = {}
        self.ready_at: dict[int, float] = {}
        self.stop = _Stop()
        self.usage: ExecutionUsage = self.kernel._require_usage()
        self.clock = self.kernel.clock
        self.wall_base = self.usage.wall_time_ms
        self.run_started = self.last_activity = self.clock.monotonic()
        self.max_branches = self.graph.max_concurrent_branches or self.kernel.tenant_context.max_concurrent_branches
        self.lock = threading.Lock()
        self.outcome: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.inline: tuple[int, Lane, _Flight] | None = None  # the node the driver runs next
        self.in_node = False  # the driver is inside node code (the lock is free)
        self.abandoned = False  # the caller finished the run; the driver must stop
        self.broken: BaseException | None = None  # a store failed under an inline node's call
        self.needs_start = False  # a fresh run starts in its first unit of work, with its first step

    # --- construction -------------------------------------------------------------------------

    @classmethod
    def fresh(cls, kernel: ExecutionKernel, graph: CompiledGraph, input: Any) -> GraphRun:
        run = cls(kernel, graph, [Lane("main", graph.entry_point, input)])
        run.needs_start = True
        return run

    @classmethod
    def from_checkpoint(cls, kernel: ExecutionKernel, graph: CompiledGraph, ckpt: Checkpoint, input: Any) -> GraphRun:
        if ckpt.graph != graph.name:
            raise ValueError(f"checkpoint {ckpt.id} is of graph {ckpt.graph!r}, not {graph.name!r}")
        kernel.register_for_enforcement(ExecutionUsage.from_checkpoint(ckpt.usage))
        position = ckpt.position
        fanout = graph.fanouts.get(position.fanout_origin) if position.fanout_origin else None
        run = cls(
            kernel,
            graph,
            list(position.lanes),
            fanout=fanout,
            origin_step_id=position.origin_step_id,
            resume_input=input,
            pending=[message_from_dict(m) for m in ckpt.pending_messages],
            retries={name: _Retry.from_dict(r) for name, r in ckpt.retries.items()},
            outputs=dict(ckpt.step_outputs),
        )
        run._restore_backoffs()
        run._reenter(input)
        return run

    def _restore_backoffs(self) -> None:
        """A backoff that had not ended when the checkpoint was taken still holds its lane back."""
        now, mono = self.clock.now(), self.clock.monotonic()
        for index, lane in enumerate(self.lanes):
            retry = self.retries.get(lane.node) if lane.node is not None else None
            if retry is not None and retry.not_before is not None and retry.not_before > now:
                self.ready_at[index] = mono + (retry.not_before - now).total_seconds()

    def _reenter(self, input: Any) -> None:
        """Bring the execution back to running from wherever it was left."""
        k, ex = self.kernel, self.kernel.execution
        if ex.state is ExecutionState.PAUSED:
            k.resume()
        elif ex.state is ExecutionState.WAITING:
            if ex.wait_reason is WaitReason.COST_THRESHOLD:
                self.usage.cost_alert_approved = True
                k.resume()
            elif input is not MISSING:
                k.input_received(input)
            else:
                k.resume()
        elif ex.state is ExecutionState.RUNNING:
            # The process that ran this died mid-step: the step's outcome is unknown, so it is
            # failed as abandoned and its node runs again as the next attempt.
            for step_id in ex.running_step_ids():
                step = ex.steps[step_id]
                earlier = self.retries.get(step.name)
                self.retries[step.name] = _Retry(step.attempt + 1, earlier.messages if earlier else [])
                k.fail_step(
                    step_id,
                    ExecutionError.kernel_internal(
                        "step abandoned: the process running it stopped", code="worker_lost"
                    ),
                )
        elif ex.state in (ExecutionState.CREATED, ExecutionState.QUEUED):
            k.start()

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> RunResult:
        """Drive the run on a runner thread; wait here for its outcome, or take over on a cancel."""
        k = self.kernel
        if k.state.is_terminal:
            return k._result()

        def on_cancel(reason: str) -> None:
            self.wake.put(("cancel", reason))
            self.outcome.put(("cancel", reason))

        unsubscribe = k.cancellation_token().on_cancel(on_cancel)
        # Events that end the run or let it go carry the usage: with the wall time up to them.
        k._wall_time_ms = self._running_ms
        default_pool.submit(self._drive)
        k.before_wait()
        try:
            return self._await_outcome()
        finally:
            unsubscribe()
            with self.lock:
                self.usage.wall_time_ms = self._running_ms()
                if k._wall_time_ms == self._running_ms:
                    k._wall_time_ms = None

    # --- the caller's side --------------------------------------------------------------------

    def _await_outcome(self) -> RunResult:
        while True:
            try:
                message = self.outcome.get(timeout=self._caller_timeout())
            except queue.Empty:
                message = ("tick",)
            if message[0] == "done":
                return message[1]  # type: ignore[no-any-return]
            if message[0] == "error":
                raise message[1]
            result = self._take_over(message)
            if result is not None:
                return result

    def _caller_timeout(self) -> float | None:
        """Wake when a time limit may run out, to enforce it on a node blocked inline; never if
        none is set.

        Never late: the wall-time deadline does not move, and the idle one only moves later
        (activity, and every launch, push ``last_activity`` on). With nothing in flight nothing
        can be idle yet, and a step launched from now on is idle at the earliest one idle limit
        from now."""
        limits, policy = self.kernel.tenant_context.limits, self.kernel.long_running_policy()
        if limits.max_wall_time_s is None and policy.idle_timeout_s is None:
            return None
        with self.lock:
            now = self.clock.monotonic()
            deadlines = []
            if limits.max_wall_time_s is not None:
                deadlines.append(self.run_started + limits.max_wall_time_s - self.wall_base / 1000)
            if policy.idle_timeout_s is not None:
                deadlines.append((self.last_activity if self.flights else now) + policy.idle_timeout_s)
        # A deadline just past, with the driver out of node code, is the driver's to act on:
        # look again shortly rather than spin.
        return min(LONGEST_WAIT_S, max(0.005, min(deadlines) - now))

    def _take_over(self, message: tuple[Any, ...]) -> RunResult | None:
        """End the run from here if the driver is stuck in node code; else leave it to the driver."""
        with self.lock:
            if self.abandoned or not self.in_node:
                return None  # the driver is waiting on its queue or working: it acts itself
            if message[0] == "cancel":
                self.abandoned = True
                return self._cancel(message[1])
            violation = self._time_violation()
            if violation is None:
                return None
            self.abandoned = True
            return self._fail_on_limit(violation)

    # --- the driver's side --------------------------------------------------------------------

    def _drive(self) -> None:
        try:
            with self.lock:
                result = self._loop()
        except BaseException as exc:  # handed to the caller, who raises it
            self.outcome.put(("error", exc))
            return
        if result is not None:
            self.outcome.put(("done", result))

    def _loop(self) -> RunResult | None:
        # Handling a step's result, checkpointing and starting the next step are one unit of
        # work: one transaction, one commit per step on a database. Waiting happens outside it.
        with self.kernel._atomic():
            if self.needs_start:
                self.kernel.start()
            cancel = self._check_inbox()
            done = self._cancel(cancel) if cancel is not None else self._step_forward()
        while done is None:
            message = self._run_inline() if self.inline is not None else self._wait_unlocked()
            if self.abandoned:
                return None
            if self.broken is not None:
                raise self.broken
            if message is None and self._nothing_due():
                continue  # a look at the inbox during a backoff found nothing: no unit of work
            with self.kernel._atomic():
                done = self._handle(message) if message is not None else self._on_timeout()
                if done is None:
                    done = self._step_forward()
        return done

    def _wait_unlocked(self) -> tuple[Any, ...] | None:
        self.lock.release()
        try:
            return self._next_message()
        finally:
            self.lock.acquire()

    def _run_inline(self) -> tuple[Any, ...]:
        assert self.inline is not None
        index, lane, flight = self.inline
        self.inline = None
        self.in_node = True
        self.lock.release()
        try:
            result, error = flight.node.fn(lane.state, flight.ctx), None
        except BaseException as exc:  # decided by the kernel, as for any node
            result, error = None, exc
        finally:
            self.lock.acquire()
            self.in_node = False
        return ("done", index, flight.step_id, result, error)

    def _step_forward(self) -> RunResult | None:
        """Finish, let go, join or launch what can run; ``None`` means: wait for a message."""
        k = self.kernel
        while True:
            if k.state.is_terminal:
                return k._result()
            if k.is_cancelled():
                return self._cancel(k.cancellation_token().reason or "cancelled")
            if not self.flights:
                if self.stop:
                    return self._let_go()
                if all(lane.node is None for lane in self.lanes):
                    if self.fanout is None:
                        k.complete(self.lanes[0].state)
                        return k._result()
                    self._join()
                    continue
            failure = self._launch_ready()
            if failure is not None:
                return self._fail(failure)
            if k.state.is_terminal:
                return k._result()
            if self.flights or self.ready_at:
                return None
            # Nothing in flight and nothing waiting for a backoff: a stop was set or lanes
            # finished; the next pass acts on it.

    def _on_timeout(self) -> RunResult | None:
        violation = self._time_violation()
        if violation is not None:
            return self._fail_on_limit(violation)
        if self._backing_off():
            # Between attempts, as after any step: a cancel or pause need not wait for the
            # backoff to end, nor the retry be started once it has.
            cancel = self._check_inbox()
            if cancel is not None:
                return self._cancel(cancel)
        return None

    def _backing_off(self) -> bool:
        return bool(self._backoff_ends())

    def _backoff_ends(self) -> list[float]:
        """When the backoffs end that hold back a lane which could then start.

        None can while launching has stopped (a pause, an interrupt, a cost alert, with steps
        still in flight) or every branch slot is taken: such a backoff, ended or not, is not a
        reason to wake. The flight that finishes first posts a message that wakes the run."""
        if self.stop or len(self.flights) >= self.max_branches:
            return []
        return [t for i, t in self.ready_at.items() if i not in self.flights]

    def _nothing_due(self) -> bool:
        """After a wait that no message ended: whether there is nothing to do yet (no limit ran
        out, no backoff ended, the inbox is empty), so the run can wait on without a unit of work."""
        if self._time_violation() is not None:
            return False
        now = self.clock.monotonic()
        if any(t <= now for t in self._backoff_ends()):
            return False
        k = self.kernel
        inbox = k.inbox()
        return inbox is None or not inbox.has_messages(k.get_inbox_execution_ids())

    def _fail_on_limit(self, violation: Violation) -> RunResult:
        with self.kernel._atomic():
            self.kernel._policy_event("deny", violation.message, limit=violation.limit.value)
            return self._fail(violation.to_error())

    def _next_message(self) -> tuple[Any, ...] | None:
        timeout = self._timeout()
        try:
            if timeout is None:
                return self.wake.get()
            return self.wake.get(timeout=min(timeout, LONGEST_WAIT_S)) if timeout > 0 else self.wake.get_nowait()
        except queue.Empty:
            return None

    def _timeout(self) -> float | None:
        """Seconds until something must happen without a message: a backoff ends, the inbox is
        due a look during one, or a time limit runs out."""
        now = self.clock.monotonic()
        deadlines = self._backoff_ends()
        if deadlines and self.kernel.inbox() is not None:
            deadlines.append(now + INBOX_POLL_S)
        limits, policy = self.kernel.tenant_context.limits, self.kernel.long_running_policy()
        if self.flights and policy.idle_timeout_s is not None:
            deadlines.append(self.last_activity + policy.idle_timeout_s)
        if limits.max_wall_time_s is not None:  # it runs out during a backoff too
            deadlines.append(now + limits.max_wall_time_s - self._running_ms() / 1000)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _running_ms(self) -> int:
        return self.wall_base + int((self.clock.monotonic() - self.run_started) * 1000)

    def _idle_ms(self) -> int:
        return int((self.clock.monotonic() - self.last_activity) * 1000)

    def _time_violation(self) -> Violation | None:
        limits, policy = self.kernel.tenant_context.limits, self.kernel.long_running_policy()
        wall, idle = self._running_ms() / 1000, self._idle_ms() / 1000
        if limits.max_wall_time_s is not None and wall >= limits.max_wall_time_s:
            return _violation(LimitType.WALL_TIME, wall, limits.max_wall_time_s)
        if self.flights and policy.idle_timeout_s is not None and idle >= policy.idle_timeout_s:
            return _violation(LimitType.IDLE_TIME, idle, policy.idle_timeout_s)
        return None

    # --- launching ----------------------------------------------------------------------------

    def _launch_ready(self) -> ExecutionError | None:
        now = self.clock.monotonic()
        launched = False
        for index, lane in enumerate(self.lanes):
            if self.stop or len(self.flights) >= self.max_branches:
                break
            if lane.node is None or index in self.flights or self.ready_at.get(index, now) > now:
                continue
            self.ready_at.pop(index, None)
            failure = self._launch(index, lane)
            if failure is not None or self.kernel.state.is_terminal:
                return failure
            launched = launched or index in self.flights
        if launched:
            # Guidance and evidence go to the nodes launched next, once.
            self.pending = []
        return None

    def _launch(self, index: int, lane: Lane) -> ExecutionError | None:
        k = self.kernel
        assert lane.node is not None
        node = self.graph.nodes[lane.node]
        # Idle time is that of steps in flight that give no sign of life: with none in flight
        # (after a backoff, say) there is nothing idle to count.
        idle_ms = self._idle_ms() if self.flights else 0
        try:
            alert = k.check_limits_before_step(node.name, running_ms=self._running_ms(), idle_ms=idle_ms)
        except ExecutionError as blocked:
            return blocked
        if alert is not None:
            self.stop.cost_alert = {"cost_usd": alert.cost_usd, "threshold_usd": alert.threshold_usd}
            return None
        revisit = not lane.interrupted and node.name not in self.retries
        if (
            revisit
            and node.max_iterations is not None
            and self.usage.repetitions.get(node.name, 0) >= node.max_iterations
        ):
            message = f"node '{node.name}' reached its max_iterations ({node.max_iterations})"
            k._policy_event("deny", message, limit="max_iterations", node=node.name)
            return ExecutionError.policy_violation(message, code="max_iterations_exceeded", details={"node": node.name})
        retry = self.retries.pop(node.name, None)
        attempt = retry.attempt if retry is not None else 1
        # A retry gets what its failed attempt was given, and what came in since.
        messages = priority_order([*retry.messages, *self.pending]) if retry is not None else list(self.pending)
        step_id = k.begin_step(node.step_type, node.name, self.origin_step_id, attempt=attempt)
        # Steps count every attempt; repetitions count visits (loop detection), not retries.
        k.record_step_completed(node.name if revisit else None)
        self._start_node(index, lane, node, step_id, attempt, messages)
        return None

    def _start_node(
        self, index: int, lane: Lane, node: Node, step_id: str, attempt: int, messages: list[InboxMessage]
    ) -> None:
        inline = self.fanout is None
        wake = self.wake

        def post_queued(message: tuple[Any, ...]) -> None:
            wake.put(("ctx", step_id, message))

        ctx = NodeContext(
            self.kernel,
            self._post_direct(step_id) if inline else post_queued,
            step_id=step_id,
            node=node.name,
            attempt=attempt,
            parent_token=self.kernel.cancellation_token(),
            messages=messages,
            resume_input=self.resume_input if lane.interrupted else MISSING,
        )
        # Starting a step is a sign of life: its idle time counts from here.
        self.last_activity = now = self.clock.monotonic()
        flight = _Flight(step_id, node, attempt, now, ctx, messages)
        self.flights[index] = flight
        if inline:
            self.inline = (index, lane, flight)
            return
        state, fn = lane.state, node.fn

        def job() -> None:
            try:
                result = fn(state, ctx)
            except BaseException as exc:  # reported to the driver, which decides
                wake.put(("done", index, step_id, None, exc))
            else:
                wake.put(("done", index, step_id, result, None))

        default_pool.submit(job)

    def _post_direct(self, step_id: str) -> Any:
        """How an inline node's context reaches the kernel: straight in, under the lock."""

        def post(message: tuple[Any, ...]) -> None:
            with self.lock:
                if self.abandoned or self.broken is not None:
                    return
                try:
                    with self.kernel._atomic():
                        self._handle_ctx(step_id, message)
                except BaseException as exc:
                    # The event was numbered but not stored: going on would leave a gap in the
                    # stream, so the run stops here (a worker resumes it from the log).
                    self.broken = exc
                    raise

        return post

    # --- handling what arrives ----------------------------------------------------------------

    def _handle(self, message: tuple[Any, ...]) -> RunResult | None:
        kind = message[0]
        if kind == "cancel":
            return self._cancel(message[1])
        if kind == "ctx":
            self._handle_ctx(message[1], message[2])
            return None
        _, index, step_id, result, exc = message
        flight = self.flights.get(index)
        if flight is None or flight.step_id != step_id:
            return None  # a step abandoned earlier finished late: its result is ignored
        violation = self._time_violation()
        if violation is not None:
            # The limit ran out before the step came back: it is stopped, as it would have been
            # had the timer won the race.
            return self._fail_on_limit(violation)
        del self.flights[index]
        flight.ctx._finish()
        self.last_activity = now = self.clock.monotonic()
        duration = int((now - flight.started) * 1000)
        if exc is None:
            return self._succeeded(index, flight, result, duration)
        if isinstance(exc, Interrupt):
            return self._interrupted(index, flight, exc, duration)
        if isinstance(exc, Cancelled) and self.kernel.is_cancelled():
            return self._cancel(self.kernel.cancellation_token().reason or "cancelled")
        return self._failed(index, flight, ExecutionError.from_exception(exc), duration)

    def _handle_ctx(self, step_id: str, message: tuple[Any, ...]) -> None:
        if not any(f.step_id == step_id for f in self.flights.values()):
            return  # from a step that was abandoned
        self.last_activity = self.clock.monotonic()
        k, kind = self.kernel, message[0]
        if kind == "emit":
            event: StreamEvent = message[1]
            if event.type.carries_content:
                k.emit_protected(event)
            else:
                k.emit_unprotected(event)
        elif kind == "usage":
            _, input_tokens, output_tokens, cost = message
            k.record_token_usage(input_tokens, output_tokens)
            k.record_cost(cost)
            # The delta lets a listener keep per-tenant totals without reading the previous event.
            delta = {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost_usd": cost}
            self.usage.wall_time_ms = self._running_ms()
            data = {**self.usage.to_dict(), "delta": delta}
            k.emit_unprotected(StreamEvent(EventType.USAGE, k.execution_id, self.clock.now(), data, step_id))
        elif kind == "discovered":
            k.record_discovered_step()
        elif kind == "steps":
            for _ in range(message[1]):
                k.record_step_completed(None)

    def _succeeded(self, index: int, flight: _Flight, result: Any, duration: int) -> RunResult | None:
        k = self.kernel
        output = result
        if isinstance(result, StepResult):
            output, result = result.output, result.state
        try:
            advance = self._advance(index, flight, result)
        except ExecutionError as exc:  # a router that routes nowhere
            k.complete_step(flight.step_id, output, duration)
            return self._fail(exc.with_step_id(flight.step_id))
        except Exception as exc:  # a router that raises
            k.complete_step(flight.step_id, output, duration)
            message = f"router of '{flight.node.name}' failed: {type(exc).__name__}: {exc}"
            return self._fail(ExecutionError.validation(message, code="router_failed", step_id=flight.step_id))
        with k._atomic():
            k.complete_step(flight.step_id, output, duration)
            # The outputs behind the current position: the last step's, or every branch's during a
            # fan-out. Bounded, so a checkpoint does not grow with the length of the run.
            if self.fanout is None:
                self.outputs = {flight.node.name: result}
            else:
                self.outputs[flight.node.name] = result
            advance()
            cancel = self._check_inbox()
            if cancel is not None:
                return self._cancel(cancel)
            if self.stop and not self.flights:
                return self._let_go()  # its checkpoint is the one for this step too
            self._checkpoint()
        return None

    def _advance(self, index: int, flight: _Flight, result: Any) -> Any:
        """Work out where the lane goes next (may raise); return the change to apply."""
        lane = self.lanes[index]
        if self.fanout is not None:
            nxt = self.graph.branch_successor(self.fanout, flight.node.name)
            return lambda: self._set_lane(index, Lane(lane.key, nxt, result))
        targets = self.graph.next_targets(flight.node.name, result)
        if targets == [END]:
            return lambda: self._set_lane(index, Lane(lane.key, None, result))
        if len(targets) == 1:
            return lambda: self._set_lane(index, Lane(lane.key, targets[0], result))
        fanout = self.graph.fanouts[flight.node.name]

        def fan_out() -> None:
            self.fanout, self.origin_step_id = fanout, flight.step_id
            self.lanes = [Lane(branch[0], branch[0], result) for branch in fanout.branches]

        return fan_out

    def _set_lane(self, index: int, lane: Lane) -> None:
        self.lanes[index] = lane

    def _join(self) -> None:
        assert self.fanout is not None
        joined = {lane.key: lane.state for lane in self.lanes}
        self.outputs = {}
        join = self.fanout.join
        self.fanout, self.origin_step_id = None, None
        self.lanes = [Lane("main", join, joined)]

    def _interrupted(self, index: int, flight: _Flight, interrupt: Interrupt, duration: int) -> RunResult | None:
        k = self.kernel
        output = {"interrupted": interrupt.reason.value, "prompt": interrupt.prompt}
        k.complete_step(flight.step_id, output, duration)
        self.lanes[index] = replace(self.lanes[index], interrupted=True)
        self.stop.interrupt = interrupt
        return None

    def _failed(self, index: int, flight: _Flight, error: ExecutionError, duration: int) -> RunResult | None:
        k = self.kernel
        error = replace(error, attempt=flight.attempt, step_id=flight.step_id)
        policy = error.retry_policy
        # A node's policy says how often and how soon to retry what may be retried; it does
        # not make retryable an error that says it is not (a tool's 400, a fatal category).
        if flight.node.retry is not None and error.worth_retrying:
            policy = flight.node.retry
        k.fail_step(flight.step_id, error, duration)
        # A failed attempt ends a step too: the inbox is read before anything else happens.
        cancel = self._check_inbox()
        if cancel is not None:
            return self._cancel(cancel)
        if not policy.should_retry(flight.attempt):
            return self._fail(error)
        delay_s = policy.delay_ms(flight.attempt) / 1000
        self.retries[flight.node.name] = _Retry(
            flight.attempt + 1, flight.messages, _after(self.clock.now(), delay_s) if delay_s > 0 else None
        )
        if delay_s > 0:
            self.ready_at[index] = self.clock.monotonic() + delay_s
        if self.stop and not self.flights:
            return self._let_go()  # its checkpoint records the retry
        self._checkpoint()
        return None

    # --- inbox and checkpoints ----------------------------------------------------------------

    def _check_inbox(self) -> str | None:
        """Handle waiting messages; returns a cancel reason if one asked to cancel."""
        k = self.kernel
        inbox = k.inbox()
        if inbox is None:
            return None
        inbox_ids = k.get_inbox_execution_ids()
        if not inbox.has_messages(inbox_ids):
            return None
        cancel: str | None = None
        for message in inbox.drain(inbox_ids):
            k.emit_protected(
                StreamEvent(EventType.INBOX_MESSAGE, k.execution_id, self.clock.now(), message_to_dict(message))
            )
            if isinstance(message, ControlMessage):
                if message.action is ControlAction.PAUSE:
                    self.stop.pause = message.reason or f"paused by {message.actor}"
                elif message.action is ControlAction.RESUME:
                    self.stop.pause = None
                elif message.action is ControlAction.CANCEL and cancel is None:
                    cancel = message.reason or f"cancelled by {message.actor}"
                # checkpoint: one is taken after every step anyway; compact: nothing to compact here.
            else:
                self.pending.append(message)
        return cancel

    def _checkpoint(self) -> Checkpoint | None:
        k = self.kernel
        store = k.checkpoint_store()
        if store is None:
            return None
        usage = self.usage.to_checkpoint()
        usage["wall_time_ms"] = self._running_ms()
        checkpoint = Checkpoint(
            id=ids.new_checkpoint_id(),
            execution_id=k.execution_id,
            graph=self.graph.name,
            seq=k.emitter.last_seq,
            position=Position(tuple(self.lanes), self.fanout.origin if self.fanout else None, self.origin_step_id),
            usage=usage,
            created_at=self.clock.now(),
            pending_messages=[message_to_dict(m) for m in self.pending],
            step_outputs=dict(self.outputs),
            retries={name: retry.to_dict() for name, retry in self.retries.items()},
        )
        store.save_checkpoint(checkpoint)
        if k._checkpoint_events:
            data = {"checkpoint_id": checkpoint.id, "covers_seq": checkpoint.seq, "nodes": checkpoint.current_nodes}
            k.emit_unprotected(StreamEvent(EventType.CHECKPOINT, k.execution_id, checkpoint.created_at, data))
        return checkpoint

    # --- endings ------------------------------------------------------------------------------

    def _let_go(self) -> RunResult:
        """Pause or wait with nothing in flight, after a checkpoint the next run starts from."""
        k, stop = self.kernel, self.stop
        with k._atomic():
            if stop.pause is not None:
                k.pause(stop.pause)
                prompt = None
            elif stop.interrupt is not None:
                prompt = {"prompt": stop.interrupt.prompt, "schema": stop.interrupt.schema}
                k.wait_for(stop.interrupt.reason, prompt)
            else:
                prompt = stop.cost_alert
                k.wait_for(WaitReason.COST_THRESHOLD, prompt)
            checkpoint = self._checkpoint()
        return k._result(checkpoint, prompt)

    def _abandon_flights(self, message: str, code: str) -> None:
        """Stop waiting for the steps in flight: each is told (its context is cancelled) and
        recorded as failed in the ``cancelled`` category, saying why."""
        now = self.clock.monotonic()
        for flight in self.flights.values():
            flight.ctx._abandon(message)
            error = ExecutionError.cancelled(message, code=code)
            self.kernel.fail_step(flight.step_id, error, int((now - flight.started) * 1000))
        self.flights.clear()

    def _cancel(self, reason: str) -> RunResult:
        k = self.kernel
        with k._atomic():
            self._abandon_flights("cancelled during step", "cancelled")
            k.cancel_execution(reason)
        return k._result()

    def _fail(self, error: ExecutionError) -> RunResult:
        k = self.kernel
        with k._atomic():
            self._abandon_flights("stopped: the execution failed", "execution_failed")
            if not k.state.is_terminal:
                k.fail(error)
        return k._result()


def _after(now: datetime, seconds: float) -> datetime:
    """``now`` plus ``seconds``, or the end of time for a delay no calendar holds."""
    try:
        return now + timedelta(seconds=seconds)
    except OverflowError:
        return datetime.max.replace(tzinfo=now.tzinfo)


def _violation(limit: LimitType, used: float, maximum: float) -> Violation:
    return Violation(
        limit, round(used, 3), maximum, f"{limit.value} limit exceeded: {used:.3g} used of {maximum:.3g} allowed"
    )
