"""Stored idempotent answers are sealed with a key derived from the idempotency key itself.

A claim's answer holds its claim token; sealing means the database never holds a usable token, and
only the client that knows the idempotency key can read its first answer back.
"""

from __future__ import annotations

import hashlib
import os
import zlib

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def _key(idempotency_key: str) -> bytes:
    return hashlib.sha256(b"workloom-idempotency-seal:" + idempotency_key.encode()).digest()


# Answers past this size are compressed before sealing: a batch of claims is ~150 KB of JSON that
# compresses about tenfold, and once encrypted the database can no longer compress it itself.
COMPRESS_FROM = 1024
_ZLIB = b"\x78"  # how a zlib stream starts; a JSON answer (an object or a list) never does


def seal(idempotency_key: str, plaintext: bytes) -> bytes:
    if len(plaintext) >= COMPRESS_FROM:
        plaintext = zlib.compress(plaintext, 1)
    nonce = os.urandom(12)
    return nonce + AESGCM(_key(idempotency_key)).encrypt(nonce, plaintext, None)


def open_sealed(idempotency_key: str, sealed: bytes) -> bytes:
    plaintext = AESGCM(_key(idempotency_key)).decrypt(sealed[:12], sealed[12:], None)
    return zlib.decompress(plaintext) if plaintext[:1] == _ZLIB else plaintext
