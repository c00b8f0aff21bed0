"""archetype-council: a persona that pauses to reflect, and a council of archetypes that votes.

The library's API, importable from here::

    from council import build_runtime, load_settings, run_episode

    rt = build_runtime(load_settings(pool="mother"))
    episode = run_episode(rt, "How do I tell a friend it hurts?", on_event=print)

Names load on first use, so ``import council`` stays cheap and pulls no model, database or web stack.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_HOMES = {
    "Settings": "council.core.settings",
    "load_settings": "council.core.settings",
    "Episode": "council.core.episode",
    "ReflectionPoint": "council.core.episode",
    "Vote": "council.core.episode",
    "Decision": "council.core.episode",
    "CouncilError": "council.core.errors",
    "CouncilRuntime": "council.engine.runtime",
    "build_runtime": "council.engine.runner",
    "run_episode": "council.engine.runner",
    "builder": "council.engine.graph",
    "EpisodeEvent": "council.engine.events",
    "Recalled": "council.engine.events",
    "Drafted": "council.engine.events",
    "Voted": "council.engine.events",
    "Revised": "council.engine.events",
    "Closed": "council.engine.events",
}

__all__ = [
    "Closed",
    "CouncilError",
    "CouncilRuntime",
    "Decision",
    "Drafted",
    "Episode",
    "EpisodeEvent",
    "Recalled",
    "ReflectionPoint",
    "Revised",
    "Settings",
    "Vote",
    "Voted",
    "__version__",
    "build_runtime",
    "builder",
    "load_settings",
    "run_episode",
]

if TYPE_CHECKING:
    from council.core.episode import Decision, Episode, ReflectionPoint, Vote
    from council.core.errors import CouncilError
    from council.core.settings import Settings, load_settings
    from council.engine.events import Closed, Drafted, EpisodeEvent, Recalled, Revised, Voted
    from council.engine.graph import builder
    from council.engine.runner import build_runtime, run_episode
    from council.engine.runtime import CouncilRuntime


def __getattr__(name: str) -> object:
    """Import a public name from the module that defines it, the first time it is asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module 'council' has no attribute {name!r}")
    value = vars(importlib.import_module(_HOMES[name]))[name]
    globals()[name] = value
    return value
