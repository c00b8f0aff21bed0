"""The episode log: open (migrating automatically), write and read back episodes."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import selectinload, sessionmaker

from council.core.episode import Decision, Episode, Recollection, ReflectionPoint, Vote
from council.core.errors import NotFoundError, StorageError
from council.store.rows import CommentaryRow, EpisodeRow, RecollectionRow, ReflectionPointRow, SegmentRow, VoteRow

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DBAPI hook
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


_MIGRATING = threading.Lock()  # Alembic's command context is process-global
_PG_MIGRATION_LOCK = 0x636F756E  # one advisory lock id: workers starting together on Postgres migrate in turn


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision``; processes starting at once take turns."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _MIGRATING, engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


class EpisodeLog:
    """The SQL source of truth for episodes. Any SQLAlchemy URL works; SQLite runs in WAL mode."""

    def __init__(self, url: str):
        try:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(url)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            migrate(self.engine)
        except (OperationalError, OSError) as exc:
            raise StorageError(f"cannot open the episode log at {url} ({_short(exc)})", _storage_fix(exc)) from exc
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.file = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
        self._identity = self._stat()

    def _stat(self) -> tuple[int, int] | None:
        if self.file is None:
            return None
        try:
            st = self.file.stat()
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def check(self) -> None:
        """Raise if the SQLite file was deleted or replaced since it was opened: writes would go to a lost file."""
        if self.file is None:
            return
        if self._stat() == self._identity:
            if not os.access(self.file, os.W_OK):
                raise StorageError(f"the episode log {self.file} is not writable", "give this user write access to it")
            return
        what = "deleted" if not self.file.exists() else "replaced"
        raise StorageError(
            f"the episode log {self.file} was {what} while in use",
            "restart, so that writes go to the file at that path",
        )

    def save(self, episode: Episode) -> None:
        """Insert or replace ``episode`` with its segments, reflection points and votes."""
        self.check()
        try:
            with self.sessions.begin() as session:
                existing = session.get(EpisodeRow, episode.episode_id)
                if existing is not None:
                    session.delete(existing)
                    session.flush()
                session.add(_to_row(episode))
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot write episode {episode.episode_id} ({_short(exc)})", _storage_fix(exc)) from exc

    def get(self, episode_id: str) -> Episode:
        """Return the episode whose id is ``episode_id`` or starts with it."""
        with self.sessions() as session:
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
        with self.sessions() as session:
            return [_from_row(row) for row in session.scalars(_loaded(query)).all()]

    def iterate(self, statuses: Iterable[str] | None = None, page: int = 200) -> Iterator[Episode]:
        """Every episode, oldest first (optionally only those with one of ``statuses``), read page by page."""
        query = select(EpisodeRow).order_by(EpisodeRow.created_at, EpisodeRow.id)
        if statuses is not None:
            query = query.where(EpisodeRow.status.in_(list(statuses)))
        offset = 0
        while True:
            with self.sessions() as session:
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
        with self.sessions() as session:
            for row in session.scalars(query):
                said.setdefault(row.pool, {})[row.archetype] = row.text
        return said

    def count(self, statuses: Iterable[str] | None = None) -> int:
        """How many episodes (optionally only those with one of ``statuses``)."""
        query = select(func.count()).select_from(EpisodeRow)
        if statuses is not None:
            query = query.where(EpisodeRow.status.in_(list(statuses)))
        with self.sessions() as session:
            return session.scalar(query) or 0


def _loaded(query):  # noqa: ANN001, ANN202 - SQLAlchemy select
    return query.options(
        selectinload(EpisodeRow.reflection_points).selectinload(ReflectionPointRow.votes),
        selectinload(EpisodeRow.reflection_points).selectinload(ReflectionPointRow.segment),
        selectinload(EpisodeRow.recollections),
    )


def _short(exc: BaseException) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0][:200]


def _storage_fix(exc: BaseException) -> str:
    text = str(exc).lower()
    if "disk" in text or "full" in text:
        return "free disk space under COUNCIL_HOME; nothing already stored was lost"
    if "locked" in text:
        return "another process holds the database; retry, or check for a stuck process"
    return "check database_url and that COUNCIL_HOME is writable"


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
    fields = {n: getattr(row, n) for n in Episode.model_fields if n not in nested and hasattr(row, n)}
    return Episode(episode_id=row.id, **fields, reflection_points=points, recollections=recollections)
