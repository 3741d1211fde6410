"""``workloom mcp`` driven by the ``mcp`` package's own client, against the real server, on every database.

The stdio tests launch ``python -m workloom.cli.main mcp`` as an MCP client would, with WORKLOOM_URL and an
agent's WORKLOOM_API_KEY; the SDK plays the people and checks what the agent's tool calls did. The HTTP test
serves the same tools over streamable HTTP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from mcp import Client, ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent
from serverproc import ServerProcess

from workloom.client import Actor, AsyncClient, Event

AGENT = "test-agent"
PERSON = Actor(kind="human", ref="alice")
TOOLS = {
    "list_queues",
    "claim_next_task",
    "get_task",
    "heartbeat",
    "report_progress",
    "complete_task",
    "fail_task",
    "release_task",
    "ask_human",
    "check_human_answer",
}
COMMAND = [sys.executable, "-m", "workloom.cli.main", "mcp"]


@pytest.fixture
def agent_key(make_key: Callable[[str, str], str]) -> str:
    return make_key("default", "agent")


def mcp_env(server: ServerProcess, key: str) -> dict[str, str]:
    return {"WORKLOOM_URL": server.url, "WORKLOOM_API_KEY": key, "WORKLOOM_WORKER": AGENT}


@asynccontextmanager
async def stdio_session(server: ServerProcess, key: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=COMMAND[0], args=COMMAND[1:], env=mcp_env(server, key))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def sdk(server: ServerProcess) -> AsyncIterator[AsyncClient]:
    """The people's side: an admin client of the same workspace."""
    async with AsyncClient(server.url, server.token) as client:
        yield client


