"""AGH's vocabulary mapped onto Workloom's, as data tables.

Every AGH word the dialect speaks is looked up here; the routes never compare a status themselves.
"""

from __future__ import annotations

from typing import Literal, get_args

from workloom.domain.task_states import TASK_STATUSES

AghTaskStatus = Literal["draft", "pending", "blocked", "ready", "in_progress", "completed", "failed", "canceled"]
AghRunStatus = Literal["queued", "claimed", "starting", "running", "completed", "failed", "canceled"]
AghPriority = Literal["low", "medium", "high", "urgent"]
AghScope = Literal["global", "workspace"]
AghOwnerKind = Literal["human", "agent_session", "automation", "extension", "network_peer", "pool"]
AghOriginKind = Literal["cli", "web", "uds", "http", "automation", "extension", "network", "agent_session", "daemon"]
AghApprovalState = Literal["not_required", "pending", "approved", "rejected"]
AghApprovalPolicy = Literal["none", "required"]
AghLane = Literal["my_work", "approvals", "failed_runs", "blocked", "archived"]

AGH_TASK_STATUSES: tuple[str, ...] = get_args(AghTaskStatus)
AGH_RUN_STATUSES: tuple[str, ...] = get_args(AghRunStatus)

# Workloom's canonical task status → the AGH status a client sees.
#   scheduled → pending:     waiting for its retry timer; it becomes ready by itself, nobody acts.
#   on_hold → in_progress:   a paused piece of started work, still owned; AGH's "blocked" means "cannot
#                            start yet" (dependencies, approval), and its dashboard counts it that way.
#   skipped → canceled:      will not be done, by decision rather than by failure.
TASK_STATUS: dict[str, AghTaskStatus] = {
    "draft": "draft",
    "blocked": "blocked",
    "scheduled": "pending",
    "ready": "ready",
    "in_progress": "in_progress",
    "on_hold": "in_progress",
    "completed": "completed",
    "failed": "failed",
    "skipped": "canceled",
    "canceled": "canceled",
}
assert set(TASK_STATUS) == set(TASK_STATUSES), "every canonical task status needs an AGH name"

# An AGH status filter → the canonical statuses it covers (the table above, read backwards).
CANONICAL_TASK_STATUSES: dict[str, tuple[str, ...]] = {
    agh: tuple(canonical for canonical, shown in TASK_STATUS.items() if shown == agh) for agh in AGH_TASK_STATUSES
}

# Run statuses are the same words in both vocabularies.
RUN_STATUS: dict[str, AghRunStatus] = {
    "queued": "queued",
    "claimed": "claimed",
    "starting": "starting",
    "running": "running",
    "completed": "completed",
    "failed": "failed",
    "canceled": "canceled",
}
RUN_STATUS_FROM_AGH: dict[str, str] = {agh: canonical for canonical, agh in RUN_STATUS.items()}

# A dependency in Workloom always blocks its dependent until it completes.
DEPENDENCY_KIND = "blocks"


# A task created without a scope is a workspace task (every Workloom task lives in its workspace;
# "global" is kept as the label the client gave).
DEFAULT_SCOPE: AghScope = "workspace"

# A task created through AGH always runs somewhere (AGH tasks are agent work): without a
# ``network_channel`` it is put in this queue.
DEFAULT_CHANNEL = "default"
