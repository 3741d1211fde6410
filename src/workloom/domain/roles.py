"""Roles of API keys and what each may do."""

from __future__ import annotations

from typing import Literal, get_args

Role = Literal["admin", "member", "agent"]
ROLES: tuple[str, ...] = get_args(Role)

Permission = Literal["tasks.read", "tasks.write", "queues.write", "runs.work", "keys.manage"]

GRANTS: dict[str, frozenset[str]] = {
    "admin": frozenset({"tasks.read", "tasks.write", "queues.write", "runs.work", "keys.manage"}),
    "member": frozenset({"tasks.read", "tasks.write", "queues.write", "runs.work"}),
    "agent": frozenset({"tasks.read", "tasks.write", "runs.work"}),
}


def allows(role: str, permission: Permission) -> bool:
    return permission in GRANTS.get(role, frozenset())
