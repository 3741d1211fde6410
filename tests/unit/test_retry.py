"""Retry backoff: exponential from the initial interval, capped at the maximum."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workloom.domain.retry import RetryPolicy


def test_default_backoff_doubles_from_one_second():
    policy = RetryPolicy()
    assert [policy.delay_after(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_backoff_is_capped():
    policy = RetryPolicy(initial_interval_seconds=5, backoff_coefficient=3, max_interval_seconds=60)
    assert [policy.delay_after(n) for n in range(1, 5)] == [5.0, 15.0, 45.0, 60.0]
    assert policy.delay_after(100) == 60.0


def test_coefficient_one_is_a_constant_interval():
    assert {RetryPolicy(2.5, 1.0, 300).delay_after(n) for n in range(1, 10)} == {2.5}


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_are_one_based(attempt):
    with pytest.raises(ValueError, match="1-based"):
        RetryPolicy().delay_after(attempt)


@given(
    initial=st.floats(0, 100),
    coefficient=st.floats(1, 10),
    ceiling=st.floats(0, 1000),
    attempt=st.integers(1, 60),
)
def test_delay_never_shrinks_and_never_passes_the_ceiling(initial, coefficient, ceiling, attempt):
    policy = RetryPolicy(initial, coefficient, ceiling)
    delay = policy.delay_after(attempt)
    assert isinstance(delay, float)
    assert 0 <= delay <= ceiling
    assert policy.delay_after(attempt + 1) >= delay
