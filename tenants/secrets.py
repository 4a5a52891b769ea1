"""Encryption of tenant secrets at rest. Plain text exists only in the worker's memory while a
node uses it; it is never returned by the admin or the API, and never written to events or logs."""

from __future__ import annotations

import base64
import hashlib
from functools import cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted: it was saved under another ENACT_SECRETS_KEY."""


@cache
def _fernet(key: str, fallback: str) -> Fernet:
    if key:
        return Fernet(key.encode())
    # The embedded default has no key of its own: derive one from SECRET_KEY (sha256 -> 32 bytes).
    digest = hashlib.sha256(b"enact-tenant-secrets:" + fallback.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def fernet() -> Fernet:
    return _fernet(settings.ENACT_SECRETS_KEY, settings.SECRET_KEY)


def encrypt(plain: str) -> str:
    return fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("a tenant secret cannot be decrypted with this ENACT_SECRETS_KEY") from None
