"""Typed records of what happened in an episode: votes, decisions, reflection points."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Literal, TypedDict

from pydantic import BaseModel, Field, computed_field

from archetypes.definitions import Verdict
from council.core.modelock import parse

# budget: closed at its token budget; interrupted: stopped by a signal, or its process was found gone
EpisodeStatus = Literal["running", "finished", "let_go", "budget", "failed", "interrupted"]
ENDED: tuple[EpisodeStatus, ...] = ("finished", "let_go", "budget")  # an episode that ran to its end
MemoryKind = Literal["episode", "request", "answer", "reflection", "commentary"]


class PendingSegment(TypedDict):
    """The segment the council votes on: its text, where it paused, and how many times it was rewritten."""

    text: str
    boundary: str
    ended: bool  # the persona finished its answer with this segment
    attempt: int
    since: float  # when it was first drafted (wall clock), for the pool's revision time


class Vote(BaseModel):
    """One archetype's vote. ``verdict`` is None when the archetype abstained (it failed); ``error`` says why."""

    archetype: str
    verdict: Verdict | None
    confidence: float = Field(ge=0, le=1)
    probs: dict[str, float] = Field(
        default_factory=dict,
        description="verdict probabilities: a token vote's renormalised ones; a judge's P(let_go), P(revise) and "
        "P(continue) = 1 - the larger of the two",
    )
    coverage: dict[str, float] = Field(
        default_factory=dict, description="per judgment, how close the text is to what the judge learnt to object to"
    )
    steering: bool = Field(
        False, description="a judge found sentences addressed to whoever judges (left out; read as written if all)"
    )
    mass: float = Field(0.0, description="probability the model put on any verdict word at all")
    comment: str | None = None
    error: str | None = None


class Decision(BaseModel):
    """What the council decided, by which rule, with how much support, and who dissented."""

    decision: Verdict
    rule: str
    support: float = Field(ge=0, le=1, description="share of voting weight behind the decision")
    dissent: list[str] = Field(default_factory=list, description="archetypes that voted otherwise")
    abstained: list[str] = Field(default_factory=list)
    reason: str = ""


class ReflectionPoint(BaseModel):
    """One pause: the segment judged, how the pause was reached, the votes and the decision."""

    index: int
    segment_index: int
    attempt: int = Field(0, description="0 for the first draft of a segment, n for its n-th revision")
    boundary: str
    segment: str
    votes: list[Vote]
    decision: Decision


class Recollection(BaseModel):
    """One past episode recalled: the item of it that matched best, how similar, and the text the persona sees."""

    memory_id: str = Field(description="the best-matching item")
    episode_id: str
    kind: MemoryKind = Field(description="the best-matching item's kind")
    score: float = Field(description="cosine similarity of the best-matching item to the prompt")
    text: str = Field(description="the exchange, or the reflection or commentary that matched")


class Episode(BaseModel):
    """A whole interaction, as stored in the episode log and printed by ``council run --json``."""

    episode_id: str
    created_at: datetime
    finished_at: datetime | None = None
    prompt: str
    persona: str
    pool: str
    status: EpisodeStatus
    stop_reason: str = ""
    final_text: str = ""
    transcript: str = Field("", description="the answer with the stop-reflect marker at every reflection point")
    model_ids: dict[str, str] = Field(default_factory=dict, description="role -> model id")
    archetype_hashes: dict[str, str] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    reflection_points: list[ReflectionPoint] = Field(default_factory=list)
    recalled: str = Field("", description="the memory digest the persona saw")
    persona_version: str = Field("base", description="the trained persona version it ran with")
    recollections: list[Recollection] = Field(default_factory=list)
    owner: str = Field(
        "",
        description="the process that last wrote it (host:pid); a running episode whose process ended was interrupted",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mode_spans(self) -> list[dict[str, object]]:
        """Who speaks where in the final text: the AI, or a human it quotes (offsets into ``final_text``)."""
        return [asdict(span) for span in parse(self.final_text).spans]
