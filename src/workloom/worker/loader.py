"""Find the ``Worker`` a ``module:attribute`` (or ``path/to/file.py:attribute``) names."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

from workloom.worker.app import Worker


class LoadError(Exception):
    """The target could not be imported, or is not a ``Worker``; the message says what to fix."""


def load_worker(target: str) -> Worker:
    """Import ``module:attribute`` and return the ``Worker`` found there (``attribute`` may be dotted and
    defaults to ``app``). A module path ending in ``.py`` is loaded from that file, with its directory on
    ``sys.path``; a dotted module is imported with the current directory on ``sys.path``."""
    module_part, _, attribute = target.partition(":")
    attribute = attribute or "app"
    if not module_part:
        raise LoadError(f"{target!r} names no module; use module:attribute, e.g. myapp.workers:app")
    module = _load_file(module_part) if _is_path(module_part) else _import(module_part)
    found: Any = module
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise LoadError(f"{module.__name__} has no attribute {attribute!r}") from None
    if not isinstance(found, Worker):
        raise LoadError(f"{target} is a {type(found).__name__}, not a workloom.worker.Worker")
    return found


def _is_path(module_part: str) -> bool:
    return module_part.endswith(".py") or os.sep in module_part or "/" in module_part


def _import(name: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise LoadError(f"no module named {name!r} (looked in the current directory and PYTHONPATH)") from exc
        raise


def _load_file(raw: str) -> Any:
    path = Path(raw).resolve()
    if not path.is_file():
        raise LoadError(f"no such file: {raw}")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the file can import its neighbours
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot load {raw} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
