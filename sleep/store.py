"""What the night writes to the episode log: commentary, preference pairs and "slept" marks, one episode at a time."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from council.errors import StorageError
from memory.log import EpisodeLog
from memory.models import CommentaryRow, EpisodeRow, PreferencePairRow, SleptRow
from memory.vector import REMEMBERED
from sleep.pairs import PreferencePair


class SleepStore:
    """Reads and writes the night's tables through the episode log's engine."""

    def __init__(self, log: EpisodeLog, retries: int = 5):
        self.log = log
        self.retries = retries

    def pending(self, pool: str, since: datetime | None = None) -> list[str]:
        """Finished episodes ``pool`` has not slept on, oldest first (only those created at or after ``since``)."""
        slept = select(SleptRow.episode_id).where(SleptRow.pool == pool)
        query = (
            select(EpisodeRow.id)
            .where(EpisodeRow.status.in_(REMEMBERED), EpisodeRow.id.not_in(slept))
            .order_by(EpisodeRow.created_at, EpisodeRow.id)
        )
        if since is not None:
            query = query.where(EpisodeRow.created_at >= since)
        with self.log.sessions() as session:
            return list(session.scalars(query))

    def commit(self, episode_id: str, pool: str, commentary: dict[str, str], pairs: list[PreferencePair]) -> None:
        """Write one episode's commentary, new pairs and slept mark in one transaction, retrying a locked database."""
        now = datetime.now(timezone.utc)
        for attempt in range(self.retries):
            try:
                with self.log.sessions.begin() as session:
                    old = select(CommentaryRow).where(
                        CommentaryRow.episode_id == episode_id, CommentaryRow.pool == pool
                    )
                    for row in session.scalars(old):
                        session.delete(row)
                    session.flush()
                    for name, text in commentary.items():
                        session.add(
                            CommentaryRow(episode_id=episode_id, pool=pool, archetype=name, text=text, created_at=now)
                        )
                    for pair in pairs:
                        if session.get(PreferencePairRow, pair.id) is None:
                            session.add(
                                PreferencePairRow(
                                    id=pair.id,
                                    episode_id=episode_id,
                                    pool=pool,
                                    source=pair.source,
                                    data=pair.model_dump(mode="json"),
                                    created_at=now,
                                )
                            )
                    session.merge(SleptRow(episode_id=episode_id, pool=pool, pairs=len(pairs), slept_at=now))
                return
            except OperationalError as exc:
                if "locked" not in str(exc).lower() or attempt == self.retries - 1:
                    raise StorageError(
                        f"cannot record sleep on episode {episode_id} ({exc.orig})",
                        "retry `council sleep`; finished episodes are kept",
                    ) from exc
                time.sleep(0.5 * (attempt + 1))

    def pairs(self, pool: str) -> list[PreferencePair]:
        """Every stored pair of ``pool``, in the order the episodes happened."""
        query = (
            select(PreferencePairRow.data)
            .join(EpisodeRow, EpisodeRow.id == PreferencePairRow.episode_id)
            .where(PreferencePairRow.pool == pool)
            .order_by(
                EpisodeRow.created_at, PreferencePairRow.episode_id, PreferencePairRow.source, PreferencePairRow.id
            )
        )
        with self.log.sessions() as session:
            return [PreferencePair.model_validate(data) for data in session.scalars(query)]
