"""The daemon's durable task queue, kept in the application database.

API requests and `council ask` prompts are tasks. A worker claims a task with a lease that it renews while it
works; the task runs as one episode (whose id is fixed when the task is queued, so a task taken over never
makes a second episode) and ends ``done`` or ``failed``. A task whose lease ran out was interrupted: any worker
may take it over. The one worker of the embedded default (SQLite and an embedded Chroma, kept alone by a lock)
takes over every ``running`` task at start-up, since nobody else can be running it.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import and_, func, or_, select, true, update

from council.core.errors import NotFoundError
from council.store.database import Database, updated_one
from council.store.rows import TaskRow

TaskStatus = Literal["queued", "running", "done", "failed"]
TaskSource = Literal["api", "inbox"]
PRIORITY = {"api": 0, "inbox": 10}
MAX_ATTEMPTS = 3
LEASE_S = 30.0  # a worker renews its lease every third of this; a task whose lease ran out can be taken over


def new_task_id() -> str:
    """A fresh random task id."""
    return uuid.uuid4().hex[:16]


def this_process() -> str:
    """Host and process id, as ``worker_gone`` reads them."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


def new_worker_id() -> str:
    """Host, process and a random suffix: unique among the workers sharing a queue."""
    return f"{this_process()}:{uuid.uuid4().hex[:6]}"


def worker_gone(worker_id: str) -> bool:
    """True when ``worker_id`` (or ``this_process()``) ran on this host and its process has ended.

    Elsewhere, only a lease can tell.
    """
    host, _, rest = worker_id.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname()[:40] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, under another user
        pass
    return False


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

    def __init__(self, db: Database):
        self.db = db

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
        with self.db.sessions.begin() as session:
            session.add(row)
        return _task(row)

    def claim(self, worker: str, lease_s: float = LEASE_S, take_over: bool = False) -> Task | None:
        """Take the next task for ``worker``: an interrupted one first, then by priority and age.

        Interrupted means running under a lease that ran out, or, with ``take_over``, any running task (for a
        worker that a lock keeps alone). The claim records ``worker`` and a lease of ``lease_s`` seconds. Each
        claim counts an attempt; an interrupted task already tried ``MAX_ATTEMPTS`` times is marked failed
        instead, so a prompt that keeps killing its worker cannot crash-loop it. On Postgres, rows another
        worker is claiming are skipped (``FOR UPDATE SKIP LOCKED``); on SQLite the one writer at a time and the
        conditional update below make the claim just as exclusive.
        """
        while True:
            with self.db.sessions.begin() as session:
                now = datetime.now(timezone.utc)
                expired = true() if take_over else or_(TaskRow.lease_until.is_(None), TaskRow.lease_until < now)
                query = (
                    select(TaskRow)
                    .where(or_(TaskRow.status == "queued", and_(TaskRow.status == "running", expired)))
                    .order_by((TaskRow.status == "running").desc(), TaskRow.priority, TaskRow.created_at)
                    .limit(1)
                )
                if self.db.postgres:
                    query = query.with_for_update(skip_locked=True)
                row = session.scalars(query).first()
                if row is None:
                    return None
                if row.status == "running" and row.attempts >= MAX_ATTEMPTS:
                    row.status, row.finished_at = "failed", now
                    row.error = f"gave up after {row.attempts} attempts: its worker stopped during this task each time"
                    continue
                claimed = updated_one(
                    session,
                    update(TaskRow)
                    .where(TaskRow.id == row.id, TaskRow.status == row.status, TaskRow.attempts == row.attempts)
                    .values(
                        status="running",
                        started_at=row.started_at or now,
                        attempts=row.attempts + 1,
                        worker=worker,
                        lease_until=now + timedelta(seconds=lease_s),
                    ),
                )
                if not claimed:
                    continue
                session.refresh(row)
                return _task(row)

    def renew(self, task_id: str, worker: str, lease_s: float = LEASE_S) -> bool:
        """Extend ``worker``'s lease on a running task; False if the task is no longer its own."""
        with self.db.sessions.begin() as session:
            return updated_one(
                session,
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.worker == worker, TaskRow.status == "running")
                .values(lease_until=datetime.now(timezone.utc) + timedelta(seconds=lease_s)),
            )

    def finish(self, task_id: str, status: TaskStatus, error: str | None = None, worker: str | None = None) -> bool:
        """Record how a task ended; with ``worker``, only while the task is still that worker's. True if recorded."""
        with self.db.sessions.begin() as session:
            query = update(TaskRow).where(TaskRow.id == task_id)
            if worker is not None:
                query = query.where(TaskRow.worker == worker, TaskRow.status == "running")
            return updated_one(
                session, query.values(status=status, error=error, finished_at=datetime.now(timezone.utc))
            )

    def get(self, task_id: str) -> Task:
        """One task by id."""
        with self.db.sessions() as session:
            row = session.get(TaskRow, task_id)
            if row is None:
                raise NotFoundError(f"no task {task_id!r}", "check the id printed by `council ask`")
            return _task(row)

    def ended(self, task_ids: list[str]) -> list[Task]:
        """Those of ``task_ids`` that are done or failed, in one query."""
        query = select(TaskRow).where(TaskRow.id.in_(task_ids), TaskRow.status.in_(("done", "failed")))
        with self.db.sessions() as session:
            return [_task(row) for row in session.scalars(query)]

    def counts(self) -> dict[str, Any]:
        """Tasks per status."""
        with self.db.sessions() as session:
            found = dict(session.execute(select(TaskRow.status, func.count()).group_by(TaskRow.status)).all())
        return {s: found.get(s, 0) for s in ("queued", "running", "done", "failed")}
