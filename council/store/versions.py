"""Persona versions: each trained adapter, its gate result, and which version each persona runs with."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Select, func, select

from council.core.errors import NotFoundError
from council.core.training import GateResult, TrainingFigures
from council.store.database import Database
from council.store.rows import PersonaSelectionRow, PersonaVersionRow

BASE = "base"


class PersonaVersion(BaseModel):
    """One trained version of a persona (``base`` is the untrained GGUF and has no row)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    persona: str
    number: int
    created_at: datetime
    parent: str = Field(description="the version training started from")
    adapter: str = Field(description="the GGUF LoRA adapter, relative to $COUNCIL_HOME/personas")
    dataset_hash: str
    base_hash: str = Field(description="SHA-256 of the base GGUF it was trained on")
    pair_ids: list[str] = Field(default_factory=list, description="pairs it was trained on")
    training: TrainingFigures | None = None
    gate: GateResult | None = None
    promoted: bool = False
    reason: str = ""

    @field_validator("training", "gate", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:  # noqa: ANN401 - a stored JSON value
        return value or None  # rows stored before these were typed hold {} where nothing was measured

    def adapter_path(self, personas_dir: Path) -> Path:
        """Where the adapter is, under ``personas_dir`` (so moving COUNCIL_HOME moves it too)."""
        return personas_dir / self.adapter

    def peft_dir(self, personas_dir: Path) -> Path:
        """The same adapter in peft's format, which training continues from."""
        return self.adapter_path(personas_dir).parent / "peft"


class PersonaVersions:
    """Reads and writes persona versions and selections in the application database."""

    def __init__(self, db: Database, personas_dir: Path):
        self.db = db
        self.personas_dir = personas_dir

    def next_id(self, persona: str) -> tuple[str, int]:
        """The id and number the next version of ``persona`` gets."""
        with self.db.sessions() as session:
            query = select(func.max(PersonaVersionRow.number)).where(PersonaVersionRow.persona == persona)
            last = session.scalar(query)
        number = (last or 0) + 1
        return f"v{number}", number

    def add(self, version: PersonaVersion) -> None:
        """Store ``version``; a promoted one is selected at once, unless the selection moved since training began.

        A promotion does not override a `persona use` or `rollback` made while the version trained: it is then
        stored unpromoted, with that reason.
        """
        with self.db.sessions.begin() as session:
            current = session.scalar(self._in_use(version.persona).limit(1))
            if version.promoted and (current.version if current else BASE) != version.parent:
                version = version.model_copy(
                    update={"promoted": False, "reason": f"the persona switched from {version.parent} while it trained"}
                )
            session.add(PersonaVersionRow(**version.model_dump()))
            if version.promoted:
                session.add(self._selection(version.persona, version.id))

    def all(self, persona: str) -> list[PersonaVersion]:
        """Every version of ``persona``, oldest first."""
        with self.db.sessions() as session:
            rows = session.scalars(
                select(PersonaVersionRow).where(PersonaVersionRow.persona == persona).order_by(PersonaVersionRow.number)
            )
            return [PersonaVersion.model_validate(r) for r in rows]

    def get(self, persona: str, version: str) -> PersonaVersion | None:
        """Version ``version`` of ``persona``; ``None`` for ``base``."""
        if version == BASE:
            return None
        with self.db.sessions() as session:
            row = session.scalar(
                select(PersonaVersionRow).where(PersonaVersionRow.persona == persona, PersonaVersionRow.id == version)
            )
        if row is None:
            raise NotFoundError(f"persona {persona} has no version {version!r}", "run `council persona versions`")
        return PersonaVersion.model_validate(row)

    def current(self, persona: str) -> str:
        """The version ``persona`` runs with: the newest selection not rolled back, else ``base``."""
        with self.db.sessions() as session:
            row = session.scalar(self._in_use(persona).limit(1))
            return row.version if row else BASE

    def active(self, persona: str) -> PersonaVersion | None:
        """The version ``persona`` runs with, or ``None`` for its base model."""
        return self.get(persona, self.current(persona))

    def use(self, persona: str, version: str) -> PersonaVersion | None:
        """Run ``persona`` with ``version`` (any stored version, promoted or not, or ``base``) from now on."""
        found = self.get(persona, version)
        if found is not None and not found.adapter_path(self.personas_dir).is_file():
            raise NotFoundError(
                f"the adapter of {persona} {version} is missing ({found.adapter_path(self.personas_dir)})",
                "choose another version or base",
            )
        with self.db.sessions.begin() as session:
            session.add(self._selection(persona, version))
        return found

    def rollback(self, persona: str) -> str:
        """Undo the newest selection; returns the version now in use."""
        with self.db.sessions.begin() as session:
            row = session.scalar(self._in_use(persona).limit(1))
            if row is None:
                raise NotFoundError(f"persona {persona} already runs its base model", "nothing to roll back")
            row.rolled_back_at = datetime.now(timezone.utc)
        return self.current(persona)

    def trained_pairs(self, persona: str) -> set[str]:
        """Ids of the pairs the version in use and its ancestors were trained on (what the persona has learnt)."""
        by_id = {v.id: v for v in self.all(persona)}
        pairs: set[str] = set()
        version = by_id.get(self.current(persona))
        while version is not None:
            pairs |= set(version.pair_ids)
            version = by_id.get(version.parent)
        return pairs

    @staticmethod
    def _in_use(persona: str) -> Select[PersonaSelectionRow]:
        return (
            select(PersonaSelectionRow)
            .where(PersonaSelectionRow.persona == persona, PersonaSelectionRow.rolled_back_at.is_(None))
            .order_by(PersonaSelectionRow.id.desc())
        )

    @staticmethod
    def _selection(persona: str, version: str) -> PersonaSelectionRow:
        return PersonaSelectionRow(persona=persona, version=version, selected_at=datetime.now(timezone.utc))
