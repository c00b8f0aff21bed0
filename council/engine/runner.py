"""Assemble a runtime from settings and run episodes through the graph."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, cast

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from archetypes.backends import Backend, LoadedModels, LocalModel
from archetypes.backends.modelfiles import file_hash
from archetypes.definitions import Persona
from archetypes.library import Library
from council.core.episode import Episode
from council.core.errors import ModelError, StorageError, interruption
from council.core.settings import Settings
from council.engine.events import EpisodeEvent, event_of
from council.engine.graph import EpisodeState, builder, episode_from_state, initial_state
from council.engine.judges import Reader, load_judge
from council.engine.persona import PersonaWriter
from council.engine.reflection import ReflectionPolicy
from council.engine.runtime import CouncilRuntime
from council.engine.voting import Council
from council.store.database import Database
from council.store.episodes import EpisodeLog
from council.store.versions import BASE, PersonaVersion, PersonaVersions
from memory.embedder import DEFAULT_EMBEDDER, shared_embedder
from memory.vector import VectorMemory

logger = logging.getLogger(__name__)

OnEvent = Callable[[EpisodeEvent], None]


def new_episode_id() -> str:
    """A short random id; `council logs show` accepts any unique prefix of it."""
    return uuid.uuid4().hex[:16]


def build_runtime(
    settings: Settings, backends: LoadedModels | None = None, library: Library | None = None
) -> CouncilRuntime:
    """Load definitions and models named by ``settings`` (each distinct model once)."""
    library = library or Library.load(settings.home)
    persona = library.persona(settings.persona)
    pool = library.pool(settings.pool)
    backends = backends or LoadedModels(settings)
    log = EpisodeLog(Database(settings.db_url))
    interrupt_orphans(log)
    version = PersonaVersions(log.db, settings.personas_dir).active(persona.name)
    backend = backends.get(persona.model) if version is None else persona_backend(backends, persona, version)
    members = library.members(pool)
    judged = [a for a in members if a.judge is not None]
    reader = Reader(shared_embedder(DEFAULT_EMBEDDER)) if judged else None
    judges = {a.name: load_judge(library, a, reader.encoder) for a in judged if reader is not None}
    council = Council(pool, members, persona, backends, judges, reader)
    writer = PersonaWriter(persona, backend, ReflectionPolicy(settings.reflection), settings.generation, council.note)
    try:
        memory = VectorMemory(settings.memory, settings.chroma_dir)
    except StorageError as exc:
        if settings.memory.recall:
            raise
        logger.warning("memory is unavailable, so episodes are logged only: %s", exc)  # a run without recall
        memory = None
    return CouncilRuntime(
        settings,
        persona,
        pool,
        writer,
        council,
        log,
        memory,
        persona_version=version.id if version else BASE,
        backends=backends,
    )


def interrupt_orphans(log: EpisodeLog) -> None:
    """Mark the log's running episodes whose process died (SIGKILL, a crash) ``interrupted``, as a start-up sweep."""
    try:
        for episode_id in log.interrupt_orphans():
            logger.warning("episode %s was interrupted: the process running it is gone", episode_id)
    except StorageError as exc:  # a read-only or busy log: the next start sweeps again
        logger.warning("cannot mark interrupted episodes: %s", exc)


def persona_backend(backends: LoadedModels, persona: Persona, version: PersonaVersion) -> Backend:
    """The persona's model with ``version``'s adapter, after checking it was trained on this very GGUF."""
    base = backends.get(persona.model)
    if isinstance(base, LocalModel) and file_hash(base.path, backends.settings.models_dir) != version.base_hash:
        raise ModelError(
            f"persona version {version.id} was trained on another base model than {base.path.name}",
            "run `council persona use base` (or another version)",
        )
    return backends.adapted(persona.model, version.adapter_path(backends.settings.personas_dir))


def run_episode(
    rt: CouncilRuntime,
    prompt: str,
    on_event: OnEvent | None = None,
    *,
    episode_id: str | None = None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Episode | None:
    """Run one episode to its end and return it as stored in the log.

    The episode is written as ``running`` first, so a crash leaves a trace; a failure marks it ``failed``, and
    Ctrl-C or a signal's ``Interrupt`` ``interrupted``.
    With a ``checkpointer``, every step is saved under the episode id as thread id, and an episode found
    unfinished there resumes where it stopped. ``should_stop`` is asked between steps: when it says yes, the
    episode is left checkpointed and ``None`` is returned.
    """
    episode_id = episode_id or new_episode_id()
    graph = builder.compile(checkpointer=checkpointer)
    config: RunnableConfig = {"configurable": {"thread_id": episode_id}}
    saved = graph.get_state(config).values if checkpointer else {}
    if saved and not graph.get_state(config).next:
        return rt.log.get(episode_id)  # finished before a crash; nothing left to do
    state = cast(EpisodeState, saved) if saved else initial_state(episode_id, prompt)
    if not saved:
        rt.log.save(episode_from_state(rt, state))
    try:
        for chunk in graph.stream(None if saved else state, config, stream_mode="updates", context=rt):
            for node, update in chunk.items():
                state = cast(EpisodeState, {**state, **(update or {})})
                if on_event and (event := event_of(node, update or {})) is not None:
                    on_event(event)
            if should_stop():
                return None
    except BaseException as exc:
        rt.log.save(episode_from_state(rt, _ended(state, exc)))
        raise
    return rt.log.get(episode_id)


def _ended(state: EpisodeState, exc: BaseException) -> EpisodeState:
    """``state`` ended by ``exc``: interrupted by a signal, or failed."""
    interrupt = interruption(exc)
    if interrupt is not None:
        return {**state, "status": "interrupted", "stop_reason": interrupt.reason}
    return {**state, "status": "failed", "stop_reason": f"{type(exc).__name__}: {exc}"}
