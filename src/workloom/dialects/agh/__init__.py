"""The AGH runtime tasks API (seed 004) at ``/compat/agh``: routes and translation onto the engine.

``mount(app)`` adds it to the native app. See ``docs/dialects/agh.md`` for the mapping and decisions.
"""

from workloom.dialects.agh.app import PREFIX, mount

__all__ = ["PREFIX", "mount"]
