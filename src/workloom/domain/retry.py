"""Retry backoff: exponential with a ceiling, as the queue configures it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_interval_seconds: float = 1.0
    backoff_coefficient: float = 2.0
    max_interval_seconds: float = 300.0

    def delay_after(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` once attempt ``attempt`` (1-based) failed."""
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        delay = self.initial_interval_seconds * self.backoff_coefficient ** (attempt - 1)
        return float(min(delay, self.max_interval_seconds))
