"""What the night writes to the database: commentary, preference pairs and "slept" marks, one episode at a time."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from council.core.errors import StorageError
from council.core.pairs import PreferencePair
from council.store.database import Database, updated_one
from council.store.rows import CommentaryRow, EpisodeRow, PreferencePairRow, SleepClaimRow, SleptRow
from council.store.tasks import worker_gone
from memory.vector import REMEMBERED

CLAIM_S = 900.0  # a sleeper that died frees its episode after this long


class SleepStore:
    """Reads and writes the night's tables in the application database."""

    def __init__(self, db: Database, retries: int = 5):
        self.db = db
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
        with self.db.sessions() as session:
            return list(session.scalars(query))

    def claim(self, episode_id: str, pool: str, sleeper: str, lease_s: float = CLAIM_S) -> bool:
        """Take ``episode_id`` for ``sleeper``'s night: False if it was slept on or another sleeper's claim is live.

        Two night passes on one store (two hosts, or two cron runs) thus never comment on the same episode. A claim
        of a sleeper that died is taken over at once on its own host (its process is gone), elsewhere once it
        expires.
        """
        now = datetime.now(timezone.utc)
        until = now + timedelta(seconds=lease_s)
        try:
            with self.db.sessions.begin() as session:
                if session.get(SleptRow, (episode_id, pool)) is not None:
                    return False
                held = session.get(SleepClaimRow, (episode_id, pool))
                if held is None:
                    session.add(SleepClaimRow(episode_id=episode_id, pool=pool, sleeper=sleeper, lease_until=until))
                    return True
                if held.sleeper != sleeper and _aware(held.lease_until) > now and not worker_gone(held.sleeper):
                    return False
                return updated_one(
                    session,
                    update(SleepClaimRow)
                    .where(
                        SleepClaimRow.episode_id == episode_id,
                        SleepClaimRow.pool == pool,
                        SleepClaimRow.sleeper == held.sleeper,
                        SleepClaimRow.lease_until == held.lease_until,
                    )
                    .values(sleeper=sleeper, lease_until=until),
                )
        except IntegrityError:  # another sleeper inserted its claim first
            return False

    def commit(self, episode_id: str, pool: str, commentary: dict[str, str], pairs: list[PreferencePair]) -> None:
        """Write one episode's commentary, new pairs and slept mark in one transaction, retrying a locked database."""
        now = datetime.now(timezone.utc)
        for attempt in range(self.retries):
            try:
                with self.db.sessions.begin() as session:
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
                    session.execute(
                        delete(SleepClaimRow).where(SleepClaimRow.episode_id == episode_id, SleepClaimRow.pool == pool)
                    )
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
        with self.db.sessions() as session:
            return [PreferencePair.model_validate(data) for data in session.scalars(query)]


def _aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every time stored here is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
