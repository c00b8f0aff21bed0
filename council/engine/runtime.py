"""The live parts an episode runs on, handed to every graph node as langgraph's run context."""

from __future__ import annotations

from dataclasses import dataclass

from archetypes.backends import LoadedModels
from archetypes.definitions import Persona, Pool
from council.core.settings import Settings
from council.engine.persona import PersonaWriter
from council.engine.voting import Council
from council.store.database import Database
from council.store.episodes import EpisodeLog
from memory.vector import VectorMemory


@dataclass
class CouncilRuntime:
    """The live parts an episode runs on."""

    settings: Settings
    persona: Persona
    pool: Pool
    writer: PersonaWriter
    council: Council
    log: EpisodeLog
    memory: VectorMemory | None = None
    persona_version: str = "base"
    backends: LoadedModels | None = None  # every loaded model, for work beyond episodes (training a version)

    @property
    def db(self) -> Database:
        """The application database the episode log writes to (tasks, night pass and versions share it)."""
        return self.log.db

    @property
    def archetype_hashes(self) -> dict[str, str]:
        """Content hash of every archetype on the council and of the persona (``persona:NAME``)."""
        return self.council.hashes | {f"persona:{self.persona.name}": self.persona.content_hash()}

    def model_ids(self) -> dict[str, str]:
        """Which model plays each role."""
        return {"persona": self.writer.backend.model_id} | {
            f"archetype:{name}": model for name, model in self.council.model_ids().items()
        }
