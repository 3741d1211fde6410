"""Identifiers: time-ordered, prefixed by the kind of thing they name, safe in URLs."""

from __future__ import annotations

import random
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # Crockford base32, lower case
# Two characters per ten bits: half the lookups of one per five (ids are made for every row written).
_PAIRS = [high + low for high in _ALPHABET for low in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))
_MILLIS = (1 << 48) - 1


def new_id(prefix: str) -> str:
    """``prefix_`` + 26 chars: 48 bits of milliseconds then 80 random bits, so ids sort by creation.

    The 26 characters are the 130-bit number ``millis << 80 | random`` in base32, most significant first
    (its two top bits are always zero)."""
    # Ids name things, they guard nothing (keys and claim tokens come from ``secrets``), so the random part
    # is the standard generator's, seeded from the OS and reseeded in a forked child: a tenth of the
    # cost of a getrandom system call per id, which was a seventh of the server's time in a batch create.
    value = (int(time.time() * 1000) & _MILLIS) << 80 | random.getrandbits(80)
    pairs = _PAIRS
    return prefix + "_" + "".join([pairs[value >> shift & 1023] for shift in _SHIFTS])
