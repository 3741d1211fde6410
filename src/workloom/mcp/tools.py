"""The tools an agent sees. Their descriptions are written for the model that reads them.

Every tool talks to Workloom through the SDK with the MCP server's API key; a failure comes back as an MCP
tool error (``isError``) whose text is the server's problem (title, status, detail, field errors) plus what
to do about it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal, TypeVar

import anyio
from mcp.server.connection import Connection
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from mcp.types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from workloom.client import (
    AuthenticationError,
    Event,
    NotFoundError,
    PermissionDeniedError,
    StaleClaimError,
    Task,
    TaskFields,
    TransportError,
    WorkloomError,
)
from workloom.mcp.desk import FINAL_TASK_STATUSES, Desk, DeskError, LeaseLost
from workloom.mcp.views import (
    ClaimOutcome,
    HumanAnswer,
    QueueInfo,
    QueueList,
    RunInfo,
    RunOutcome,
    TaskDetails,
    TaskInput,
    TimelineEntry,
    actor_label,
)

log = logging.getLogger("workloom.mcp")
F = TypeVar("F", bound=Callable[..., Any])

HUMAN_QUEUE = "human-input"
DEFAULT_HUMAN_WAIT = 45.0
MAX_HUMAN_WAIT = 3600.0
MAX_CLAIM_WAIT = 30.0  # the server's long-poll limit
TIMELINE_PAGE = 500
TIMELINE_MAX = 5000
COUNTED_QUEUES = 50
TITLE_LENGTH = 200
CLEANUP_KEY = "workloom.mcp.release_on_close"

# -- arguments ------------------------------------------------------------------------------------------

QueueName = Annotated[str, Field(min_length=1, max_length=200, description="The queue's name, from list_queues.")]
RunId = Annotated[str, Field(min_length=1, description="The run_id that claim_next_task returned.")]
TaskId = Annotated[str, Field(min_length=1, description="A task id, or its identifier such as WL-42.")]
LeaseSeconds = Annotated[
    int | None,
    Field(
        ge=2,
        le=86_400,
        description="How long the claim lasts before it must be renewed; default: the queue's lease. The MCP "
        "server renews it for you in the background, so you rarely need this.",
    ),
]
ClaimWait = Annotated[
    float,
    Field(ge=0, le=MAX_CLAIM_WAIT, description="Seconds to wait for a task if none is ready now (0 to 30)."),
]
Tokens = Annotated[
    int | None, Field(ge=0, description="Tokens used on this run so far (input and output), a running total.")
]
Cost = Annotated[float | None, Field(ge=0, description="What this run has cost so far (e.g. in USD), a running total.")]
HumanWait = Annotated[
    float,
    Field(
        ge=0,
        le=MAX_HUMAN_WAIT,
        description="Seconds to wait for the answer before returning 'waiting' (then use check_human_answer). "
        "Keep it under your client's tool-call timeout.",
    ),
]


# -- errors ---------------------------------------------------------------------------------------------


def explain(exc: WorkloomError) -> str:
    """The server's problem, then what an agent should do about it."""
    text = str(exc)
    if exc.code:
        text = f"[{exc.code}] {text}"
    if isinstance(exc, StaleClaimError):
        return (
            f"{text}. The lease on this run is gone (it ran out, or the run was released or canceled), so "
            "this call was not accepted. Stop working on the task and claim another."
        )
    if isinstance(exc, NotFoundError):
        return f"{text}. Check the name or id: list_queues shows the queues; ids come from earlier tool answers."
    if isinstance(exc, AuthenticationError):
        return f"{text}. The MCP server's WORKLOOM_API_KEY is missing or wrong; ask its operator to fix it."
    if isinstance(exc, PermissionDeniedError):
        return f"{text}. The MCP server's API key may not do this."
    if isinstance(exc, TransportError):
        return f"{text}. Workloom could not be reached; try again in a little while."
    return text


@contextmanager
def problems() -> Iterator[None]:
    """Turn the SDK's and the desk's errors into MCP tool errors the model can read."""
    try:
        yield
    except LeaseLost as exc:
        raise ToolError(f"{exc}. Stop working on that task; claim another.") from exc
    except DeskError as exc:
        raise ToolError(str(exc)) from exc
    except WorkloomError as exc:
        raise ToolError(explain(exc)) from exc


def session_of(ctx: Context) -> Connection | None:
    """The MCP session a tool call came on, so runs can be tied to the session that claimed them; ``None``
    when there is none to tie them to, and then runs belong to the whole process until it stops.

    A handshake-era connection (stdio, or one streamable-HTTP session) lives as long as the session. The
    2026-07-28 protocol has no sessions: each request arrives on a connection of its own that ends with it,
    so it cannot own a run. The SDK does not expose the connection on the tool context; it is read from the
    request's ``ServerSession``.
    """
    connection = getattr(ctx.request_context.session, "_connection", None)
    if not isinstance(connection, Connection) or connection.protocol_version in MODERN_PROTOCOL_VERSIONS:
        return None
    return connection


