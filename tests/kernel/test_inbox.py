from __future__ import annotations

import pytest

from executions.kernel import (
    A2AMessage,
    ControlAction,
    ControlMessage,
    EvidenceImpact,
    EvidenceMessage,
    GuidanceMessage,
    GuidancePriority,
    InMemoryInbox,
)
from executions.kernel.inbox import message_from_dict, message_to_dict, priority_order


def test_priority_order_with_arrival_order_inside_a_rank() -> None:
    a2a = A2AMessage("agent-b", "status", {"ok": True})
    normal1 = GuidanceMessage("one")
    high = GuidanceMessage("urgent", GuidancePriority.HIGH)
    evidence = EvidenceMessage("web", "info", {}, 0.4)
    contradicts = EvidenceMessage("lab", "no", {}, 0.9, EvidenceImpact.CONTRADICTS_PLAN)
    normal2 = GuidanceMessage("two")
    pause = ControlMessage(ControlAction.PAUSE, "ops")
    cancel = ControlMessage(ControlAction.CANCEL, "ops")
    arrived = [a2a, normal1, high, evidence, contradicts, normal2, pause, cancel]
    assert priority_order(arrived) == [pause, cancel, contradicts, evidence, high, normal1, normal2, a2a]


def test_drain_reads_several_inboxes_once_in_one_priority_order() -> None:
    inbox = InMemoryInbox()
    inbox.push("exec_child", GuidanceMessage("child guidance"))
    inbox.push("exec_parent", ControlMessage(ControlAction.PAUSE, "ops"))
    inbox.push("exec_other", GuidanceMessage("not mine"))
    assert inbox.has_messages(["exec_child", "exec_parent"])
    drained = inbox.drain(["exec_child", "exec_parent"])
    assert [m.kind for m in drained] == ["control", "guidance"]
    assert not inbox.has_messages(["exec_child", "exec_parent"])
    assert inbox.drain(["exec_child"]) == []
    assert inbox.has_messages(["exec_other"])


@pytest.mark.parametrize(
    "message",
    [
        ControlMessage(ControlAction.CANCEL, "ops", "why"),
        GuidanceMessage("do x", GuidancePriority.HIGH, "ann"),
        EvidenceMessage("src", "title", {"k": [1]}, 0.5, EvidenceImpact.REQUIRES_CHANGE),
        A2AMessage("a", "t", [1, 2]),
    ],
)
def test_messages_round_trip(message: object) -> None:
    assert message_from_dict(message_to_dict(message)) == message  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "data",
    [
        {"kind": "shout"},
        {"kind": "control", "action": "explode"},
        {"kind": "guidance"},
        {"kind": "evidence", "source": "s", "title": "t", "confidence": 2},
        {"kind": "guidance", "content": "x", "priority": "urgent"},
    ],
)
def test_malformed_messages_are_refused(data: dict[str, object]) -> None:
    with pytest.raises((KeyError, ValueError)):
        message_from_dict(data)
