"""Workers run queued tasks one at a time, checkpointing every step; watchers follow tasks other processes run.

A ``Worker`` owns the models: llama.cpp contexts are not thread-safe, so every task a process runs goes through
its one worker thread. It holds a lease on its task and renews it while it works. Listeners (the HTTP handlers
waiting on a task) get a ``Step`` per event of the episode's stream, then ``Done``, ``Failed`` or ``Interrupted``.
An API with no worker of its own (`council serve --no-worker`) uses a ``Watcher``, which tells its listeners
how a task ended when some worker, anywhere, has finished it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from sqlalchemy.engine import make_url

from council.core.episode import Episode
from council.core.errors import CouncilError, StorageError
from council.engine.events import EpisodeEvent
from council.engine.runner import run_episode
from council.engine.runtime import CouncilRuntime
from council.store.tasks import LEASE_S, Task, TaskQueue, new_worker_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    """A step of the task's episode: what its graph said."""

    event: EpisodeEvent


@dataclass(frozen=True)
class Done:
    """The task's episode ended and is in the log."""

    episode: Episode


@dataclass(frozen=True)
class Failed:
    """The task failed; ``error`` says why."""

    error: BaseException


@dataclass(frozen=True)
class Interrupted:
    """The worker is stopping: the task stays checkpointed and resumes when a worker starts."""


Ended = Done | Failed | Interrupted
TaskEvent = Step | Ended
Listener = Callable[[TaskEvent], None]


_PG_SETUP_LOCK = 0x636B7074  # workers starting together create the checkpoint tables in turn


def checkpointer(db_url: str, checkpoints: Path) -> BaseCheckpointSaver:
    """Where a worker saves each step: the shared Postgres store, or else ``checkpoints``, a local SQLite file.

    On Postgres any worker resumes an episode that another worker left, on whatever host.
    """
    url = make_url(db_url)
    if url.get_backend_name() != "postgresql":
        checkpoints.parent.mkdir(parents=True, exist_ok=True)
        return SqliteSaver(sqlite3.connect(str(checkpoints), check_same_thread=False))
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row

    libpq = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        conn = psycopg.Connection.connect(libpq, autocommit=True, prepare_threshold=0, row_factory=dict_row)
        # Poll rather than block: setup builds indexes CONCURRENTLY, which waits for every open transaction,
        # a blocked lock request included, so two workers blocking on one lock would deadlock.
        while not (conn.execute("SELECT pg_try_advisory_lock(%s) AS got", (_PG_SETUP_LOCK,)).fetchone() or {})["got"]:
            time.sleep(0.2)
        saver = PostgresSaver(conn)
        saver.setup()
        conn.execute("SELECT pg_advisory_unlock(%s)", (_PG_SETUP_LOCK,))
    except psycopg.Error as exc:
        where = url.render_as_string(hide_password=True)
        raise StorageError(f"cannot keep checkpoints in {where} ({exc})", "check COUNCIL_DATABASE_URL") from exc
    return saver


