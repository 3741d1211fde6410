"""Server settings, read from ``WORKLOOM_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from workloom.store.database import async_url
from workloom.store.urls import DEFAULT_URL


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = DEFAULT_URL
    bootstrap_token: str | None = None
    max_body_bytes: int = 1024 * 1024
    tick_interval: float = 0.5
    keepalive_seconds: float = 15.0
    log_level: str = "info"
    db_pool_size: int = 20
    shared_commits: int | None = None  # groups at once; None: the engine's default, 0: every call alone
    claim_poll_seconds: float = 1.0
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        """Whether the database is the embedded one (SQLite)."""
        return async_url(self.database_url).startswith("sqlite")

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        env = os.environ
        values: dict[str, object] = {
            "database_url": env.get("WORKLOOM_DATABASE_URL", DEFAULT_URL),
            "bootstrap_token": env.get("WORKLOOM_BOOTSTRAP_TOKEN") or None,
            "max_body_bytes": int(env.get("WORKLOOM_MAX_BODY_BYTES", 1024 * 1024)),
            "tick_interval": float(env.get("WORKLOOM_TICK_INTERVAL", 0.5)),
            "keepalive_seconds": float(env.get("WORKLOOM_SSE_KEEPALIVE_SECONDS", 15)),
            "log_level": env.get("WORKLOOM_LOG_LEVEL", "info"),
            "db_pool_size": int(env.get("WORKLOOM_DB_POOL_SIZE", 20)),
            "shared_commits": int(env["WORKLOOM_SHARED_COMMITS"]) if env.get("WORKLOOM_SHARED_COMMITS") else None,
            "claim_poll_seconds": float(env.get("WORKLOOM_CLAIM_POLL_SECONDS", 1.0)),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
