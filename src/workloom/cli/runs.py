"""``workloom runs``: the attempts at a task, through the API."""

from __future__ import annotations

from typing import Annotated

import typer

from workloom.cli.http import Hints, connect
from workloom.cli.output import console, note, print_json
from workloom.cli.task_views import run_panel, run_table
from workloom.client import NotFoundError

app = typer.Typer(help="Inspect runs: the attempts at a task (through the API).", no_args_is_help=True)

JsonOutput = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead of text.")]


@app.command("list")
def list_runs(
    task: Annotated[str, typer.Option("--task", "-t", help="The task's id or identifier (WL-42).")],
    json_output: JsonOutput = False,
) -> None:
    """List a task's runs, oldest attempt first."""
    hints: Hints = {NotFoundError: "Check the task id: 'workloom tasks list' shows the tasks your key can see."}
    with connect(hints=hints) as client:
        found = client.get_task(task)
        runs = [run.model_dump(mode="json") for run in client.list_runs(found.id)]
    if json_output:
        print_json({"items": runs})
        return
    if not runs:
        note(f"{found.identifier or found.id} has no runs yet: a worker claiming it from its queue starts one.")
        return
    console.print(run_table(runs, title=f"Runs of {found.identifier or found.id}"))


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run's id (see 'workloom runs list').")],
    json_output: JsonOutput = False,
) -> None:
    """Show one run: its status, lease, worker, progress, usage and outcome."""
    hints: Hints = {NotFoundError: "Check the run id: 'workloom runs list --task ID' shows a task's runs."}
    with connect(hints=hints) as client:
        run = client.get_run(run_id)
        task = client.get_task(run.task_id)
    if json_output:
        print_json(run.model_dump(mode="json"))
        return
    console.print(run_panel(run.model_dump(mode="json"), task.identifier or task.id))
