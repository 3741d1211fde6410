"""Task priority: a name for people, a rank for ordering claims."""

from __future__ import annotations

from typing import Literal, get_args

Priority = Literal["low", "medium", "high", "urgent"]
PRIORITIES: tuple[str, ...] = get_args(Priority)
RANK: dict[str, int] = {name: index for index, name in enumerate(PRIORITIES)}
NAME_BY_RANK: dict[int, str] = {rank: name for name, rank in RANK.items()}
