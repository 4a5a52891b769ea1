"""Keeping the tenant's secrets out of everything a run stores or emits.

A secret reaches a request only as a header (see ``tools.py``), but a server may send it back: in
its answer, in an error page. So every value the run holds a secret of is redacted where a node
hands anything over: its output and the state it passes on, the error it fails with, and what it
emits through its context on the way (tool calls and results, text deltas, policy decisions,
approval prompts, artifacts). Events, step rows, checkpoints, artifacts and so every API answer
and the admin are built from those, so none of them can hold a secret.

Written here, not taken from a library: it is one regular expression over the run's own secret
values (no library knows which values those are), walked through JSON values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from executions.kernel import ArtifactType, ExecutionError, WaitReason

__all__ = ["REDACTED", "RedactingContext", "Redactor"]

REDACTED = "[redacted]"
# Shorter values cannot be told from ordinary text: redacting them would garble every output.
MIN_SECRET_CHARS = 4


class Redactor:
    """Replaces each of the given secret values (as they are, and as JSON text quotes them)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        values = {value for value in secrets if isinstance(value, str) and len(value) >= MIN_SECRET_CHARS}
        forms = values | {json.dumps(value)[1:-1] for value in values}
        ordered = sorted(forms, key=len, reverse=True)  # the longest first, so no part of one is left
        self._text = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._bytes = re.compile(b"|".join(re.escape(form.encode()) for form in ordered)) if ordered else None

    def __bool__(self) -> bool:
        return self._text is not None

    def text(self, text: str) -> str:
        return self._text.sub(REDACTED, text) if self._text is not None else text

    def value(self, value: Any) -> Any:
        """A JSON value (or what a node made) with every secret in its strings and keys redacted."""
        if self._text is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k) if isinstance(k, str) else k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        if isinstance(value, bytes) and self._bytes is not None:
            return self._bytes.sub(REDACTED.encode(), value)
        return value

    def error(self, error: ExecutionError) -> ExecutionError:
        return replace(error, message=self.text(error.message), details=self.value(error.details))


class RedactingContext:
    """A node's context whose every emission is redacted first; the rest is the context's own."""

    def __init__(self, ctx: Any, redactor: Redactor) -> None:
        self._ctx = ctx
        self._redactor = redactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def text_delta(self, delta: str) -> None:
        self._ctx.text_delta(self._redactor.text(delta))

    def tool_input(self, tool_call_id: str, tool_name: str, input: Any) -> None:
        self._ctx.tool_input(tool_call_id, tool_name, self._redactor.value(input))

    def tool_output(self, tool_call_id: str, tool_name: str, output: Any) -> None:
        self._ctx.tool_output(tool_call_id, tool_name, self._redactor.value(output))

    def policy_decision(self, decision: str, tool_name: str, reason: str, **details: Any) -> None:
        self._ctx.policy_decision(decision, tool_name, self._redactor.text(reason), **self._redactor.value(details))

    def interrupt(self, reason: WaitReason = WaitReason.USER_INPUT, *, prompt: Any = None, schema: Any = None) -> Any:
        return self._ctx.interrupt(reason, prompt=self._redactor.value(prompt), schema=schema)

    def store_artifact(
        self, name: str, artifact_type: ArtifactType, content: Any, *, content_type: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str | None:  # fmt: skip
        redact = self._redactor.value
        return self._ctx.store_artifact(  # type: ignore[no-any-return]
            name, artifact_type, redact(content), content_type=content_type, metadata=redact(metadata)
        )

    def store_json_artifact(self, name: str, value: Any, *, metadata: dict[str, Any] | None = None) -> str | None:
        redact = self._redactor.value
        return self._ctx.store_json_artifact(name, redact(value), metadata=redact(metadata))  # type: ignore[no-any-return]
