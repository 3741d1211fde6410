"""Usage of a run (tokens, cost, tool calls…) and its summary over a task's runs.

A worker reports a run's usage *so far* with each heartbeat and with complete (the SDK's worker sends
running totals). Reports merge into the run's ``usage`` key by key: a key reported again takes the new
value, a key left out keeps the last one, so a report may carry only what changed. A task's summary
adds the numbers up across its runs (attempts).

The names the AGH vocabulary reads are ``input_tokens``, ``output_tokens``, ``total_tokens``,
``total_cost``, ``cost_currency``, ``tool_call_count`` and ``turn_count``; any other key is kept too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def merge(current: Any, report: Mapping[str, Any] | None) -> Any:
    """The run's usage after ``report``: a new dict, ``current`` updated key by key."""
    if report is None:
        return current
    merged: dict[str, Any] = dict(current) if isinstance(current, Mapping) else {}
    merged.update(report)
    return merged


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def summarize(usages: Iterable[Any]) -> dict[str, Any]:
    """Numbers summed per key across runs; any other value (``cost_currency``) is the last one seen.
    ``total_tokens`` is ``input_tokens + output_tokens`` where no run reported it."""
    totals: dict[str, Any] = {}
    for usage in usages:
        if not isinstance(usage, Mapping):
            continue
        for key, value in usage.items():
            if _is_number(value):
                previous = totals.get(key, 0)
                totals[key] = (previous if _is_number(previous) else 0) + value
            elif value is not None:
                totals[key] = value
    if "total_tokens" not in totals and ("input_tokens" in totals or "output_tokens" in totals):
        totals["total_tokens"] = totals.get("input_tokens", 0) + totals.get("output_tokens", 0)
    return totals
