"""The real server as a child process, for tests that talk HTTP to it (and kill it)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

BOOT_TIMEOUT = 30.0


def poll(
    condition: Callable[[], Any],
    what: str,
    timeout: float = 60.0,
    interval: float = 0.05,
    *,
    why: Callable[[], str] | None = None,
) -> Any:
    """The first truthy value of ``condition()`` within ``timeout`` seconds, or fail naming ``what`` (and
    what ``why`` says then): for a state the server shows (over HTTP, in its log) but announces to nobody."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{why()}" if why is not None else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last value: {value!r}{detail}")
        time.sleep(interval)  # between looks at the condition, bounded by the deadline


def metric(api: httpx.Client, name: str) -> float:
    """A sample without labels from the server's /metrics (0 when it has none yet)."""
    for line in api.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    database_url: str
    token: str
    log_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"server-{self.port}.log"

    def start(self) -> ServerProcess:
        env = {
            **os.environ,
            "WORKLOOM_DATABASE_URL": self.database_url,
            "WORKLOOM_BOOTSTRAP_TOKEN": self.token,
            "WORKLOOM_LOG_LEVEL": "warning",
            **self.env,
        }
        with self.log_path.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workloom.cli.main", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT
        # One client for all the polls: each new httpx client loads the CA bundle (~30 ms of CPU), which
        # polling every 50 ms took away from the server it waited for.
        with httpx.Client(timeout=1) as probe:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_path.read_text()}")
                try:
                    if probe.get(f"{self.url}/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)  # polling the server's readiness, bounded by BOOT_TIMEOUT
        raise RuntimeError(f"server not ready after {BOOT_TIMEOUT}s:\n{self.log_path.read_text()}")

    def client(self, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token or self.token}"}, timeout=timeout
        )

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the graceful path."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL: the crash path."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                self.terminate(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
