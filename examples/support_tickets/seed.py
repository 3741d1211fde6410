"""Queue a few support tickets: each becomes a task in ``support`` (for the drafting agent) and a task in
``filing`` that depends on it (for the filing automation), so a reply is filed only once it is drafted.

    python seed.py                  # the five sample tickets
    python seed.py --tickets 20     # more (the samples, repeated)

Reads WORKLOOM_URL (default http://127.0.0.1:8000) and WORKLOOM_API_KEY.
"""

from __future__ import annotations

import argparse
import contextlib
import uuid
from dataclasses import dataclass

from tickets import FILING_QUEUE, SAMPLE_TICKETS, SUPPORT_QUEUE

from workloom.client import Client, ConflictError


@dataclass(frozen=True)
class Seeded:
    ticket: str  # the ticket number, e.g. T-1001
    draft_task_id: str
    filing_task_id: str


def ensure_queues(wl: Client) -> None:
    for name, description, lease in (
        (SUPPORT_QUEUE, "Support tickets waiting for a drafted reply", 120),
        (FILING_QUEUE, "Drafted replies waiting to be filed", 60),
    ):
        with contextlib.suppress(ConflictError):  # already there
            wl.create_queue(name, description=description, lease_seconds=lease, max_attempts=3)


def seed(wl: Client, count: int = len(SAMPLE_TICKETS), batch: str | None = None) -> list[Seeded]:
    """Create ``count`` tickets (and their filing tasks) tagged with ``batch``; returns what was created."""
    batch = batch or uuid.uuid4().hex[:8]
    ensure_queues(wl)
    seeded = []
    for i in range(count):
        sample = SAMPLE_TICKETS[i % len(SAMPLE_TICKETS)]
        number = f"T-{1001 + i}"
        ticket = {**sample, "ticket": number, "batch": batch}
        draft = wl.create_task(
            f"Draft a reply to {number}: {sample['subject']}",
            queue=SUPPORT_QUEUE,
            data=ticket,
            priority="high" if "refund" in sample["body"].lower() else "medium",
            metadata={"demo": "support_tickets", "batch": batch},
        )
        filing = wl.create_task(
            f"File the reply to {number}",
            queue=FILING_QUEUE,
            data={"ticket": number, "draft_task_id": draft.id, "batch": batch},
            depends_on=[draft.id],  # blocked until the draft is completed
            metadata={"demo": "support_tickets", "batch": batch},
        )
        seeded.append(Seeded(number, draft.id, filing.id))
    return seeded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tickets", type=int, default=len(SAMPLE_TICKETS), help="how many tickets to queue")
    parser.add_argument("--batch", help="a tag for this batch (default: random)")
    args = parser.parse_args()
    with Client() as wl:
        seeded = seed(wl, args.tickets, args.batch)
        for item in seeded:
            draft, filing = wl.get_task(item.draft_task_id), wl.get_task(item.filing_task_id)
            print(f"{item.ticket}: {draft.identifier} ({draft.status}) -> {filing.identifier} ({filing.status})")
    print(f"queued {len(seeded)} tickets; now run the workers (see README.md)")


if __name__ == "__main__":
    main()
