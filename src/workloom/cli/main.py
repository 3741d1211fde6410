"""The ``workloom`` command: server and database administration, plus the API for people at a terminal.

Commands marked "through the API" read ``WORKLOOM_URL`` (default http://127.0.0.1:8000) and
``WORKLOOM_API_KEY``; the others work on the database given by ``--database-url`` / ``WORKLOOM_DATABASE_URL``.
"""

from __future__ import annotations

import typer

from workloom.cli import keys, queues, runs, tasks, workspaces
from workloom.cli.apply import apply
from workloom.cli.mcp import mcp
from workloom.cli.migrate import migrate
from workloom.cli.serve import serve
from workloom.cli.tail import tail
from workloom.cli.transfer import export_tasks, import_tasks
from workloom.cli.worker import worker

app = typer.Typer(
    name="workloom",
    help="Workloom: orchestrate work done by people, AI agents and automations.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command(rich_help_panel="Server")(serve)
app.command(rich_help_panel="Server")(migrate)
app.add_typer(keys.app, name="keys", rich_help_panel="Server")
app.add_typer(workspaces.app, name="workspaces", rich_help_panel="Server")
app.add_typer(queues.app, name="queues", rich_help_panel="Work (through the API)")
app.add_typer(tasks.app, name="tasks", rich_help_panel="Work (through the API)")
app.command(rich_help_panel="Work (through the API)")(apply)
app.add_typer(runs.app, name="runs", rich_help_panel="Work (through the API)")
app.command(rich_help_panel="Work (through the API)")(tail)
app.command(rich_help_panel="Work (through the API)")(mcp)
app.command(rich_help_panel="Work (through the API)")(worker)
app.command("import", rich_help_panel="Work (through the API)")(import_tasks)
app.command("export", rich_help_panel="Work (through the API)")(export_tasks)

if __name__ == "__main__":
    app()