def usage_of(tokens: int | None, cost: float | None) -> dict[str, Any] | None:
    """The run's usage as the worker runtime reports it too: ``{"tokens": ..., "cost": ...}`` totals."""
    usage = {k: v for k, v in {"tokens": tokens, "cost": cost}.items() if v is not None}
    return usage or None


def title_of(question: str) -> str:
    line = " ".join(question.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1] + "…"


# -- the tools ------------------------------------------------------------------------------------------


def register(server: MCPServer[Any], desk: Desk) -> None:
    """Add Workloom's tools to ``server``; they act through ``desk``."""

    def tool(title: str, **hints: bool) -> Callable[[F], F]:
        """Register a tool; its docstring (dedented) is the description the model reads."""

        def decorate(fn: F) -> F:
            annotations = ToolAnnotations(title=title, **hints)
            server.add_tool(fn, title=title, description=inspect.cleandoc(fn.__doc__ or ""), annotations=annotations)
            return fn

        return decorate

    def watch(connection: Connection | None) -> None:
        """Release what a session holds when it ends (registered once per session)."""
        if connection is None or connection.state.get(CLEANUP_KEY):
            return
        connection.state[CLEANUP_KEY] = True
        connection.exit_stack.push_async_callback(desk.release_owned, connection)

    @tool("List queues", read_only_hint=True, open_world_hint=False)
    async def list_queues() -> QueueList:
        """List the work queues you can take tasks from, with how many tasks are ready in each.

        Start here: pick a queue with ready tasks and call claim_next_task with its name.
        """
        with problems():
            queues = await desk.client.list_queues()
            ready: dict[str, int | None] = {}

            async def count(name: str) -> None:
                try:
                    page = await desk.client.list_tasks(queue=name, status="ready", limit=1, count=True)
                except WorkloomError:
                    ready[name] = None
                else:
                    ready[name] = page.total

            async with anyio.create_task_group() as group:
                for queue in queues[:COUNTED_QUEUES]:
                    group.start_soon(count, queue.name)
        return QueueList(queues=[QueueInfo.of(q, ready.get(q.name)) for q in queues])

    @tool("Claim the next task", destructive_hint=False)
    async def claim_next_task(
        ctx: Context, queue: QueueName, lease_seconds: LeaseSeconds = None, wait_seconds: ClaimWait = 0
    ) -> ClaimOutcome:
        """Take the next ready task from a queue so that you, and nobody else, work on it.

        Returns the task (title, description and its input in `data`) and a `run_id`: your claim on this
        attempt. Pass the run_id to report_progress while you work, then finish with exactly one of
        complete_task (done, with your result), fail_task (could not do it) or release_task (give it back
        untouched). The claim is kept alive automatically while this MCP session lasts, so take the time you
        need. If no task is ready, `claimed` is false: try later or pass wait_seconds to wait for one.
        """
        connection = session_of(ctx)
        watch(connection)
        with problems():
            claimed = await desk.claim(queue, owner=connection, lease_seconds=lease_seconds, wait_seconds=wait_seconds)
        if claimed is None:
            waited = f" after waiting {wait_seconds:g}s" if wait_seconds else ""
            return ClaimOutcome(
                claimed=False,
                message=f"No task is ready in queue {queue!r}{waited}. Try again later, pass wait_seconds (up to "
                f"{MAX_CLAIM_WAIT:g}) to wait for one, or call list_queues to find a queue with ready tasks.",
            )
        claim, holding = claimed
        return ClaimOutcome(
            claimed=True,
            message=f"You hold task {claim.task.identifier or claim.task.id} (run {holding.run_id}, attempt "
            f"{claim.run.attempt}). Do the work described, then call complete_task, fail_task or release_task "
            "with this run_id.",
            run_id=holding.run_id,
            attempt=claim.run.attempt,
            lease_until=holding.lease_until,
            heartbeat_every_seconds=holding.heartbeat_every,
            task=TaskInput.of(claim.task),
        )

    @tool("Read a task", read_only_hint=True, open_world_hint=False)
    async def get_task(
        ctx: Context,
        task_id: TaskId,
        timeline_limit: Annotated[int, Field(ge=0, le=1000, description="At most this many latest events.")] = 50,
    ) -> TaskDetails:
        """Read a task: its input (title, description, data), status, output or error, every attempt at it,
        and its timeline of events (who did what, when). Use it to re-read the task you hold, or to look at
        one another task refers to."""
        connection = session_of(ctx)
        with problems():
            task = await desk.client.get_task(task_id)
            runs = await desk.client.list_runs(task.id)
            events = await timeline(task.id)
        held = {h.run_id for h in desk.held if h.owner is None or h.owner is connection}
        shown = events[len(events) - timeline_limit :] if timeline_limit else []
        return TaskDetails(
            task=TaskInput.of(task),
            output=task.output,
            error=task.error,
            created_by=actor_label(task.created_by),
            created_at=task.created_at,
            closed_at=task.closed_at,
            runs=[RunInfo.of(run, run.id in held) for run in runs],
            timeline=[TimelineEntry.of(e) for e in shown],
            earlier_events_omitted=len(events) - len(shown),
        )

    async def timeline(task_id: str) -> list[Event]:
        events: list[Event] = []
        after = 0
        while len(events) < TIMELINE_MAX:
            page = await desk.client.get_timeline(task_id, after_sequence=after, limit=TIMELINE_PAGE)
            events.extend(page)
            if len(page) < TIMELINE_PAGE or page[-1].task_sequence is None:
                break
            after = page[-1].task_sequence
        return events

    @tool("Renew a claim", idempotent_hint=True, open_world_hint=False)
    async def heartbeat(
        ctx: Context,
        run_id: RunId,
        progress: Annotated[Any, Field(description="Optional progress to record: any JSON value.")] = None,
    ) -> RunOutcome:
        """Renew the lease on a run you hold, now. Rarely needed: the MCP server already renews it in the
        background while this session lasts. Prefer report_progress to tell people how the work goes."""
        with problems():
            holding = desk.holding(run_id, session_of(ctx))
            run = await desk.heartbeat(holding, progress=progress)
        return RunOutcome.of(run, f"The lease now lasts until {run.lease_until:%Y-%m-%d %H:%M:%S} UTC.")

    @tool("Report progress", open_world_hint=False)
    async def report_progress(
        ctx: Context,
        run_id: RunId,
        message: Annotated[str | None, Field(max_length=2000, description="What you are doing now.")] = None,
        percent: Annotated[float | None, Field(ge=0, le=100, description="How far along you are, 0 to 100.")] = None,
        tokens: Tokens = None,
        cost: Cost = None,
    ) -> RunOutcome:
        """Tell the people watching how the work on a run you hold is going: a short message and/or a
        percentage, plus what the work has used so far (tokens, cost: running totals, not increments).
        It shows in the task's timeline. It also renews the lease."""
        progress = {k: v for k, v in {"message": message, "percent": percent}.items() if v is not None} or None
        usage = usage_of(tokens, cost)
        if progress is None and usage is None:
            raise ToolError("Give a message, a percent, or usage (tokens, cost).")
        with problems():
            holding = desk.holding(run_id, session_of(ctx))
            run = await desk.heartbeat(holding, progress=progress, usage=usage)
        return RunOutcome.of(run, "Progress recorded.")

    @tool("Complete a task", destructive_hint=False, open_world_hint=False)
    async def complete_task(
        ctx: Context,
        run_id: RunId,
        result: Annotated[
            Any,
            Field(
                description="Your result: any JSON value (an object with named fields is best). It becomes the "
                "task's output for whoever reads it next."
            ),
        ],
        tokens: Tokens = None,
        cost: Cost = None,
    ) -> RunOutcome:
        """Finish a task you hold successfully, with your result. This ends your claim: do not use the
        run_id again. Optionally record the run's total usage (tokens, cost)."""
        with problems():
            holding = desk.holding(run_id, session_of(ctx))
            run = await desk.complete(holding, result, usage_of(tokens, cost))
        return RunOutcome.of(run, "The task is completed with your result. Claim the next one when ready.")

    @tool("Fail a task", destructive_hint=False, open_world_hint=False)
    async def fail_task(
        ctx: Context,
        run_id: RunId,
        error: Annotated[str, Field(min_length=1, max_length=20_000, description="What went wrong, for people.")],
        retryable: Annotated[
            bool,
            Field(
                description="true if another attempt could succeed (a timeout, a missing resource that may appear); "
                "false if the task itself cannot be done as given, so it fails for good."
            ),
        ] = True,
    ) -> RunOutcome:
        """Report that you could not do a task you hold. With retryable=true the task is tried again later
        (while it has attempts left); with retryable=false it fails for good. This ends your claim."""
        with problems():
            holding = desk.holding(run_id, session_of(ctx))
            run = await desk.fail(holding, error, retryable)
        then = "It will be retried if attempts remain." if retryable else "It will not be retried."
        return RunOutcome.of(run, f"The attempt is recorded as failed. {then}")

    @tool("Give a task back", destructive_hint=False, open_world_hint=False)
    async def release_task(
        ctx: Context,
        run_id: RunId,
        reason: Annotated[str | None, Field(max_length=2000, description="Why you give it back.")] = None,
    ) -> RunOutcome:
        """Give a task you hold back to its queue without it counting as a failure, e.g. when it is not for
        you or you must stop. Someone else (or you, later) can claim it again. This ends your claim."""
        with problems():
            holding = desk.holding(run_id, session_of(ctx))
            run = await desk.release(holding, reason)
        return RunOutcome.of(run, "The task is back in its queue.")

    @tool("Ask a person", destructive_hint=False)
    async def ask_human(
        ctx: Context,
        question: Annotated[str, Field(min_length=1, max_length=20_000, description="The question, self-contained.")],
        queue: Annotated[
            str, Field(min_length=1, max_length=200, description="The queue people answer questions from.")
        ] = HUMAN_QUEUE,
        context: Annotated[
            str | None, Field(max_length=20_000, description="What the person needs to know to answer.")
        ] = None,
        wait_seconds: HumanWait = DEFAULT_HUMAN_WAIT,
        run_id: Annotated[
            str | None,
            Field(description="The run you are working on, if the question is about it: links the question to it."),
        ] = None,
        priority: Annotated[
            Literal["low", "medium", "high", "urgent"], Field(description="How urgent the answer is.")
        ] = "medium",
    ) -> HumanAnswer:
        """Ask a person for input or a decision you cannot make yourself. This creates a task for people in
        the `queue` and waits up to wait_seconds for someone to answer it.

        If they answer in time, status is 'answered' and `answer` holds their reply. If not, status is
        'waiting': keep the task_id, go on with other work if you can, and call check_human_answer later.
        Claims you hold stay alive while you wait."""
        parent: str | None = None
        with problems():
            if run_id is not None:
                parent = desk.holding(run_id, session_of(ctx)).task_id
            data = {"question": question, "context": context, "asked_by": actor_label(desk.config.worker)}
            description = question if context is None else f"{question}\n\nContext:\n{context}"
            fields: TaskFields = {
                "queue": queue,
                "description": description[:20_000],
                "data": {k: v for k, v in data.items() if v is not None},
                "priority": priority,
                "metadata": {"kind": "question", "via": "mcp"},
            }
            if parent is not None:
                fields["parent_task_id"] = parent
            created = await desk.client.create_task(title_of(question), **fields)
            return await answer(ctx, created, wait_seconds, question)

    @tool("Check for a person's answer", read_only_hint=True)
    async def check_human_answer(
        ctx: Context,
        task_id: Annotated[str, Field(min_length=1, description="The task_id that ask_human returned.")],
        wait_seconds: Annotated[
            float, Field(ge=0, le=MAX_HUMAN_WAIT, description="Seconds to wait for the answer if there is none yet.")
        ] = 0,
    ) -> HumanAnswer:
        """Check whether a person has answered a question you asked with ask_human, optionally waiting a while
        for the answer. Returns the answer when there is one."""
        with problems():
            task = await desk.client.get_task(task_id)
            question = task.data.get("question") if isinstance(task.data, dict) else None
            return await answer(ctx, task, wait_seconds, question if isinstance(question, str) else task.title)

    async def answer(ctx: Context, task: Task, wait_seconds: float, question: str | None) -> HumanAnswer:
        name = task.identifier or task.id

        async def still_waiting(elapsed: float) -> None:
            try:
                await ctx.report_progress(elapsed, wait_seconds, f"Waiting for a person to answer {name}")
            except Exception as exc:  # progress is a courtesy; never let it end the wait
                log.debug("could not report progress: %s", exc)

        task = await desk.await_task(task.id, wait_seconds, still_waiting)
        common: dict[str, Any] = {
            "task_id": task.id,
            "identifier": task.identifier,
            "question": question,
            "task_status": task.status,
        }
        if task.status == "completed":
            runs = await desk.client.list_runs(task.id)
            by = next((actor_label(r.claimed_by) for r in reversed(runs) if r.status == "completed"), None)
            return HumanAnswer(
                status="answered", answer=task.output, answered_by=by, message=f"{by or 'A person'} answered.", **common
            )
        if task.status in FINAL_TASK_STATUSES:
            why = f": {task.error}" if task.error else ""
            return HumanAnswer(
                status="declined",
                message=f"The question {name} was {task.status} without an answer{why}. Decide without it, or ask "
                "again differently.",
                **common,
            )
        return HumanAnswer(
            status="waiting",
            message=f"No answer yet (the question {name} is {task.status}). Go on with other work if you can and "
            f"call check_human_answer with task_id {task.id!r} later.",
            **common,
        )
