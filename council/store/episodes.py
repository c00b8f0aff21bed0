"""The episode repository: write and read back episodes in the application database."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from sqlalchemy import Select, func, inspect, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import selectinload

from council.core.episode import ENDED, Decision, Episode, Recollection, ReflectionPoint, Vote
from council.core.errors import NotFoundError, StorageError
from council.store.database import Database, short, storage_fix
from council.store.rows import (
    CommentaryRow,
    EpisodeRow,
    RecollectionRow,
    ReflectionPointRow,
    SegmentRow,
    TaskRow,
    VoteRow,
)
from council.store.tasks import worker_gone

logger = logging.getLogger(__name__)


class EpisodeLog:
    """Episodes with their segments, reflection points, votes and recollections."""

    def __init__(self, db: Database):
        self.db = db

    def save(self, episode: Episode) -> None:
        """Insert or replace ``episode`` with its segments, reflection points and votes.

        An episode that has ended is never replaced by one that has not: a worker that lost its task's lease may
        still be running its copy, and what it writes (``running`` when it starts, ``failed`` or ``interrupted``
        when it stops) must not undo the finished episode another worker logged.
        """
        self.db.check()
        try:
            with self.db.sessions.begin() as session:
                existing = session.get(EpisodeRow, episode.episode_id)
                if existing is not None and existing.status in ENDED and episode.status not in ENDED:
                    logger.warning("episode %s has ended; a stale %s copy was not written", existing.id, episode.status)
                    return
                if existing is not None:
                    session.delete(existing)
                    session.flush()
                session.add(_to_row(episode))
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot write episode {episode.episode_id} ({short(exc)})", storage_fix(exc)) from exc

    def interrupt_orphans(self) -> list[str]:
        """Mark ``interrupted`` every running episode whose process is provably gone; return their ids.

        Provably: the process ran on this host and has ended (on another host it may still run). An episode that a
        queued or running task holds is left running: a worker resumes it from its checkpoint.
        """
        held = select(TaskRow.episode_id).where(TaskRow.status.in_(("queued", "running")))
        running = select(EpisodeRow.id, EpisodeRow.owner).where(
            EpisodeRow.status == "running", EpisodeRow.id.not_in(held)
        )
        self.db.check()
        try:
            with self.db.sessions.begin() as session:
                gone = {id_: owner for id_, owner in session.execute(running) if worker_gone(owner)}
                for id_, owner in gone.items():
                    session.execute(
                        update(EpisodeRow)
                        .where(EpisodeRow.id == id_, EpisodeRow.status == "running")
                        .values(status="interrupted", stop_reason=f"interrupted: its process {owner} ended mid-run")
                    )
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot mark interrupted episodes ({short(exc)})", storage_fix(exc)) from exc
        return sorted(gone)

    def get(self, episode_id: str) -> Episode:
        """Return the episode whose id is ``episode_id`` or starts with it."""
        with self.db.sessions() as session:
            rows = session.scalars(
                _loaded(select(EpisodeRow).where(EpisodeRow.id.startswith(episode_id, autoescape=True)).limit(2))
            ).all()
            if len(rows) != 1:
                what = "no episode" if not rows else "more than one episode"
                raise NotFoundError(f"{what} matches id {episode_id!r}", "run `council logs list` to see the ids")
            return _from_row(rows[0])

    def list(self, limit: int = 20, pool: str | None = None) -> list[Episode]:
        """Return the newest episodes first."""
        query = select(EpisodeRow).order_by(EpisodeRow.created_at.desc()).limit(limit)
        if pool:
            query = query.where(EpisodeRow.pool == pool)
        with self.db.sessions() as session:
            return [_from_row(row) for row in session.scalars(_loaded(query)).all()]

    def iterate(self, statuses: Iterable[str] | None = None, page: int = 200) -> Iterator[Episode]:
        """Every episode, oldest first (optionally only those with one of ``statuses``), read page by page."""
        query = select(EpisodeRow).order_by(EpisodeRow.created_at, EpisodeRow.id)
        if statuses is not None:
            query = query.where(EpisodeRow.status.in_(list(statuses)))
        offset = 0
        while True:
            with self.db.sessions() as session:
                rows = session.scalars(_loaded(query.offset(offset).limit(page))).all()
                episodes = [_from_row(row) for row in rows]
            yield from episodes
            if len(rows) < page:
                return
            offset += page

    def commentaries(self, episode_id: str) -> dict[str, dict[str, str]]:
        """The night commentary on one episode: pool -> archetype -> text."""
        query = select(CommentaryRow).where(CommentaryRow.episode_id == episode_id).order_by(CommentaryRow.id)
        said: dict[str, dict[str, str]] = {}
        with self.db.sessions() as session:
            for row in session.scalars(query):
                said.setdefault(row.pool, {})[row.archetype] = row.text
        return said

    def count(self, statuses: Iterable[str] | None = None) -> int:
        """How many episodes (optionally only those with one of ``statuses``)."""
        query = select(func.count()).select_from(EpisodeRow)
        if statuses is not None:
            query = query.where(EpisodeRow.status.in_(list(statuses)))
        with self.db.sessions() as session:
            return session.scalar(query) or 0


def _loaded(query: Select[EpisodeRow]) -> Select[EpisodeRow]:
    return query.options(
        selectinload(EpisodeRow.reflection_points).selectinload(ReflectionPointRow.votes),
        selectinload(EpisodeRow.reflection_points).selectinload(ReflectionPointRow.segment),
        selectinload(EpisodeRow.recollections),
    )


def _to_row(ep: Episode) -> EpisodeRow:
    row = EpisodeRow(
        id=ep.episode_id,
        created_at=ep.created_at,
        finished_at=ep.finished_at,
        prompt=ep.prompt,
        persona=ep.persona,
        pool=ep.pool,
        status=ep.status,
        stop_reason=ep.stop_reason,
        final_text=ep.final_text,
        transcript=ep.transcript,
        model_ids=ep.model_ids,
        archetype_hashes=ep.archetype_hashes,
        timings=ep.timings,
        recalled=ep.recalled,
        persona_version=ep.persona_version,
        owner=ep.owner,
        recollections=[
            RecollectionRow(
                rank=rank,
                memory_id=r.memory_id,
                source_episode_id=r.episode_id,
                kind=r.kind,
                score=r.score,
                text=r.text,
            )
            for rank, r in enumerate(ep.recollections)
        ],
    )
    last_attempt = {rp.segment_index: rp.attempt for rp in ep.reflection_points}
    for rp in ep.reflection_points:
        segment = SegmentRow(
            index=rp.segment_index,
            attempt=rp.attempt,
            text=rp.segment,
            boundary=rp.boundary,
            accepted=last_attempt[rp.segment_index] == rp.attempt,
        )
        row.segments.append(segment)
        d = rp.decision
        point = ReflectionPointRow(
            index=rp.index,
            segment=segment,
            decision=d.decision,
            rule=d.rule,
            support=d.support,
            dissent=d.dissent,
            abstained=d.abstained,
            reason=d.reason,
        )
        point.votes = [VoteRow(**v.model_dump()) for v in rp.votes]
        row.reflection_points.append(point)
    return row


def _from_row(row: EpisodeRow) -> Episode:
    points = [
        ReflectionPoint(
            index=p.index,
            segment_index=p.segment.index if p.segment else -1,
            attempt=p.segment.attempt if p.segment else 0,
            boundary=p.segment.boundary if p.segment else "",
            segment=p.segment.text if p.segment else "",
            votes=[Vote.model_validate(v, from_attributes=True) for v in p.votes],
            decision=Decision.model_validate(p, from_attributes=True),
        )
        for p in row.reflection_points
    ]
    recollections = [
        Recollection(memory_id=r.memory_id, episode_id=r.source_episode_id, kind=r.kind, score=r.score, text=r.text)
        for r in row.recollections
    ]
    nested = ("reflection_points", "recollections")
    columns = {a.key: a.value for a in inspect(row).attrs}
    fields = {n: columns[n] for n in Episode.model_fields if n not in nested and n in columns}
    return Episode(episode_id=row.id, **fields, reflection_points=points, recollections=recollections)
