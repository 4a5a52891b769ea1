"""The tenant context every execution requires."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .enforcement import LongRunningPolicy, ResourceLimits


@dataclass(frozen=True)
class TenantContext:
    """Who an execution runs for, and within which limits. There is no execution without one."""

    tenant_id: str
    user_id: str | None = None
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    long_running: LongRunningPolicy = field(default_factory=LongRunningPolicy.standard)
    pii_masking: bool = False
    max_concurrent_branches: int = 8
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.tenant_id, str) or not self.tenant_id:
            raise ValueError("a tenant context needs a tenant id")
