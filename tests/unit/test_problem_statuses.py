"""What each kind of engine error is on the wire: its HTTP status in the native API and in the AGH dialect."""

from __future__ import annotations

import orjson

from workloom.api.problems import problem_fields
from workloom.dialects.agh.errors import from_workloom
from workloom.domain.errors import Conflict, OutcomeUnknown
from workloom.engine.unit import UNKNOWN_OUTCOME


def test_an_unknown_commit_outcome_is_503_and_says_what_is_safe() -> None:
    error = OutcomeUnknown(UNKNOWN_OUTCOME)
    status, body = problem_fields(error)
    assert (status, body["type"], body["title"]) == (
        503,
        "https://workloom.dev/problems/outcome-unknown",
        "Outcome unknown",
    )
    assert "may or may not have been saved" in body["detail"] and "Idempotency-Key" in body["detail"]
    agh = from_workloom(error)
    assert agh.status_code == 503 and orjson.loads(agh.body)["error"] == UNKNOWN_OUTCOME


def test_a_conflict_stays_409() -> None:
    assert problem_fields(Conflict("taken"))[0] == 409
    assert from_workloom(Conflict("taken")).status_code == 409
