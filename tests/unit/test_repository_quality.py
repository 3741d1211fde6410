"""The repository's own rules, checked as tests so the one test command covers them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from workloom.domain.diagrams import run_diagram, task_diagram

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff_finds_nothing() -> None:
    result = _run("ruff", "check", "src", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def test_layers_are_kept() -> None:
    result = subprocess.run(["lint-imports"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_architecture_doc_shows_the_current_state_machines() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    assert task_diagram() in doc, "regenerate the task diagram in docs/architecture.md from task_states"
    assert run_diagram() in doc, "regenerate the run diagram in docs/architecture.md from run_states"
