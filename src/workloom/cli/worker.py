"""``workloom worker module:app``: run a ``workloom.worker.Worker`` until SIGTERM/SIGINT."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from workloom.cli.output import fail

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("json", "text")
KEY_ENV = "WORKLOOM_API_KEY"


def worker(
    target: Annotated[
        str,
        typer.Argument(
            help="The Worker to run, as module:attribute (e.g. myapp.workers:app) or path/to/file.py:app.",
            show_default=False,
        ),
    ],
    concurrency: Annotated[
        int | None, typer.Option(min=1, help="Jobs at once, shared by all queues (default: the app's).")
    ] = None,
    grace_period: Annotated[
        float | None,
        typer.Option(min=0, help="Seconds in-flight jobs get to finish at shutdown before they are released."),
    ] = None,
    wait_seconds: Annotated[
        float | None, typer.Option(min=0, max=30, help="Long-poll wait of a claim on an empty queue.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Worker name shown in runs' claimed_by and in logs.")] = None,
    log_level: Annotated[str, typer.Option(envvar="WORKLOOM_LOG_LEVEL", help="One of " + ", ".join(LOG_LEVELS))] = (
        "info"
    ),
    log_format: Annotated[str, typer.Option(help="json (one object per line) or text.")] = "json",
) -> None:
    """Run a worker: claim tasks from its queues and hand them to its handlers (through the API).

    Reads WORKLOOM_URL and WORKLOOM_API_KEY. SIGTERM or Ctrl-C: stop claiming, finish or release in-flight work.
    """
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}.")
    if log_format not in LOG_FORMATS:
        fail(f"--log-format must be json or text, not {log_format!r}.")
    from workloom.client import AuthenticationError, PermissionDeniedError
    from workloom.worker import configure_logging
    from workloom.worker.loader import LoadError, load_worker

    try:
        app = load_worker(target)
    except LoadError as exc:
        fail(f"Cannot load the worker: {exc}", hint="Pass module:attribute, e.g. 'workloom worker myapp.workers:app'.")
    try:
        app.configure(concurrency=concurrency, grace_period=grace_period, wait_seconds=wait_seconds, name=name)
    except ValueError as exc:
        fail(str(exc))
    if not app.handlers:
        fail(f"{target} has no handlers.", hint="Declare one with @app.handler('queue-name').")
    if app.client is None and not os.environ.get(KEY_ENV):
        fail(
            f"{KEY_ENV} is not set.",
            hint=f"Set {KEY_ENV} to an API key, e.g. one made with 'workloom keys create --workspace default "
            "--role member'.",
        )
    configure_logging(log_level, "json" if log_format == "json" else "text")
    try:
        app.run(configure_logs=False)
    except (AuthenticationError, PermissionDeniedError) as exc:
        fail(f"The server refused the worker's key: {exc}", hint=f"Check {KEY_ENV} (and WORKLOOM_URL).")
    except KeyboardInterrupt:  # a signal before the worker installed its handlers
        raise typer.Exit(0) from None
