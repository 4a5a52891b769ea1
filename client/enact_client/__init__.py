"""A typed client for the Enact platform's API: ``Client`` (blocking) and ``AsyncClient``
(asyncio), with the same methods; errors are ``EnactError`` subclasses carrying the error body.

    from enact_client import Client

    with Client("http://127.0.0.1:8000", key) as enact:
        execution = enact.submit("demo.slow", {"steps": 3, "seconds": 1})
        for event in enact.stream(execution["id"]):
            print(event["seq"], event["type"])
"""

from enact_client._async import AsyncClient
from enact_client._sync import Client
from enact_client.errors import (
    Conflict,
    ConnectionFailed,
    EnactError,
    Forbidden,
    InvalidInput,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    ServerBusy,
    ServerError,
    Unauthenticated,
)
from enact_client.types import TERMINAL_EVENT_TYPES, Artifact, Blueprint, BulkCancelResult, Event, Execution, Page, Step

__version__ = "0.1.0"

__all__ = [
    "TERMINAL_EVENT_TYPES",
    "Artifact",
    "AsyncClient",
    "Blueprint",
    "BulkCancelResult",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "EnactError",
    "Event",
    "Execution",
    "Forbidden",
    "InvalidInput",
    "MethodNotAllowed",
    "NotFound",
    "Page",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "ServerBusy",
    "ServerError",
    "Step",
    "Unauthenticated",
]
