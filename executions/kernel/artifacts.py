"""Artifacts: named, typed content produced by steps."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class ArtifactType(StrEnum):
    TEXT = "text"
    CODE = "code"
    JSON = "json"
    IMAGE = "image"
    PDF = "pdf"
    SEARCH_RESULTS = "search_results"
    TOOL_OUTPUT = "tool_output"
    THOUGHT = "thought"
    PLAN = "plan"
    ERROR = "error"
    SCREENSHOT = "screenshot"
    AUDIO = "audio"
    VIDEO = "video"
    BINARY = "binary"

    @property
    def default_content_type(self) -> str:
        return _CONTENT_TYPES[self]


_CONTENT_TYPES: dict[ArtifactType, str] = {
    ArtifactType.TEXT: "text/plain; charset=utf-8",
    ArtifactType.CODE: "text/plain; charset=utf-8",
    ArtifactType.JSON: "application/json",
    ArtifactType.IMAGE: "image/png",
    ArtifactType.PDF: "application/pdf",
    ArtifactType.SEARCH_RESULTS: "application/json",
    ArtifactType.TOOL_OUTPUT: "application/json",
    ArtifactType.THOUGHT: "text/plain; charset=utf-8",
    ArtifactType.PLAN: "text/markdown; charset=utf-8",
    ArtifactType.ERROR: "application/json",
    ArtifactType.SCREENSHOT: "image/png",
    ArtifactType.AUDIO: "audio/mpeg",
    ArtifactType.VIDEO: "video/mp4",
    ArtifactType.BINARY: "application/octet-stream",
}


@dataclass(frozen=True)
class PutArtifactRequest:
    artifact_id: str
    execution_id: str
    step_id: str
    name: str
    artifact_type: ArtifactType
    content: bytes
    content_type: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class ArtifactInfo:
    """What the store recorded; the ``data-artifact-created`` event carries it."""

    artifact_id: str
    execution_id: str
    step_id: str
    name: str
    artifact_type: ArtifactType
    content_type: str
    size: int
    sha256: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact_id": self.artifact_id,
            "name": self.name,
            "artifact_type": self.artifact_type.value,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "metadata": self.metadata,
        }


class ArtifactStore(Protocol):
    """Stores content. May raise; the kernel logs a failed store and the step goes on."""

    def put(self, request: PutArtifactRequest) -> ArtifactInfo: ...


class InMemoryArtifactStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, tuple[ArtifactInfo, bytes]] = {}

    def put(self, request: PutArtifactRequest) -> ArtifactInfo:
        info = ArtifactInfo(
            request.artifact_id,
            request.execution_id,
            request.step_id,
            request.name,
            request.artifact_type,
            request.content_type,
            request.size,
            request.sha256,
            dict(request.metadata),
        )
        with self._lock:
            self.items[info.artifact_id] = (info, request.content)
        return info

    def get(self, artifact_id: str) -> tuple[ArtifactInfo, bytes]:
        return self.items[artifact_id]
