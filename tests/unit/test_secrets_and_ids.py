"""Secrets are matched only against their hash; stored answers are sealed; ids name their kind and sort by
creation time."""

from __future__ import annotations

import os
import re

import orjson
import pytest
from cryptography.exceptions import InvalidTag

from workloom.domain import ids
from workloom.domain.secrets import hash_secret, matches, new_secret
from workloom.engine.sealing import open_sealed, seal


def test_new_secrets_are_prefixed_and_unguessable():
    made = {new_secret("clm") for _ in range(50)}
    assert len(made) == 50
    assert all(s.startswith("clm_") and len(s) > 40 for s in made)


def test_a_secret_matches_only_its_own_hash():
    secret = new_secret("wl")
    stored = hash_secret(secret)
    assert re.fullmatch(r"[0-9a-f]{64}", stored)
    assert secret not in stored
    assert matches(secret, stored)
    assert not matches(secret + "x", stored)
    assert not matches(new_secret("wl"), stored)
    assert not matches("", stored)


def test_nothing_matches_a_missing_hash():
    assert not matches("anything", None)


def test_ids_name_their_kind_and_sort_by_creation(monkeypatch):
    clock = iter([1_000.000, 1_000.001, 1_000.002, 2_000.0])
    monkeypatch.setattr(ids.time, "time", lambda: next(clock))
    made = [ids.new_id("task") for _ in range(4)]
    assert made == sorted(made)
    assert all(re.fullmatch(r"task_[0-9a-hjkmnp-tv-z]{26}", i) for i in made)


def test_an_id_is_its_milliseconds_then_its_random_bits_in_crockford_base32(monkeypatch):
    """The written form stays what ids already stored have: one character per five bits, most significant
    first, 48 bits of milliseconds then 80 random bits."""
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"

    def spelled(value: int, length: int) -> str:
        return "".join(alphabet[(value >> (5 * i)) & 31] for i in reversed(range(length)))

    for millis, random in [(0, bytes(10)), (1_700_000_000_123, bytes(range(10))), ((1 << 48) - 1, b"\xff" * 10)]:
        monkeypatch.setattr(ids.time, "time", lambda m=millis: (m + 0.5) / 1000)
        monkeypatch.setattr(ids.random, "getrandbits", lambda k, r=random: int.from_bytes(r, "big") >> (80 - k))
        assert ids.new_id("run") == "run_" + spelled(millis, 10) + spelled(int.from_bytes(random, "big"), 16)


def test_a_sealed_answer_opens_only_with_its_key_and_a_large_one_is_stored_compressed() -> None:
    claims = {
        "items": [{"run_id": f"run_{i:04}", "status": "completed"} for i in range(100)],
        "claims": [{"claim_token": f"wlct_{i:040}", "task": {"title": f"job {i}"}} for i in range(100)],
    }
    large = orjson.dumps(claims)
    sealed = seal("key-1", large)
    assert open_sealed("key-1", sealed) == large
    assert len(sealed) < len(large) / 4  # a batch of claims is stored in a fraction of its size
    assert b"wlct_" not in sealed  # the tokens are not readable in what is stored
    small = b'{"status":"completed"}'
    assert open_sealed("key-1", seal("key-1", small)) == small
    with pytest.raises(InvalidTag):
        open_sealed("key-2", sealed)


def test_a_forked_child_makes_ids_other_than_its_parents() -> None:
    # The random part comes from the standard generator, which a forked child must not share with its
    # parent (server workers are forked): the two would otherwise make the same ids in the same millisecond.
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, " ".join(ids.new_id("t")[-16:] for _ in range(20)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as child:
        theirs = set(child.read().split())
    ours = {ids.new_id("t")[-16:] for _ in range(20)}
    assert len(theirs) == 20 and not theirs & ours
