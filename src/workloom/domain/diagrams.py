"""State diagrams (Mermaid) generated from the transition tables, so the docs cannot drift from the code."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable


def mermaid(transitions: Iterable[tuple[tuple[str, str], str]], initial: str) -> str:
    edges: defaultdict[tuple[str, str], list[str]] = defaultdict(list)
    for (source, action), target in transitions:
        edges[(source, target)].append(action)
    lines = ["stateDiagram-v2", f"    [*] --> {initial}"]
    for (source, target), actions in sorted(edges.items()):
        lines.append(f"    {source} --> {target}: {', '.join(sorted(actions))}")
    return "\n".join(lines)


def task_diagram() -> str:
    from workloom.domain.task_states import TRANSITIONS

    return mermaid(TRANSITIONS.items(), "draft")


def run_diagram() -> str:
    from workloom.domain.run_states import TRANSITIONS

    return mermaid(TRANSITIONS.items(), "queued")
