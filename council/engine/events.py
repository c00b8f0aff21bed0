"""What an episode's stream tells its listeners: one typed event per step of the graph.

``run_episode`` turns each graph update into one of these, so the terminal, the server and the worker match on
types and never on node names; this module is the one place that knows which node says what.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from council.core.episode import EpisodeStatus, PendingSegment, Recollection, ReflectionPoint


@dataclass(frozen=True)
class Recalled:
    """Memory was searched: what it recalled, best first (empty when nothing came up or recall is off)."""

    recollections: list[Recollection]


@dataclass(frozen=True)
class Drafted:
    """The persona wrote a segment up to a reflection point; the council votes on it next."""

    segment: PendingSegment


@dataclass(frozen=True)
class Voted:
    """The council voted at a reflection point; ``answer`` is the answer so far when it accepted the segment."""

    point: ReflectionPoint
    answer: str | None


@dataclass(frozen=True)
class Revised:
    """The persona rewrote the segment with the comments on ``point``'s votes; the council votes again."""

    point: ReflectionPoint
    segment: PendingSegment


@dataclass(frozen=True)
class Closed:
    """The answer was closed gracefully: the council let go, or the token budget was spent (``status`` says)."""

    answer: str
    status: EpisodeStatus

    @property
    def closing(self) -> str:
        """The closing words added to the answer."""
        return self.answer.rsplit("\n\n", 1)[-1]


EpisodeEvent = Recalled | Drafted | Voted | Revised | Closed


def event_of(node: str, update: dict[str, Any]) -> EpisodeEvent | None:
    """The event a graph node's ``update`` makes, or ``None`` for steps nobody shows (routing, the log)."""
    points = update.get("reflection_points")
    pending: PendingSegment | None = update.get("pending")
    if node == "recall":
        return Recalled([Recollection.model_validate(r) for r in update.get("recollections", [])])
    if node == "draft" and pending:
        return Drafted(pending)
    if node == "council" and points:
        return Voted(ReflectionPoint.model_validate(points[-1]), update.get("answer"))
    if node == "revise" and pending and points:
        return Revised(ReflectionPoint.model_validate(points[-1]), pending)
    if node == "let_go":
        return Closed(update.get("answer", ""), update.get("status", "let_go"))
    return None
