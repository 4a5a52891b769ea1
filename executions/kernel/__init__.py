"""The execution kernel of Enact, in plain Python: no Django, no I/O in the reducer.

Read it in the seed's order: ids, state, reducer, errors, enforcement, events, inbox,
cancellation, graph, kernel. The platform plugs in through the ports in ``ports.py``.
"""

from __future__ import annotations

from .artifacts import ArtifactInfo, ArtifactStore, ArtifactType, InMemoryArtifactStore, PutArtifactRequest
from .cancellation import CancellationToken, Cancelled
from .context import TenantContext
from .enforcement import EnforcementMiddleware, ExecutionUsage, LimitType, LongRunningPolicy, ResourceLimits
from .errors import Backoff, ErrorCategory, ExecutionError, RetryPolicy
from .events import EventEmitter, EventType, PiiMaskingProcessor, ProtectedEventEmitter, StreamEvent, mask_pii
from .graph import END, CompiledGraph, GraphBuilder, GraphValidationError
from .inbox import (
    A2AMessage,
    ControlAction,
    ControlMessage,
    EvidenceImpact,
    EvidenceMessage,
    GuidanceMessage,
    GuidancePriority,
    InboxMessage,
    InMemoryInbox,
)
from .kernel import ExecutionKernel
from .node import MISSING, Interrupt, NodeContext, RunResult, StepResult
from .persistence import Checkpoint, ExecutionSnapshot
from .reducer import ReducerError, reduce, replay
from .spawn import SpawnMode
from .state import Execution, ExecutionState, Step, StepState, StepType, WaitReason

__all__ = [
    "END",
    "MISSING",
    "A2AMessage",
    "ArtifactInfo",
    "ArtifactStore",
    "ArtifactType",
    "Backoff",
    "CancellationToken",
    "Cancelled",
    "Checkpoint",
    "CompiledGraph",
    "ControlAction",
    "ControlMessage",
    "EnforcementMiddleware",
    "ErrorCategory",
    "EventEmitter",
    "EventType",
    "EvidenceImpact",
    "EvidenceMessage",
    "Execution",
    "ExecutionError",
    "ExecutionKernel",
    "ExecutionSnapshot",
    "ExecutionState",
    "ExecutionUsage",
    "GraphBuilder",
    "GraphValidationError",
    "GuidanceMessage",
    "GuidancePriority",
    "InMemoryArtifactStore",
    "InMemoryInbox",
    "InboxMessage",
    "Interrupt",
    "LimitType",
    "LongRunningPolicy",
    "NodeContext",
    "PiiMaskingProcessor",
    "ProtectedEventEmitter",
    "PutArtifactRequest",
    "ReducerError",
    "ResourceLimits",
    "RetryPolicy",
    "RunResult",
    "SpawnMode",
    "Step",
    "StepResult",
    "StepState",
    "StepType",
    "StreamEvent",
    "TenantContext",
    "WaitReason",
    "mask_pii",
    "reduce",
    "replay",
]