async def call(session: ClientSession | Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured answer (also checked against the JSON text)."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, text_of(result.content)
    assert result.structured_content is not None
    assert json.loads(text_of(result.content)) == result.structured_content
    return result.structured_content


async def refused(session: ClientSession | Client, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; the error text the model reads."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    return text_of(result.content)


def text_of(content: list[Any]) -> str:
    return "".join(block.text for block in content if isinstance(block, TextContent))


async def events_until(wl: AsyncClient, task_id: str, wanted: str, timeout: float = 20) -> list[Event]:
    """The task's events up to the first of type ``wanted`` (its history is replayed first)."""
    seen: list[Event] = []
    with anyio.fail_after(timeout):
        async with wl.stream_task(task_id) as stream:
            async for event in stream:
                seen.append(event)
                if event.type == wanted:
                    return seen
    raise AssertionError(f"the stream ended before {wanted}")


# -- an agent's whole turn over stdio -----------------------------------------------------------------------


async def test_agent_claims_reports_and_completes_over_stdio(server: ServerProcess, agent_key: str) -> None:
    async with sdk(server) as wl:
        await wl.create_queue("support", description="customer tickets", lease_seconds=60)
        ticket = await wl.create_task(
            "Draft a reply to ticket 17", queue="support", description="Be brief.", data={"ticket": 17}
        )
        later = await wl.create_task("Draft a reply to ticket 18", queue="support", data={"ticket": 18})

        async with stdio_session(server, agent_key) as session:
            listed = await session.list_tools()
            assert {tool.name for tool in listed.tools} == TOOLS
            schemas = {tool.name: tool for tool in listed.tools}
            for tool in listed.tools:
                assert tool.description and len(tool.description) > 80, tool.name
                assert tool.output_schema is not None, tool.name
            claim_schema = schemas["claim_next_task"].input_schema
            assert claim_schema["required"] == ["queue"]
            assert claim_schema["properties"]["wait_seconds"]["maximum"] == 30
            assert "claim_token" not in json.dumps(claim_schema)

            queues = await call(session, "list_queues")
            assert queues["queues"] == [
                {
                    "name": "support",
                    "description": "customer tickets",
                    "lease_seconds": 60,
                    "max_attempts": 3,
                    "ready_tasks": 2,
                }
            ]

            # a short lease: the MCP server must keep it alive while the agent "thinks"
            claimed = await call(session, "claim_next_task", queue="support", lease_seconds=3)
            assert claimed["claimed"] is True
            assert "clm_" not in json.dumps(claimed)  # the claim token stays inside the MCP server
            assert claimed["task"]["task_id"] == ticket.id
            assert claimed["task"]["identifier"] == ticket.identifier
            assert claimed["task"]["title"] == "Draft a reply to ticket 17"
            assert claimed["task"]["description"] == "Be brief."
            assert claimed["task"]["data"] == {"ticket": 17}
            assert claimed["attempt"] == 1
            assert claimed["heartbeat_every_seconds"] == pytest.approx(1.0)
            run_id = claimed["run_id"]
            run = await wl.get_run(run_id)
            assert run.status == "running"
            assert run.claimed_by == Actor(kind="agent_session", ref=AGENT)

            with anyio.move_on_after(5):  # past the lease: without heartbeats the ticker would expire the run
                await events_until(wl, ticket.id, "run.lease_expired", timeout=10)
                raise AssertionError("the lease expired while the MCP server held the run")
            run = await wl.get_run(run_id)
            assert run.status == "running"
            assert run.heartbeat_at is not None and run.claimed_at is not None
            assert (run.heartbeat_at - run.claimed_at).total_seconds() >= 3  # renewed after the first lease ended

            details = await call(session, "get_task", task_id=ticket.identifier)
            assert details["task"]["status"] == "in_progress"
            assert details["task"]["data"] == {"ticket": 17}
            assert [(r["run_id"], r["held_by_this_session"]) for r in details["runs"]] == [(run_id, True)]
            types = [entry["type"] for entry in details["timeline"]]
            assert types[0] == "task.created"
            assert {"run.claimed", "task.in_progress", "run.started"} <= set(types)
            assert details["earlier_events_omitted"] == 0
            short = await call(session, "get_task", task_id=ticket.id, timeline_limit=2)
            assert [e["type"] for e in short["timeline"]] == types[-2:]
            assert short["earlier_events_omitted"] == len(types) - 2

            progress = await call(
                session,
                "report_progress",
                run_id=run_id,
                message="drafting",
                percent=50,
                tokens=1500,
                cost=0.02,
            )
            assert progress["status"] == "running"
            run = await wl.get_run(run_id)
            assert run.progress == {"message": "drafting", "percent": 50}
            assert run.usage == {"tokens": 1500, "cost": 0.02}

            done = await call(
                session, "complete_task", run_id=run_id, result={"reply": "Hello, it is fixed."}, tokens=1950
            )
            assert (done["run_id"], done["task_id"], done["status"]) == (run_id, ticket.id, "completed")

            # the claim ended with the completion; a second one is explained, not attempted
            again = await refused(session, "complete_task", run_id=run_id, result="twice")
            assert "no longer held" in again
            unknown = await refused(session, "fail_task", run_id="run_nope", error="x")
            assert "not held by this MCP server" in unknown
            missing = await refused(session, "claim_next_task", queue="no-such-queue")
            assert "[not-found]" in missing and "404" in missing
            invalid = await refused(session, "claim_next_task", queue="support", wait_seconds=99)
            assert "wait_seconds" in invalid
            nothing = await refused(session, "report_progress", run_id=run_id)
            assert "Give a message" in nothing

            # a claim still held when the session ends is given back
            held = await call(session, "claim_next_task", queue="support")
            assert held["task"]["task_id"] == later.id

        task = await wl.get_task(ticket.id)
        assert task.status == "completed"
        assert task.output == {"reply": "Hello, it is fixed."}
        assert (await wl.get_run(run_id)).usage == {"tokens": 1950, "cost": 0.02}

        released = await events_until(wl, later.id, "run.released")
        assert released[-1].run_id == held["run_id"]
        assert released[-1].payload["reason"]
        assert (await wl.get_task(later.id)).status == "ready"


async def test_fail_and_release_with_the_sessionless_protocol(server: ServerProcess, agent_key: str) -> None:
    """The ``mcp`` package's ``Client`` speaks the 2026-07-28 protocol, where every request stands alone: the
    runs belong to the MCP server process, and are released when it stops."""
    async with sdk(server) as wl:
        await wl.create_queue("work", initial_interval_seconds=0)
        broken = await wl.create_task("Impossible", queue="work", priority="urgent")
        flaky = await wl.create_task("Flaky", queue="work", priority="high")
        other = await wl.create_task("Not for me", queue="work", priority="medium")
        last = await wl.create_task("Left over", queue="work", priority="low")

        params = StdioServerParameters(command=COMMAND[0], args=COMMAND[1:], env=mcp_env(server, agent_key))
        async with Client(params) as client:
            assert client.protocol_version == "2026-07-28"
            first = await call(client, "claim_next_task", queue="work")
            assert first["task"]["task_id"] == broken.id
            failed = await call(client, "fail_task", run_id=first["run_id"], error="no such customer", retryable=False)
            assert failed["status"] == "failed"

            second = await call(client, "claim_next_task", queue="work")
            assert second["task"]["task_id"] == flaky.id
            await call(client, "fail_task", run_id=second["run_id"], error="timed out")

            third = await call(client, "claim_next_task", queue="work")
            assert third["task"]["task_id"] in (flaky.id, other.id)
            renewed = await call(client, "heartbeat", run_id=third["run_id"], progress="looking")
            assert renewed["status"] == "running"
            back = await call(client, "release_task", run_id=third["run_id"], reason="not my area")
            assert back["status"] == "canceled"
            assert "released (not my area)" in await refused(client, "complete_task", run_id=third["run_id"], result=1)

            for _ in range(3):
                held = await call(client, "claim_next_task", queue="work")
                if held["task"]["task_id"] == last.id:
                    break
                await call(client, "complete_task", run_id=held["run_id"], result="done")
            assert held["task"]["task_id"] == last.id
            assert (await wl.get_run(held["run_id"])).status == "running"

        gone = await wl.get_task(broken.id)
        assert (gone.status, gone.error) == ("failed", "no such customer")
        assert (await wl.get_task(flaky.id)).attempts >= 1
        assert (await wl.get_run(third["run_id"])).end_reason == "released"
        released = await events_until(wl, last.id, "run.released")
        assert released[-1].run_id == held["run_id"]
        assert released[-1].payload["reason"] == "the MCP server stopped"


# -- asking a person -------------------------------------------------------------------------------------


async def test_ask_human_waits_for_a_person_over_stdio(server: ServerProcess, agent_key: str) -> None:
    async with sdk(server) as wl:
        await wl.create_queue("human-input")
        await wl.create_queue("refunds")
        refund = await wl.create_task("Refund order 991", queue="refunds", data={"amount": 950})

        async with stdio_session(server, agent_key) as session:
            claimed = await call(session, "claim_next_task", queue="refunds")
            answers: list[dict[str, Any]] = []

            async def agent() -> None:
                answers.append(
                    await call(
                        session,
                        "ask_human",
                        question="Refund 950 EUR? It is above my limit of 500.",
                        context="Order 991, customer since 2019.",
                        run_id=claimed["run_id"],
                        priority="high",
                        wait_seconds=60,
                    )
                )

            async with anyio.create_task_group() as group:
                group.start_soon(agent)
                # the person long-polls the people's queue and answers the question as it arrives
                claims = await wl.claim("human-input", worker=PERSON, wait_seconds=30)
                assert len(claims) == 1
                question = claims[0].task
                assert question.title == "Refund 950 EUR? It is above my limit of 500."
                assert question.data == {
                    "question": "Refund 950 EUR? It is above my limit of 500.",
                    "context": "Order 991, customer since 2019.",
                    "asked_by": f"agent_session:{AGENT}",
                }
                assert question.parent_task_id == refund.id
                assert question.priority == "high"
                await wl.complete_run(claims[0].run.id, claims[0].claim_token, result={"approved": True})

            [answer] = answers
            assert answer["status"] == "answered"
            assert answer["answer"] == {"approved": True}
            assert answer["answered_by"] == "human:alice"
            assert answer["task_id"] == question.id

            # no answer within the wait: the agent gets the task id and checks later
            pending = await call(session, "ask_human", question="Which carrier for order 992?", wait_seconds=0)
            assert pending["status"] == "waiting"
            assert "check_human_answer" in pending["message"]
            still = await call(session, "check_human_answer", task_id=pending["task_id"])
            assert still["status"] == "waiting"
            [late] = await wl.claim("human-input", worker=PERSON, wait_seconds=10)
            assert late.task.id == pending["task_id"]
            await wl.complete_run(late.run.id, late.claim_token, result="DHL")
            checked = await call(session, "check_human_answer", task_id=pending["task_id"], wait_seconds=30)
            assert (checked["status"], checked["answer"]) == ("answered", "DHL")
            assert checked["question"] == "Which carrier for order 992?"

            # a question a person refuses comes back as declined
            refused_q = await call(session, "ask_human", question="Delete the customer?", wait_seconds=0)
            [no] = await wl.claim("human-input", worker=PERSON, wait_seconds=10)
            await wl.fail_run(no.run.id, no.claim_token, "not allowed", retryable=False)
            declined = await call(session, "check_human_answer", task_id=refused_q["task_id"], wait_seconds=30)
            assert declined["status"] == "declined"
            assert "not allowed" in declined["message"]

            await call(session, "complete_task", run_id=claimed["run_id"], result={"refunded": 950})
        assert (await wl.get_task(refund.id)).output == {"refunded": 950}


# -- streamable HTTP ------------------------------------------------------------------------------------


@asynccontextmanager
async def http_mcp_server(server: ServerProcess, key: str) -> AsyncIterator[str]:
    """``workloom mcp --transport http --port 0``; yields its URL (read from the line it prints when listening)."""
    env = {**os.environ, **mcp_env(server, key)}
    process = await anyio.open_process(
        [*COMMAND, "--transport", "http", "--port", "0"], env=env, stdout=subprocess.DEVNULL
    )
    try:
        assert process.stderr is not None
        printed = ""
        with anyio.fail_after(30):
            while "listening at " not in printed or not printed.endswith("\n"):
                chunk = await process.stderr.receive()
                printed += chunk.decode()
        line = next(line for line in printed.splitlines() if "listening at " in line)
        yield line.split("listening at ", 1)[1].strip()
        process.terminate()
        with anyio.fail_after(20):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()


async def test_streamable_http_transport(server: ServerProcess, agent_key: str) -> None:
    async with sdk(server) as wl, http_mcp_server(server, agent_key) as url:
        assert url.endswith("/mcp")
        task = await wl.create_task("Summarise the call", queue="calls", data={"minutes": 12})
        async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS
            claimed = await call(session, "claim_next_task", queue="calls")
            assert claimed["task"]["data"] == {"minutes": 12}
            # the session ends without finishing: its run goes back to the queue
        released = await events_until(wl, task.id, "run.released")
        assert released[-1].run_id == claimed["run_id"]
        assert (await wl.get_task(task.id)).status == "ready"
