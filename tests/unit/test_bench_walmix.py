"""``python -m bench.walmix`` reads ``pg_waldump``'s records into bytes and records by relation and kind;
these are lines as PostgreSQL 15's ``pg_waldump`` prints them."""

from __future__ import annotations

from bench.walmix import parse, report

LINES = [
    "rmgr: Heap        len (rec/tot):     54/    54, tx:     176528, lsn: 1/3DBB0F28, prev 1/3DBB0EF0, "
    "desc: LOCK off 3: xid 176528: flags 0x00 LOCK_ONLY EXCL_LOCK KEYS_UPDATED , "
    "blkref #0: rel 1663/16384/16402 blk 12",
    "rmgr: Heap        len (rec/tot):    250/  8430, tx:     176528, lsn: 1/3DBB1000, prev 1/3DBB0F28, "
    "desc: UPDATE off 3 xmax 176528 flags 0x00 ; new off 9 xmax 0, blkref #0: rel 1663/16384/16402 blk 40 FPW, "
    "blkref #1: rel 1663/16384/16402 blk 12",
    "rmgr: Heap        len (rec/tot):    246/   246, tx:     176528, lsn: 1/3DBB3000, prev 1/3DBB1000, "
    "desc: UPDATE off 4 xmax 176528 flags 0x00 ; new off 10 xmax 0, blkref #0: rel 1663/16384/16402 blk 40",
    "rmgr: Btree       len (rec/tot):     96/    96, tx:     176528, lsn: 1/3DBB3100, prev 1/3DBB3000, "
    "desc: INSERT_LEAF off 5, blkref #0: rel 1663/16384/16410 blk 3",
    "rmgr: Btree       len (rec/tot):     64/    64, tx:     176528, lsn: 1/3DBB3160, prev 1/3DBB3100, "
    "desc: INSERT_LEAF off 6, blkref #0: rel 1663/16384/99999 blk 1",
    "rmgr: Transaction len (rec/tot):     34/    34, tx:     176528, lsn: 1/3DBB31A0, prev 1/3DBB3160, "
    "desc: COMMIT 2026-12-07 19:48:45.299 UTC",
    "pg_waldump: error: error in WAL record at 1/3DBB31C8: invalid record length at 1/3DBB31F0",
    "",
]
RELATIONS = {"16402": "runs", "16410": "pk_runs"}


def test_records_are_counted_whole_under_their_first_blocks_relation_and_kind() -> None:
    mix = parse(LINES, RELATIONS)

    assert mix.bytes == {
        ("runs", "Heap/LOCK"): 54,
        ("runs", "Heap/UPDATE"): 8430 + 246,  # a record's page image is part of what it costs
        ("pk_runs", "Btree/INSERT_LEAF"): 96,
        ("99999", "Btree/INSERT_LEAF"): 64,  # a file node the catalog did not name: shown as it is
        ("-", "Transaction/COMMIT"): 34,
    }
    assert mix.records[("runs", "Heap/UPDATE")] == 2
    assert mix.total == 54 + 8430 + 246 + 96 + 64 + 34


def test_the_report_gives_each_part_per_task_largest_first() -> None:
    summary = report({"claim + complete": parse(LINES, RELATIONS)}, tasks=2, top=2)

    phase = summary["claim + complete"]
    assert phase["bytes_per_task"] == (54 + 8430 + 246 + 96 + 64 + 34) / 2
    assert phase["parts"] == [
        {
            "relation": "runs",
            "record": "Heap/UPDATE",
            "bytes_per_task": 4338.0,
            "records_per_task": 1.0,
            "share_pct": 97.2,
        },
        {
            "relation": "pk_runs",
            "record": "Btree/INSERT_LEAF",
            "bytes_per_task": 48.0,
            "records_per_task": 0.5,
            "share_pct": 1.1,
        },
    ]
