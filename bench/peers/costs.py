"""What a timed part cost, per job: PostgreSQL's CPU, the WAL it wrote, and the driving process's own CPU.

Shared by the bench (for Workloom and the bare endpoint) and the peer scripts (run by the peers
virtualenv's python, which imports this file from beside them), so every side of a comparison is counted
the same way. Without dependencies: PostgreSQL's CPU is read from ``/proc`` (every process named
``postgres``: on the bench's machine its database is the only busy one), and the WAL position is asked of
the database by the caller, through whichever driver it has (``WAL_POSITION``).

WAL bytes a job are the write amplification a throughput figure hides: every row version, index entry
and commit record a job costs the database, in one number that neither the machine's speed nor its
load moves (a checkpoint's full-page images aside; the bench checkpoints before each measurement).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

WAL_POSITION = "SELECT pg_current_wal_insert_lsn()::text"


def wal_bytes(position: str) -> int:
    """A WAL position as PostgreSQL prints it (``16/B374D848``) as a byte offset."""
    high, _, low = position.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def postgres_cpu_seconds(proc: str = "/proc") -> float:
    """User and system CPU of every process named ``postgres`` (server, backends, background workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    with os.scandir(proc) as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                with open(os.path.join(entry.path, "stat"), "rb") as stat_file:
                    stat = stat_file.read()
            except OSError:  # ended since it was listed
                continue
            name_ends = stat.rfind(b")")
            if not stat[stat.find(b"(") + 1 : name_ends].startswith(b"postgres"):
                continue
            fields = stat[name_ends + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime and stime, the 14th and 15th fields of stat(5)
    return total / ticks


@dataclass(frozen=True)
class Window:
    """Opened before a timed part and closed after it, each time with the WAL position read just then."""

    wal: int
    postgres: float
    client: float

    @classmethod
    def open(cls, position: str) -> Window:
        return cls(wal_bytes(position), postgres_cpu_seconds(), time.process_time())

    def close(self, position: str, jobs: int) -> dict[str, float]:
        """Per job: ``cpu_us_postgres``, ``cpu_us_client`` (this process) and ``wal_bytes``."""
        per = max(jobs, 1)
        return {
            "cpu_us_postgres": (postgres_cpu_seconds() - self.postgres) / per * 1e6,
            "cpu_us_client": (time.process_time() - self.client) / per * 1e6,
            "wal_bytes": (wal_bytes(position) - self.wal) / per,
        }
