"""Run usage: reports merge key by key into the run; a task's summary adds its runs up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workloom.domain.usage import merge, summarize


def test_a_report_replaces_the_keys_it_names_and_keeps_the_others():
    assert merge(None, {"input_tokens": 3}) == {"input_tokens": 3}
    assert merge({"input_tokens": 3, "turns": 1}, {"input_tokens": 9}) == {"input_tokens": 9, "turns": 1}
    assert merge({"a": 1}, None) == {"a": 1}
    assert merge("not a dict", {"a": 1}) == {"a": 1}


def test_current_usage_is_not_changed_in_place():
    current = {"a": 1}
    merge(current, {"a": 2})
    assert current == {"a": 1}


def test_a_summary_sums_numbers_keeps_the_last_other_value_and_derives_total_tokens():
    summary = summarize(
        [
            {"input_tokens": 10, "output_tokens": 2, "cost_currency": "EUR", "flag": True},
            None,
            {"input_tokens": 5, "total_cost": 0.25, "cost_currency": "USD"},
            "garbage",
        ]
    )
    assert summary == {
        "input_tokens": 15,
        "output_tokens": 2,
        "total_tokens": 17,
        "total_cost": 0.25,
        "cost_currency": "USD",
        "flag": True,
    }


def test_a_reported_total_is_summed_not_derived():
    assert summarize([{"input_tokens": 1, "total_tokens": 10}]) == {"input_tokens": 1, "total_tokens": 10}
    assert summarize([]) == {}


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 10**6)), max_size=10))
def test_summing_is_the_sum_per_key(usages):
    summary = summarize(usages)
    for key in ("a", "b", "c"):
        assert summary.get(key, 0) == sum(u.get(key, 0) for u in usages)
