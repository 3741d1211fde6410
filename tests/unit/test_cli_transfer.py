"""``workloom import`` / ``export``: reading rows, mapping them to tasks, keys that make re-runs safe."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import typer

from workloom.cli.transfer import ImportJob, RowMapping, csv_record, csv_rows, file_format, jsonl_rows
from workloom.client import Client


def test_csv_rows_carry_the_line_they_start_on() -> None:
    text = 'title,notes\nFirst,plain\nSecond,"two\nlines"\nThird,x,surplus\n'
    rows = csv_rows(text, "title", "t.csv")
    assert [(row.line, row.values, row.error) for row in rows] == [
        (2, {"title": "First", "notes": "plain"}, None),
        (3, {"title": "Second", "notes": "two\nlines"}, None),
        (5, None, "1 more value(s) than the header has columns"),
    ]


def test_a_csv_without_the_title_column_is_refused_naming_the_columns(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        csv_rows("name,notes\nx,y\n", "title", "t.csv")
    err = capsys.readouterr().err
    assert "no column 'title'" in err
    assert "name, notes" in err
    assert "--title-field" in err


def test_jsonl_rows_skip_blank_lines_and_keep_bad_ones_as_failures() -> None:
    rows = jsonl_rows('{"title": "a"}\n\n[1, 2]\n{oops\n{"title": "b"}\n')
    assert [(row.line, row.values is not None, row.error is not None) for row in rows] == [
        (1, True, False),
        (3, False, True),
        (4, False, True),
        (5, True, False),
    ]
    assert rows[1].error is not None and "expected a JSON object" in rows[1].error


def test_a_row_becomes_title_priority_and_data() -> None:
    row: dict[str, Any] = {"title": "Refund", "prio": "high", "payload": '{"amount": 5}'}
    assert RowMapping("title", "prio", None, "csv").task(row) == ("Refund", {"data": row, "priority": "high"})
    assert RowMapping("title", None, "payload", "csv").task(row) == ("Refund", {"data": {"amount": 5}})
    assert RowMapping("title", None, "payload", "jsonl").task(row)[1] == {"data": '{"amount": 5}'}
    assert RowMapping("title", "prio", None, "csv").task({"title": "x", "prio": ""})[1] == {
        "data": {"title": "x", "prio": ""}
    }
    assert RowMapping("n", None, None, "jsonl").task({"n": 7})[0] == "7"
    with pytest.raises(ValueError, match="no title"):
        RowMapping("title", None, None, "csv").task({"title": "  "})
    with pytest.raises(ValueError, match="not valid JSON"):
        RowMapping("title", None, "payload", "csv").task({"title": "x", "payload": "{"})


def test_the_idempotency_key_depends_on_file_queue_and_line_only() -> None:
    with Client("http://wl.test", "k") as client:

        def job(file_hash: str, queue: str, batch: str) -> ImportJob:
            mapping = RowMapping("title", None, None, "csv")
            return ImportJob(client, queue, mapping, "f.csv", file_hash, batch, threading.Event())

        key = job("abc", "inbox", "run1").key(7)
        assert key == job("abc", "inbox", "run2").key(7)
        assert key != job("abc", "inbox", "run1").key(8)
        assert key != job("abd", "inbox", "run1").key(7)
        assert key != job("abc", "other", "run1").key(7)
        assert len(key) <= 255


def test_formats_come_from_the_option_or_the_extension(capsys: pytest.CaptureFixture[str]) -> None:
    assert file_format(None, Path("a.CSV")) == "csv"
    assert file_format(None, Path("a.ndjson")) == "jsonl"
    assert file_format("csv", Path("a.jsonl")) == "csv"
    assert file_format(None, None, default="jsonl") == "jsonl"
    with pytest.raises(typer.Exit):
        file_format(None, Path("a.txt"))
    assert "--format csv" in capsys.readouterr().err


def test_csv_records_hold_json_for_structured_fields() -> None:
    record = csv_record(
        {"id": "t1", "title": "x", "data": {"a": [1]}, "owner": {"kind": "human", "ref": "al"}, "output": None}
    )
    assert record["data"] == '{"a": [1]}'
    assert record["owner"] == "human:al"
    assert record["output"] == ""
