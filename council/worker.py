"""The daemon's one worker: it owns the models and runs queued tasks one at a time, checkpointing every step.

llama.cpp contexts are not thread-safe, so every request and inbox prompt goes through this thread.
Listeners (the HTTP handlers waiting on a task) are called from this thread with each graph update, then
with ``("done", episode)``, ``("error", exc)`` or ``("interrupted", None)``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver

from council.errors import StorageError
from council.graph import CouncilRuntime
from council.runner import run_episode
from council.tasks import Task, TaskQueue

logger = logging.getLogger(__name__)
Listener = Callable[[str, Any], None]


class Worker(threading.Thread):
    """Claims tasks from the queue and runs each as one checkpointed episode."""

    def __init__(self, rt: CouncilRuntime, queue: TaskQueue, checkpoints: Path, poll_s: float = 1.0):
        super().__init__(name="council-worker", daemon=True)
        self.rt = rt
        self.queue = queue
        self.poll_s = poll_s
        checkpoints.parent.mkdir(parents=True, exist_ok=True)
        self._saver = SqliteSaver(sqlite3.connect(str(checkpoints), check_same_thread=False))
        self._listeners: dict[str, Listener] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.failure = ""  # why the worker stopped by itself

    def listen(self, task_id: str, listener: Listener) -> None:
        """Call ``listener`` with the updates of task ``task_id`` (register before queueing it), and wake the worker.

        A worker that is stopping or has died answers at once with ``interrupted``.
        """
        if self._stopping.is_set() or (self.ident is not None and not self.is_alive()):
            listener("interrupted", None)
            return
        with self._lock:
            self._listeners[task_id] = listener
        self._wake.set()

    def forget(self, task_id: str) -> None:
        """Stop calling the listener of ``task_id`` (its client went away; the task still runs)."""
        with self._lock:
            self._listeners.pop(task_id, None)

    def _emit(self, task_id: str, kind: str, payload: Any) -> None:  # noqa: ANN401 - event payloads vary
        with self._lock:
            listener = self._listeners.get(task_id)
        if listener is not None:
            listener(kind, payload)

    def stop(self) -> None:
        """Finish the current step, leave the episode checkpointed, and tell every waiting client."""
        self._stopping.set()
        self._wake.set()

    def run(self) -> None:
        """Work until stopped; idle time waits for a new task or polls for inbox prompts from other processes."""
        while not self._stopping.is_set():
            try:
                self.rt.log.check()
            except StorageError as exc:  # writing on would lose every later episode
                logger.error("worker stopped: %s", exc)
                self.failure = str(exc)
                break
            try:
                task = self.queue.claim()
                if task is None:
                    self._wake.wait(self.poll_s)
                    self._wake.clear()
                    continue
                self.execute(task)
            except Exception as exc:  # noqa: BLE001 - a busy or full database must not kill the daemon
                logger.warning("worker step failed, retrying: %s", exc)
                self._wake.wait(min(5.0, 10 * self.poll_s))
        with self._lock:
            waiting = list(self._listeners.values())
        for listener in waiting:
            listener("interrupted", None)

    def execute(self, task: Task) -> None:
        """Run (or resume) ``task`` as one episode and record how it ended."""
        updates = task.params.model_dump(exclude_none=True)
        generation = self.rt.settings.generation.model_copy(update=updates)
        settings = self.rt.settings.model_copy(update={"generation": generation})
        rt = replace(self.rt, settings=settings)
        try:
            episode = run_episode(
                rt,
                task.prompt,
                lambda node, update: self._emit(task.id, node, update),
                episode_id=task.episode_id,
                checkpointer=self._saver,
                should_stop=self._stopping.is_set,
            )
        except Exception as exc:  # noqa: BLE001 - one failed task must not stop the daemon
            logger.warning("task %s failed: %s", task.id, exc)
            self.queue.finish(task.id, "failed", f"{type(exc).__name__}: {exc}")
            self._emit(task.id, "error", exc)
            return
        if episode is None:
            return  # stopping: the episode is checkpointed and the task stays running, to resume at start-up
        self.queue.finish(task.id, "done")
        self._saver.delete_thread(task.episode_id)  # the log has the episode; its steps are no longer needed
        self._emit(task.id, "done", episode)
