"""Where a task's writes go: the WAL that creating tasks and claiming + completing them writes, by table
or index and by kind of record, read back from PostgreSQL's log with ``pg_waldump``.

    python -m bench.walmix [--database-url URL] [--tasks 1000] [--json PATH] [--schema-change SQL …]

A throughput figure moves with the machine; what a task writes does not. This says, for each phase, how
many bytes of WAL a task costs and which relation and which kind of record they are (a row inserted, a
row updated, a row locked, an index entry, a page split, a full-page image after a checkpoint), so a
change to the schema or to the statements can be judged by what it saves, exactly, on any machine.

Each phase starts from a ``CHECKPOINT`` (as every measurement of ``python -m bench`` does), so the first
change to each page after it carries that page's image, as it would after any checkpoint in production.
Needs a PostgreSQL server on this machine, its ``pg_waldump`` and read access to its ``pg_wal`` directory
(run as root or as the ``postgres`` user). By default a new database on the local test server, dropped
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
import json
import re
import secrets
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.lifecycle import bench_database
from bench.peers.costs import WAL_POSITION, wal_bytes
from bench.suite import DEFAULT_POSTGRES, _pg, workloom_server

QUEUE = "walmix"
CHUNK = 1000  # tasks per batch create, the API's most
CLAIM = 100  # runs per claim, as the drain scenario's workers
WORKER = {"kind": "automation", "ref": "walmix"}

# "rmgr: Heap  len (rec/tot):  54/  54, tx: 1, lsn: 0/0, prev 0/0, desc: LOCK off 3: …, blkref #0: rel 1663/5/16402 …"
_RECORD = re.compile(r"^rmgr: (\w+)\s+len \(rec/tot\):\s*\d+/\s*(\d+),.*?desc: (\S+)")
_RELATION = re.compile(r"blkref #0: rel \d+/\d+/(\d+)")


@dataclass
class Mix:
    """WAL bytes and records of one stretch of the log, by (relation, kind of record)."""

    bytes: Counter[tuple[str, str]] = field(default_factory=Counter)
    records: Counter[tuple[str, str]] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.bytes.values())


def parse(lines: Iterable[str], relations: dict[str, str]) -> Mix:
    """``pg_waldump``'s records as a ``Mix``: each record's whole length (with any page image it carries)
    under the relation of its first block (by name where ``relations`` knows the file node, ``-`` for a
    record of no relation, such as a commit) and its kind (``Heap/UPDATE``, ``Btree/INSERT_LEAF``)."""
    mix = Mix()
    for line in lines:
        record = _RECORD.match(line)
        if record is None:
            continue
        rmgr, length, desc = record.groups()
        block = _RELATION.search(line)
        relation = relations.get(block.group(1), block.group(1)) if block else "-"
        key = (relation, f"{rmgr}/{desc}")
        mix.bytes[key] += int(length)
        mix.records[key] += 1
    return mix


def waldump() -> str:
    found = shutil.which("pg_waldump") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_waldump"))), None)
    if found is None:
        raise SystemExit("pg_waldump was not found (PATH, /usr/lib/postgresql/*/bin)")
    return found


def _query(url: str, sql: str) -> Any:
    return asyncio.run(_pg(url, sql))


def _relations(url: str) -> dict[str, str]:
    """File node → name of every table and index of the database."""
    import asyncpg

    async def read() -> dict[str, str]:
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT pg_relation_filenode(oid)::text AS node, relname FROM pg_class "
                "WHERE relkind IN ('r', 'i', 'S') AND pg_relation_filenode(oid) IS NOT NULL"
            )
        finally:
            await conn.close()
        return {row["node"]: row["relname"] for row in rows}

    return asyncio.run(read())


@contextlib.contextmanager
def wal_kept(url: str) -> Iterator[None]:
    """The WAL written from now kept until the block ends: a physical replication slot reserving it, dropped
    after. Else a checkpoint (ours between the phases, or the server's own) may recycle a phase's segments
    before they are read."""
    slot = f"walmix_{secrets.token_hex(4)}"
    _query(url, f"SELECT pg_create_physical_replication_slot('{slot}', true)")
    try:
        yield
    finally:
        _query(url, f"SELECT pg_drop_replication_slot('{slot}')")


def migrated(url: str, changes: Iterable[str]) -> None:
    """The schema made (as the server would at its start), then ``changes`` run on it: a what-if, such as an
    index dropped or a table's fillfactor, judged by the WAL it saves."""
    changes = list(changes)
    if not changes:
        return
    from workloom.store.database import connect
    from workloom.store.migrate import upgrade

    async def prepare() -> None:
        db = connect(url)
        try:
            await upgrade(db)
        finally:
            await db.dispose()

    asyncio.run(prepare())
    asyncio.run(_pg(url, *changes))


def measure(url: str, tasks: int, changes: Iterable[str] = ()) -> dict[str, Mix]:
    """The WAL of each phase: ``create`` (batches of ``CHUNK``), ``claim + complete`` (claims of ``CLAIM``,
    each batch's completion claiming the next); ``changes``: statements run on the schema first."""
    migrated(url, changes)
    token = "wl_walmix_" + secrets.token_urlsafe(16)
    pg_wal = Path(_query(url, "SELECT current_setting('data_directory')")) / "pg_wal"
    relations: dict[str, str] = {}
    mixes: dict[str, Mix] = {}

    def read(name: str, start: str) -> None:
        end = _query(url, WAL_POSITION)
        if not relations:
            relations.update(_relations(url))
        dumped = subprocess.run(
            [waldump(), "-p", str(pg_wal), "-s", start, "-e", end], capture_output=True, text=True, check=False
        )
        mix = parse(dumped.stdout.splitlines(), relations)
        if wal_bytes(end) > wal_bytes(start) and not mix.records:
            raise SystemExit(f"pg_waldump read nothing from {pg_wal}: {dumped.stderr.strip()[-500:]}")
        mixes[name] = mix

    def began() -> str:
        _query(url, "CHECKPOINT")
        position: str = _query(url, WAL_POSITION)
        return position

    with workloom_server(url, token) as server, wal_kept(url):
        http = httpx.Client(base_url=server.base, headers={"Authorization": f"Bearer {token}"}, timeout=120)
        http.post("/v1/queues", json={"name": QUEUE}).raise_for_status()

        start = began()
        for first in range(0, tasks, CHUNK):
            numbers = range(first, min(tasks, first + CHUNK))
            batch = [{"title": "walmix", "queue": QUEUE, "data": {"n": n}} for n in numbers]
            http.post("/v1/tasks/batch", json={"tasks": batch}).raise_for_status()
        read("create", start)

        start = began()
        claimed = http.post(f"/v1/queues/{QUEUE}/claim", json={"worker": WORKER, "limit": CLAIM})
        claims = claimed.raise_for_status().json()["claims"]
        done = 0
        while claims:
            runs = [{"run_id": c["run"]["id"], "claim_token": c["claim_token"]} for c in claims]
            body = {"runs": runs, "claim_next": {"queue": QUEUE, "limit": CLAIM, "worker": WORKER}}
            done += len(claims)
            claims = http.post("/v1/runs/complete", json=body).raise_for_status().json()["claims"]
        read("claim + complete", start)
        http.close()
    if done != tasks:
        raise SystemExit(f"completed {done} of {tasks} tasks")
    return mixes


def report(mixes: dict[str, Mix], tasks: int, *, top: int = 25) -> dict[str, Any]:
    """Per phase: bytes a task in all, and the largest parts (bytes and records a task, share)."""
    out: dict[str, Any] = {}
    for name, mix in mixes.items():
        total = mix.total
        parts = [
            {
                "relation": relation,
                "record": kind,
                "bytes_per_task": round(size / tasks, 1),
                "records_per_task": round(mix.records[(relation, kind)] / tasks, 2),
                "share_pct": round(100 * size / total, 1) if total else 0.0,
            }
            for (relation, kind), size in mix.bytes.most_common(top)
        ]
        out[name] = {"bytes_per_task": round(total / tasks, 1), "parts": parts}
    return out


def print_report(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(Console().width, 110))  # the relations' names whole
    for name, phase in summary.items():
        table = Table(title=f"{name}: {phase['bytes_per_task']:,.0f} bytes of WAL a task")
        for column in ("relation", "record", "bytes/task", "records/task", "share"):
            table.add_column(column, justify="left" if column in ("relation", "record") else "right")
        for part in phase["parts"]:
            table.add_row(
                part["relation"],
                part["record"],
                f"{part['bytes_per_task']:,.0f}",
                f"{part['records_per_task']:.2f}",
                f"{part['share_pct']:.1f} %",
            )
        console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.walmix", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", help=f"a PostgreSQL server (a new database is made on it); {DEFAULT_POSTGRES}"
    )
    parser.add_argument("--tasks", type=int, default=1000, help="tasks created, then claimed and completed")
    parser.add_argument("--json", type=Path, help="also write the report here")
    parser.add_argument(
        "--schema-change",
        action="append",
        default=[],
        metavar="SQL",
        help="a statement run on the new schema before the server starts (repeatable): a what-if",
    )
    args = parser.parse_args(argv)
    if args.tasks < 1:
        parser.error("--tasks must be at least 1")
    with bench_database(args.database_url or DEFAULT_POSTGRES) as url:
        summary = report(measure(url, args.tasks, args.schema_change), args.tasks)
    print_report(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
