"""The ``workloom`` command starts without loading the server: most commands talk to a server through the API,
and loading the engine, the store, SQLAlchemy and FastAPI doubled the time every command took to start
(0.83 against 0.38 s for ``workloom --help`` here). The commands that work on the database load them when run."""

from __future__ import annotations

import json
import subprocess
import sys

SERVER_SIDE = ("sqlalchemy", "fastapi", "alembic", "asyncpg", "aiosqlite", "workloom.engine", "workloom.store.database")


def test_the_command_line_loads_no_server_side_module_until_a_command_needs_it() -> None:
    probe = "import json, sys, workloom.cli.main; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, check=True).stdout)

    assert [m for m in loaded if m.split(".")[0] in SERVER_SIDE or m.startswith(SERVER_SIDE)] == []
