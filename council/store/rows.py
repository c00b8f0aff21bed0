"""SQLAlchemy 2.x tables of the episode log. The schema is created by Alembic migrations only."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """Declarative base of the log's tables."""


class EpisodeRow(Base):
    """One episode: prompt, final text, pool, models, timings, status."""

    __tablename__ = "episodes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    prompt: Mapped[str] = mapped_column(Text)
    persona: Mapped[str] = mapped_column(String(64))
    pool: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    stop_reason: Mapped[str] = mapped_column(Text, default="")
    final_text: Mapped[str] = mapped_column(Text, default="")
    transcript: Mapped[str] = mapped_column(Text, default="")
    model_ids: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    archetype_hashes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    recalled: Mapped[str] = mapped_column(Text, default="")
    persona_version: Mapped[str] = mapped_column(String(32), default="base")
    owner: Mapped[str] = mapped_column(String(64), default="")

    segments: Mapped[list[SegmentRow]] = relationship(
        back_populates="episode", cascade="all, delete-orphan", order_by="SegmentRow.id"
    )
    reflection_points: Mapped[list[ReflectionPointRow]] = relationship(
        back_populates="episode", cascade="all, delete-orphan", order_by="ReflectionPointRow.index"
    )
    recollections: Mapped[list[RecollectionRow]] = relationship(
        cascade="all, delete-orphan", order_by="RecollectionRow.rank"
    )


class SegmentRow(Base):
    """One version of one segment: attempt 0 is the first draft, later attempts are revisions."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    text: Mapped[str] = mapped_column(Text)
    boundary: Mapped[str] = mapped_column(String(16))
    accepted: Mapped[bool] = mapped_column(Boolean, default=False)

    episode: Mapped[EpisodeRow] = relationship(back_populates="segments")


class ReflectionPointRow(Base):
    """One pause of the persona and the council's decision there, with its dissent."""

    __tablename__ = "reflection_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    segment_id: Mapped[int | None] = mapped_column(ForeignKey("segments.id", ondelete="SET NULL"))
    decision: Mapped[str] = mapped_column(String(16))
    rule: Mapped[str] = mapped_column(String(32))
    support: Mapped[float] = mapped_column(Float)
    dissent: Mapped[list[str]] = mapped_column(JSON, default=list)
    abstained: Mapped[list[str]] = mapped_column(JSON, default=list)
    reason: Mapped[str] = mapped_column(Text, default="")

    episode: Mapped[EpisodeRow] = relationship(back_populates="reflection_points")
    segment: Mapped[SegmentRow | None] = relationship()
    votes: Mapped[list[VoteRow]] = relationship(cascade="all, delete-orphan", order_by="VoteRow.id")


class VoteRow(Base):
    """One archetype's vote: parsed verdict next to the raw probabilities; a NULL verdict is an abstention."""

    __tablename__ = "votes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reflection_point_id: Mapped[int] = mapped_column(ForeignKey("reflection_points.id", ondelete="CASCADE"), index=True)
    archetype: Mapped[str] = mapped_column(String(64))
    verdict: Mapped[str | None] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float)
    probs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    coverage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    steering: Mapped[bool] = mapped_column(Boolean, default=False)
    mass: Mapped[float] = mapped_column(Float, default=0.0)
    comment: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)


class RecollectionRow(Base):
    """One memory recalled into an episode, with the text the persona saw."""

    __tablename__ = "recollections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    rank: Mapped[int] = mapped_column(Integer)
    memory_id: Mapped[str] = mapped_column(String(64))
    source_episode_id: Mapped[str] = mapped_column(String(32), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)
    text: Mapped[str] = mapped_column(Text)


class CommentaryRow(Base):
    """One archetype's night-time commentary on one episode (the "dream")."""

    __tablename__ = "commentaries"
    __table_args__ = (UniqueConstraint("episode_id", "pool", "archetype", name="uq_commentary"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    pool: Mapped[str] = mapped_column(String(64))
    archetype: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PreferencePairRow(Base):
    """One preference pair; ``data`` holds the exported row (a ``sleep.preferences.PreferencePair``)."""

    __tablename__ = "preference_pairs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    pool: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SleptRow(Base):
    """An episode a pool has slept on: written in the same transaction as its commentary and pairs."""

    __tablename__ = "slept"

    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), primary_key=True)
    pool: Mapped[str] = mapped_column(String(64), primary_key=True)
    pairs: Mapped[int] = mapped_column(Integer)
    slept_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class SleepClaimRow(Base):
    """An episode a night pass is working on; deleted when its slept mark is written, or taken over when it expires."""

    __tablename__ = "sleep_claims"

    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), primary_key=True)
    pool: Mapped[str] = mapped_column(String(64), primary_key=True)
    sleeper: Mapped[str] = mapped_column(String(64))
    lease_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TaskRow(Base):
    """One unit of the daemon's work: an API request or an inbox prompt, and what became of it."""

    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    episode_id: Mapped[str] = mapped_column(String(32), unique=True)
    source: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PersonaVersionRow(Base):
    """A trained LoRA adapter of a persona, with what it was trained on and how its gate went."""

    __tablename__ = "persona_versions"

    persona: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    number: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    parent: Mapped[str] = mapped_column(String(32))
    adapter: Mapped[str] = mapped_column(Text, doc="relative to $COUNCIL_HOME/personas")
    dataset_hash: Mapped[str] = mapped_column(String(64))
    base_hash: Mapped[str] = mapped_column(String(64))
    pair_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    training: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (UniqueConstraint("persona", "number"),)


class PersonaSelectionRow(Base):
    """Which version a persona runs with, as a history: the newest row not rolled back is in use."""

    __tablename__ = "persona_selections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    persona: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(32))
    selected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rolled_back_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
