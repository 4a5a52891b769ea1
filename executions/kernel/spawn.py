"""How an execution was spawned: inline in its parent, or as a linked child."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class SpawnMode:
    """``inline``: the work runs as steps of the parent (same execution, same inbox).
    ``child``: a new execution linked to its parent; ``background`` children are not awaited;
    ``inherit_inbox`` children read their parent's inbox as well as their own."""

    kind: str
    background: bool = False
    inherit_inbox: bool = False
    policies: Any = None

    @classmethod
    def inline(cls) -> SpawnMode:
        return cls("inline")

    @classmethod
    def child(cls, *, background: bool = False, inherit_inbox: bool = False, policies: Any = None) -> SpawnMode:
        return cls("child", background, inherit_inbox, policies)

    @property
    def is_inline(self) -> bool:
        return self.kind == "inline"

    def __post_init__(self) -> None:
        if self.kind not in ("inline", "child"):
            raise ValueError(f"unknown spawn mode {self.kind!r}")
        if self.kind == "inline" and (self.background or self.inherit_inbox):
            raise ValueError("an inline spawn has no background or inherit_inbox flags")
