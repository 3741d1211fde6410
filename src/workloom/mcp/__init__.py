"""Workloom's MCP server: tools that let an AI agent take work from Workloom queues, report on it, finish it,
and ask people for input, through the SDK with the agent's API key.

Run it with ``workloom mcp`` (stdio, for an MCP client to launch) or ``workloom mcp --transport http``
(streamable HTTP at ``http://127.0.0.1:8765/mcp``). See docs/mcp.md.
"""

from workloom.mcp.desk import Desk, DeskConfig, DeskError, Holding, LeaseLost
from workloom.mcp.server import INSTRUCTIONS, build_server, run, serve_http, serve_stdio

__all__ = [
    "INSTRUCTIONS",
    "Desk",
    "DeskConfig",
    "DeskError",
    "Holding",
    "LeaseLost",
    "build_server",
    "run",
    "serve_http",
    "serve_stdio",
]
