"""Stored idempotent answers are sealed with a key derived from the idempotency key itself.

A claim's answer holds its claim token; sealing means the database never holds a usable token, and
only the client that knows the idempotency key can read its first answer back.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _key(idempotency_key: str) -> bytes:
    return hashlib.sha256(b"workloom-idempotency-seal:" + idempotency_key.encode()).digest()


def seal(idempotency_key: str, plaintext: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(_key(idempotency_key)).encrypt(nonce, plaintext, None)


def open_sealed(idempotency_key: str, sealed: bytes) -> bytes:
    return AESGCM(_key(idempotency_key)).decrypt(sealed[:12], sealed[12:], None)
