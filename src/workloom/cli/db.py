"""Commands that work on the database directly (no server): opening the engine, the ``--database-url``
option, and database failures reported as one line saying what to do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from workloom.cli.output import fail
from workloom.domain.errors import WorkloomError
from workloom.store.urls import DEFAULT_URL

if TYPE_CHECKING:
    from workloom.engine.service import Workloom

# The engine, the store and SQLAlchemy are imported by the functions that use them: every command loads
# this module, and the ones that talk to a server through the API should not pay for loading the server.

T = TypeVar("T")

DATABASE_ENV = "WORKLOOM_DATABASE_URL"

DatabaseUrl = Annotated[
    str,
    typer.Option(
        "--database-url",
        envvar=DATABASE_ENV,
        show_envvar=True,
        help="sqlite:///path/to/file.db or postgresql://user:pass@host/db",
    ),
]
DEFAULT_DATABASE_URL = DEFAULT_URL


def display_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    import sqlalchemy as sa

    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return url


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (``None`` for other databases or in-memory ones)."""
    import sqlalchemy as sa

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        return None
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def check_url(url: str) -> None:
    """Refuse a URL no backend can use, before anything tries to connect with it."""
    import sqlalchemy as sa

    from workloom.store.database import async_url

    try:
        async_url(url)
    except sa.exc.ArgumentError:
        fail(f"{url!r} is not a database URL.", hint="Use sqlite:///path/to/file.db or postgresql://user:pass@host/db.")
    except ValueError as exc:
        fail(str(exc))


def with_database(url: str, op: Callable[[Workloom], Awaitable[T]], *, migrate: bool = False) -> T:
    """Run ``op`` against the database at ``url``: migrated first when ``migrate``, otherwise it must
    already be at the newest schema (reads never create or change a database)."""
    import sqlalchemy as sa

    check_url(url)
    if not migrate:
        path = sqlite_path(url)
        if path is not None and not path.exists():
            fail(
                f"No database at {path}.",
                hint=f"Run 'workloom migrate --database-url {url}' to create it, or pass the right --database-url.",
            )
    try:
        return asyncio.run(_run(url, op, migrate))
    except WorkloomError as exc:
        fail(exc.detail)
    except (sa.exc.SQLAlchemyError, OSError) as exc:
        fail(
            f"Database error at {display_url(url)}: {_first_line(exc)}",
            hint="Check --database-url (or WORKLOOM_DATABASE_URL) and that the database is running.",
        )


async def _run(url: str, op: Callable[[Workloom], Awaitable[T]], migrate: bool) -> T:
    from workloom.engine.service import Workloom
    from workloom.store import migrate as migrations

    wl = Workloom.from_url(url)
    try:
        if migrate:
            await wl.migrate()
        elif not await migrations.is_current(wl.db):
            fail(
                f"The database at {display_url(url)} is not at the current schema.",
                hint="Run 'workloom migrate' (with the same --database-url) first.",
            )
        return await op(wl)
    finally:
        await wl.stop()


async def current_revision(wl: Workloom) -> str | None:
    from workloom.store import migrate as migrations

    return await migrations.current_revision(wl.db)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