class TaskThread(threading.Thread):
    """A thread that tells listeners about tasks; ``listen`` answers ``interrupted`` at once once it is gone."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._listeners: dict[str, Listener] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.failure = ""  # why the thread stopped by itself

    def listen(self, task_id: str, listener: Listener) -> None:
        """Call ``listener`` with the updates of task ``task_id`` (register before queueing it), and wake the thread.

        A thread that is stopping or has died answers at once with ``interrupted``.
        """
        if self._stopping.is_set() or (self.ident is not None and not self.is_alive()):
            listener(Interrupted())
            return
        with self._lock:
            self._listeners[task_id] = listener
        self._wake.set()

    def forget(self, task_id: str) -> None:
        """Stop calling the listener of ``task_id`` (its client went away; the task still runs)."""
        with self._lock:
            self._listeners.pop(task_id, None)

    def _emit(self, task_id: str, event: TaskEvent) -> None:
        with self._lock:
            listener = self._listeners.get(task_id)
        if listener is not None:
            listener(event)

    def stop(self) -> None:
        """Finish the current step (a worker leaves its episode checkpointed) and tell every waiting client."""
        self._stopping.set()
        self._wake.set()

    def _interrupt_all(self) -> None:
        with self._lock:
            waiting = list(self._listeners.values())
        for listener in waiting:
            listener(Interrupted())


class Worker(TaskThread):
    """Claims tasks from the queue and runs each as one checkpointed episode, renewing its lease meanwhile.

    ``take_over``: the worker is alone on its queue (the embedded default, kept so by a lock), so every task
    left running was interrupted and is resumed at once instead of when its lease runs out.
    """

    def __init__(
        self,
        rt: CouncilRuntime,
        queue: TaskQueue,
        checkpoints: Path,
        poll_s: float = 1.0,
        take_over: bool = True,
        lease_s: float = LEASE_S,
    ):
        super().__init__("council-worker")
        self.rt = rt
        self.queue = queue
        self.poll_s = poll_s
        self.take_over = take_over
        self.lease_s = lease_s
        self.worker_id = new_worker_id()
        self._saver = checkpointer(rt.settings.db_url, checkpoints)

    def run(self) -> None:
        """Work until stopped; idle time waits for a new task or polls for inbox prompts from other processes."""
        while not self._stopping.is_set():
            try:
                self.rt.db.check()
            except StorageError as exc:  # writing on would lose every later episode
                logger.error("worker stopped: %s", exc)
                self.failure = str(exc)
                break
            try:
                task = self.queue.claim(self.worker_id, self.lease_s, self.take_over)
                if task is None:
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
                    continue
                self.execute(task)
            except Exception as exc:  # noqa: BLE001 - a busy or full database must not kill the daemon
                logger.warning("worker step failed, retrying: %s", exc)
                self._wake.wait(min(5.0, 10 * self.poll_s))
        self._interrupt_all()

    def execute(self, task: Task) -> None:
        """Run (or resume) ``task`` as one episode and record how it ended."""
        updates = task.params.model_dump(exclude_none=True)
        generation = self.rt.settings.generation.model_copy(update=updates)
        settings = self.rt.settings.model_copy(update={"generation": generation})
        rt = replace(self.rt, settings=settings)
        done, lost = threading.Event(), threading.Event()
        lease = threading.Thread(target=self._renew, args=(task.id, done, lost), name="council-lease", daemon=True)
        lease.start()
        try:
            episode = run_episode(
                rt,
                task.prompt,
                lambda event: self._emit(task.id, Step(event)),
                episode_id=task.episode_id,
                checkpointer=self._saver,
                should_stop=lambda: self._stopping.is_set() or lost.is_set(),
            )
        except Exception as exc:  # noqa: BLE001 - one failed task must not stop the daemon
            logger.warning("task %s failed: %s", task.id, exc)
            self.queue.finish(task.id, "failed", f"{type(exc).__name__}: {exc}", self.worker_id)
            self._emit(task.id, Failed(exc))
            return
        finally:
            done.set()
            lease.join()
        if episode is None:  # stopping, or the lease ran out: the task stays running, for this or another worker
            return
        self.queue.finish(task.id, "done", worker=self.worker_id)
        self._saver.delete_thread(task.episode_id)  # the log has the episode; its steps are no longer needed
        self._emit(task.id, Done(episode))

    def _renew(self, task_id: str, done: threading.Event, lost: threading.Event) -> None:
        """Renew the lease on ``task_id`` every third of its length until ``done``; set ``lost`` if it ran out."""
        while not done.wait(self.lease_s / 3):
            try:
                if not self.queue.renew(task_id, self.worker_id, self.lease_s):
                    logger.warning("task %s is no longer this worker's: its lease ran out; leaving it", task_id)
                    lost.set()
                    return
            except Exception as exc:  # noqa: BLE001 - a busy database: the next renewal may succeed
                logger.warning("lease renewal of task %s failed: %s", task_id, exc)


class Watcher(TaskThread):
    """For an API without a worker: tells each listener how its task ended, whichever worker ran it."""

    def __init__(self, rt: CouncilRuntime, queue: TaskQueue, poll_s: float = 0.5):
        super().__init__("council-watcher")
        self.rt = rt
        self.queue = queue
        self.poll_s = poll_s

    def run(self) -> None:
        """Poll the tasks someone waits on, all in one query, until stopped."""
        while not self._stopping.is_set():
            self._wake.wait(self.poll_s)
            self._wake.clear()
            with self._lock:
                waiting = list(self._listeners)
            try:
                ended = self.queue.ended(waiting) if waiting else []
                for task in ended:
                    self._tell(task)
            except Exception as exc:  # noqa: BLE001 - a busy database: look again next time
                logger.warning("cannot read tasks: %s", exc)
        self._interrupt_all()

    def _tell(self, task: Task) -> None:
        if task.status == "done":
            self._emit(task.id, Done(self.rt.log.get(task.episode_id)))
        else:
            self._emit(task.id, Failed(CouncilError(task.error or "the task failed", "see the worker's log")))
        self.forget(task.id)
