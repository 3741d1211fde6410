"""``workloom import`` and ``workloom export``: tasks in bulk, from and to CSV or JSON lines files.

An import sends one create per row, several at a time, each with an ``Idempotency-Key`` made of the file's
content hash, the queue and the row's line, so running the same import again creates nothing twice. Each
task records where it came from in ``metadata.import`` (file, hash, line, and the batch: one id per run of
the command); a row imported by an earlier run is answered by the server as a reuse of its key with a
different request (the batch differs), which is how it is counted as "already there".
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any, Literal, cast

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from workloom.cli.http import BULK_RETRIES, connect, unreachable_reason
from workloom.cli.output import compact, console, err_console, fail, note, print_json
from workloom.client import (
    Client,
    IdempotencyKeyReusedError,
    Task,
    TaskFields,
    TaskFilters,
    TransportError,
    WorkloomError,
)

Format = Literal["csv", "jsonl"]
FORMATS: dict[str, Format] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
MAX_FAILURES_SHOWN = 20
EXPORT_COLUMNS = (
    "id", "identifier", "title", "status", "priority", "queue", "attempts", "owner",
    "created_at", "updated_at", "closed_at", "data", "output", "error", "metadata",
)  # fmt: skip


def file_format(given: str | None, path: Path | None, default: Format | None = None) -> Format:
    """``--format``, else what the file's extension says, else ``default``; otherwise the command ends."""
    if given is not None:
        if given not in ("csv", "jsonl"):
            fail(f"--format must be csv or jsonl, not {given!r}.")
        return cast(Format, given)
    guessed = FORMATS.get(path.suffix.lower()) if path is not None else None
    if guessed is not None:
        return guessed
    if default is not None:
        return default
    fail(f"Cannot tell the format of {path} from its name.", hint="Add --format csv or --format jsonl.")


# -- reading rows ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One record of the file: its line (where it starts), its values, or why it cannot be read."""

    line: int
    values: dict[str, Any] | None = None
    error: str | None = None


def csv_rows(text: str, title_field: str, source: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames
    if not columns:
        fail(f"{source} is empty: a CSV import needs a header line naming the columns.")
    if title_field not in columns:
        fail(
            f"{source} has no column {title_field!r} for the titles; its columns are {', '.join(columns)}.",
            hint="Name the column that holds each task's title with --title-field COLUMN.",
        )
    rows: list[Row] = []
    start = reader.line_num + 1
    try:
        for record in reader:
            extra = record.pop(None, None)  # DictReader puts surplus values under None
            if extra:
                rows.append(Row(start, error=f"{len(extra)} more value(s) than the header has columns"))
            else:
                rows.append(Row(start, {key: value for key, value in record.items() if key}))
            start = reader.line_num + 1
    except csv.Error as exc:
        fail(f"{source} is not valid CSV at line {reader.line_num}: {exc}.")
    return rows


def jsonl_rows(text: str) -> list[Row]:
    rows: list[Row] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            rows.append(Row(number, error=f"not valid JSON: {exc.msg} at character {exc.pos}"))
            continue
        if not isinstance(value, dict):
            rows.append(Row(number, error=f"expected a JSON object, got {compact(value)[:40]}"))
            continue
        rows.append(Row(number, value))
    return rows


@dataclass(frozen=True, slots=True)
class RowMapping:
    """Which fields of a row become what: the title, optionally the priority, and the data (the whole row
    unless ``data_field`` names one)."""

    title_field: str
    priority_field: str | None
    data_field: str | None
    fmt: Format

    def task(self, values: dict[str, Any]) -> tuple[str, TaskFields]:
        """The title and fields of the task for a row; ``ValueError`` says what is wrong with the row."""
        title = values.get(self.title_field)
        if isinstance(title, int | float) and not isinstance(title, bool):
            title = str(title)
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"no title: {self.title_field!r} is missing or empty")
        fields: TaskFields = {"data": values}
        if self.data_field is not None:
            fields["data"] = self._data(values.get(self.data_field))
        if self.priority_field is not None:
            priority = values.get(self.priority_field)
            if priority not in (None, ""):
                fields["priority"] = cast(Any, priority)  # the server checks it and names the field
        return title, fields

    def _data(self, value: Any) -> Any:
        if self.fmt == "csv" and isinstance(value, str):
            if not value.strip():
                return None
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{self.data_field!r} is not valid JSON: {exc.msg} at character {exc.pos}") from None
        return value


# -- importing ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    line: int
    result: Literal["created", "existing", "failed"]
    task: Task | None = None
    error: str | None = None


