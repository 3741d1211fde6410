"""Secrets (API keys, claim tokens) are handed out once and stored only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def matches(secret: str, stored_hash: str | None) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    if stored_hash is None:
        return False
    return hmac.compare_digest(hash_secret(secret), stored_hash)
