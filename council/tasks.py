"""The daemon's durable task queue, kept in the episode log's database.

API requests and `council ask` prompts are tasks. A task is claimed by the one worker that owns the models,
runs as one episode (whose id is fixed when the task is queued, so a resumed task never makes a second
episode), and ends ``done`` or ``failed``. A task still ``running`` at start-up was interrupted: it resumes.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import func, select, update

from council.errors import NotFoundError
from memory.log import EpisodeLog
from memory.models import TaskRow

TaskStatus = Literal["queued", "running", "done", "failed"]
TaskSource = Literal["api", "inbox"]
PRIORITY = {"api": 0, "inbox": 10}
MAX_ATTEMPTS = 3


def new_task_id() -> str:
    """A fresh random task id."""
    return uuid.uuid4().hex[:16]


class TaskParams(BaseModel):
    """Per-task overrides of the daemon's settings."""

    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = None


class Task(BaseModel):
    """One queued prompt and what became of it."""

    id: str
    episode_id: str
    source: TaskSource
    status: TaskStatus
    prompt: str
    params: TaskParams
    error: str | None = None
    created_at: datetime
    finished_at: datetime | None = None


def _task(row: TaskRow) -> Task:
    return Task.model_validate(row, from_attributes=True)


class TaskQueue:
    """Queue operations; each is one short transaction, safe beside other processes on the same database."""

    def __init__(self, log: EpisodeLog):
        self.log = log

    def put(
        self, prompt: str, source: TaskSource, params: TaskParams | None = None, task_id: str | None = None
    ) -> Task:
        """Queue ``prompt``; API requests go before inbox prompts. ``task_id`` lets a caller listen first."""
        row = TaskRow(
            id=task_id or new_task_id(),
            episode_id=uuid.uuid4().hex[:16],
            source=source,
            priority=PRIORITY[source],
            status="queued",
            prompt=prompt,
            params=(params or TaskParams()).model_dump(exclude_none=True),
            created_at=datetime.now(timezone.utc),
        )
        with self.log.sessions.begin() as session:
            session.add(row)
        return _task(row)

    def claim(self) -> Task | None:
        """Take the next task: an interrupted one first, then by priority and age.

        Each claim counts an attempt; an interrupted task already tried ``MAX_ATTEMPTS`` times is marked failed
        instead, so a prompt that keeps killing the daemon cannot crash-loop it.
        """
        while True:
            with self.log.sessions.begin() as session:
                query = (
                    select(TaskRow)
                    .where(TaskRow.status.in_(("running", "queued")))
                    .order_by((TaskRow.status == "running").desc(), TaskRow.priority, TaskRow.created_at)
                    .limit(1)
                )
                row = session.scalars(query).first()
                if row is None:
                    return None
                now = datetime.now(timezone.utc)
                if row.status == "running" and row.attempts >= MAX_ATTEMPTS:
                    row.status, row.finished_at = "failed", now
                    row.error = f"gave up after {row.attempts} attempts: the daemon stopped during this task each time"
                    continue
                claimed = session.execute(
                    update(TaskRow)
                    .where(TaskRow.id == row.id, TaskRow.status == row.status, TaskRow.attempts == row.attempts)
                    .values(status="running", started_at=row.started_at or now, attempts=row.attempts + 1)
                )
                if claimed.rowcount != 1:
                    continue
                session.refresh(row)
                return _task(row)

    def finish(self, task_id: str, status: TaskStatus, error: str | None = None) -> None:
        """Record how a task ended."""
        with self.log.sessions.begin() as session:
            session.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id)
                .values(status=status, error=error, finished_at=datetime.now(timezone.utc))
            )

    def get(self, task_id: str) -> Task:
        """One task by id."""
        with self.log.sessions() as session:
            row = session.get(TaskRow, task_id)
            if row is None:
                raise NotFoundError(f"no task {task_id!r}", "check the id printed by `council ask`")
            return _task(row)

    def counts(self) -> dict[str, Any]:
        """Tasks per status."""
        with self.log.sessions() as session:
            found = dict(session.execute(select(TaskRow.status, func.count()).group_by(TaskRow.status)).all())
        return {s: found.get(s, 0) for s in ("queued", "running", "done", "failed")}