@dataclass(slots=True)
class Tally:
    created: int = 0
    existing: int = 0
    failures: list[Outcome] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        if outcome.result == "created":
            self.created += 1
        elif outcome.result == "existing":
            self.existing += 1
        else:
            self.failures.append(outcome)

    def line(self) -> str:
        return f"created {self.created} · already there {self.existing} · failed {len(self.failures)}"


@dataclass(frozen=True, slots=True)
class ImportJob:
    client: Client
    queue: str
    mapping: RowMapping
    file_name: str
    file_hash: str
    batch: str
    stop: threading.Event

    def key(self, line: int) -> str:
        """The row's idempotency key: the same file, queue and line always make the same key."""
        scope = hashlib.sha256(f"{self.file_hash}\n{self.queue}".encode()).hexdigest()[:32]
        return f"workloom-import:{scope}:{line}"

    def run(self, row: Row) -> Outcome:
        if row.error is not None or row.values is None:
            return Outcome(row.line, "failed", error=row.error)
        if self.stop.is_set():
            return Outcome(row.line, "failed", error="not tried: the server stopped answering")
        try:
            title, fields = self.mapping.task(row.values)
        except ValueError as exc:
            return Outcome(row.line, "failed", error=str(exc))
        fields["queue"] = self.queue
        fields["metadata"] = {
            "import": {"file": self.file_name, "sha256": self.file_hash, "line": row.line, "batch": self.batch}
        }
        try:
            task = self.client.create_task(title, idempotency_key=self.key(row.line), **fields)
        except IdempotencyKeyReusedError:
            return Outcome(row.line, "existing")
        except TransportError as exc:
            self.stop.set()
            return Outcome(row.line, "failed", error=f"server unreachable ({unreachable_reason(exc)})")
        except WorkloomError as exc:
            return Outcome(row.line, "failed", error=str(exc))
        return Outcome(row.line, "created", task)


def import_tasks(
    file: Annotated[Path, typer.Argument(help="CSV (with a header line) or JSON lines file; one task per row.")],
    queue: Annotated[str, typer.Option("--queue", "-q", help="Queue to put the tasks on (created if new).")],
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl (default: from the file's extension).")
    ] = None,
    title_field: Annotated[str, typer.Option(help="The column / key holding each task's title.")] = "title",
    priority_field: Annotated[
        str | None, typer.Option(help="The column / key holding each task's priority (low … urgent).")
    ] = None,
    data_field: Annotated[
        str | None, typer.Option(help="Use this column / key as the task's data (default: the whole row).")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Requests in flight at once.")] = 8,
    json_output: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Create one task per row of a CSV or JSON lines file, with the row as the task's data.

    Safe to run again: rows imported before (same file content, same queue) are not created twice, so an
    import cut short can simply be repeated. An edited file is a new import.
    """
    try:
        content = file.read_bytes()
    except FileNotFoundError:
        fail(f"No file at {file}.")
    except OSError as exc:
        fail(f"Cannot read {file}: {exc.strerror or exc}.")
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        fail(f"{file} is not UTF-8 text (byte {exc.start}).", hint="Save it as UTF-8 and try again.")
    kind = file_format(fmt, file)
    rows = csv_rows(text, title_field, str(file)) if kind == "csv" else jsonl_rows(text)
    if not rows:
        fail(f"{file} has no rows to import.")
    tally = Tally()
    with connect(max_retries=BULK_RETRIES) as client:
        client.list_queues()  # a wrong URL or key is told once, before any row
        job = ImportJob(
            client=client,
            queue=queue,
            mapping=RowMapping(title_field, priority_field, data_field, kind),
            file_name=file.name,
            file_hash=hashlib.sha256(content).hexdigest(),
            batch=uuid.uuid4().hex[:12],
            stop=threading.Event(),
        )
        with bar(transient=False) as progress, ThreadPoolExecutor(concurrency, "workloom-import") as pool:
            progress_id = progress.add_task(f"Importing {file.name}", total=len(rows), tally=tally.line())
            try:
                for future in as_completed([pool.submit(job.run, row) for row in rows]):
                    tally.add(future.result())
                    progress.update(progress_id, advance=1, tally=tally.line())
            except KeyboardInterrupt:
                job.stop.set()  # rows not started yet are skipped; those in flight finish
                pool.shutdown(wait=True, cancel_futures=True)
                fail(
                    f"Interrupted: {tally.created} created so far.",
                    hint="Run the same command again to import the rest: rows already imported are not duplicated.",
                )
    failures = sorted(tally.failures, key=lambda outcome: outcome.line)
    if json_output:
        print_json(
            {
                "file": str(file),
                "queue": queue,
                "sha256": job.file_hash,
                "batch": job.batch,
                "rows": len(rows),
                "created": tally.created,
                "existing": tally.existing,
                "failed": [{"line": f.line, "error": f.error} for f in failures],
            }
        )
    else:
        console.print(
            Text.assemble(
                f"Imported {file.name} into {queue}: ",
                (f"{tally.created} created", "green"),
                ", ",
                (f"{tally.existing} already there", "dim" if tally.existing else ""),
                ", ",
                (f"{len(failures)} failed", "bold red" if failures else ""),
                ".",
            ),
            soft_wrap=True,
        )
        if failures:
            console.print(failure_table(failures, "CSV row at line" if kind == "csv" else "line"))
    if failures:
        fail(
            f"{len(failures)} of {len(rows)} rows were not imported.",
            hint="Running the same command again retries only these rows (the others are not duplicated). To "
            "change rows, put the corrected ones in a new file: an edited file is imported as a new one.",
        )


def failure_table(failures: list[Outcome], line_label: str) -> Table:
    table = Table(line_label, "why it failed", title="Failed rows")
    for outcome in failures[:MAX_FAILURES_SHOWN]:
        table.add_row(str(outcome.line), Text(outcome.error or "", style="red"))
    if len(failures) > MAX_FAILURES_SHOWN:
        table.add_row("…", f"and {len(failures) - MAX_FAILURES_SHOWN} more (--json lists them all)")
    return table


def bar(*, transient: bool) -> Progress:
    """A progress bar on stderr, so that what goes to stdout stays clean for scripts."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tally]}", style="dim"),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
    )


# -- exporting ------------------------------------------------------------------------------------------


def export_tasks(
    queue: Annotated[str, typer.Option("--queue", "-q", help="Queue to export, or several as a,b.")],
    status: Annotated[str | None, typer.Option("--status", "-s", help="Only this status, or several as a,b.")] = None,
    fmt: Annotated[
        str | None, typer.Option("--format", help="jsonl or csv (default: from -o's extension, else jsonl).")
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Write a queue's tasks, with their data and output, as JSON lines or CSV (oldest first).

    JSON lines hold each task as the API returns it; CSV has one column per field, with data, output and
    metadata as JSON. 'workloom import FILE --queue Q --data-field data' reads an export back.
    """
    kind = file_format(fmt, output, default="jsonl")
    filters = cast(TaskFilters, {**_filter("queue", queue), **_filter("status", status), "sort": "created_at"})
    with connect() as client:
        total = client.list_tasks(limit=1, count=True, **filters).total
        try:
            sink: IO[str] = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
        except OSError as exc:
            fail(f"Cannot write {output}: {exc.strerror or exc}.")
        try:
            written = write_tasks(sink, kind, client.iter_tasks(page_size=200, **filters), total, output)
        finally:
            if output:
                sink.close()
    where = f"to {output}" if output else ""
    note(f"Exported {written} task{'s' if written != 1 else ''} of {queue} {where}".rstrip() + ".")


def write_tasks(sink: IO[str], kind: Format, tasks: Iterator[Task], total: int | None, output: Path | None) -> int:
    writer = csv.DictWriter(sink, EXPORT_COLUMNS, extrasaction="ignore") if kind == "csv" else None
    if writer is not None:
        writer.writeheader()
    written = 0
    with bar(transient=output is None) as progress:
        progress_id = progress.add_task(f"Exporting to {output or 'stdout'}", total=total, tally="")
        for task in tasks:
            data = task.model_dump(mode="json")
            if writer is not None:
                writer.writerow(csv_record(data))
            else:
                sink.write(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n")
            written += 1
            progress.update(progress_id, advance=1)
    return written


def csv_record(task: dict[str, Any]) -> dict[str, str]:
    record: dict[str, str] = {}
    for column in EXPORT_COLUMNS:
        value = task.get(column)
        if value is None:
            record[column] = ""
        elif column == "owner" and isinstance(value, dict):
            record[column] = f"{value.get('kind')}:{value.get('ref')}"
        elif isinstance(value, dict | list | bool):
            record[column] = json.dumps(value, ensure_ascii=False)
        else:
            record[column] = str(value)
    return record


def _filter(name: str, value: str | None) -> dict[str, Any]:
    if value is None:
        return {}
    parts = [part.strip() for part in value.split(",") if part.strip()]
    return {f"{name}__in": parts} if len(parts) > 1 else {name: parts[0]} if parts else {}
