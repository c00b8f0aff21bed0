"""The daemon: `council serve` (the OpenAI-compatible API) and `council worker` (queued tasks, no HTTP)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

import typer

from council.cli._common import err
from council.core.errors import CouncilError
from council.core.settings import load_settings
from council.store.ownership import embedded, owning_home

if TYPE_CHECKING:
    from council.core.settings import Settings


def serve(
    host: Annotated[
        str, typer.Option(help="Interface to bind; localhost only unless you say otherwise.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8765,
    pool: Annotated[str | None, typer.Option(help="Pool (council) to serve with.")] = None,
    worker: Annotated[
        bool, typer.Option("--worker/--no-worker", help="Run tasks here, or leave them to `council worker`s.")
    ] = True,
) -> None:
    """Run the persona as a daemon with an OpenAI-compatible API; it also works through `council ask` prompts.

    Set COUNCIL_API_KEY to require a bearer token. SIGTERM checkpoints the current episode and exits 0. On the
    embedded store one daemon owns a home; on Postgres any number of `serve` and `worker` processes share it.
    """
    settings = load_settings(pool=pool)
    alone = embedded(settings)
    with owning_home(settings, alone and worker):
        _serve(settings, host, port, worker, alone)


def _serve(settings: Settings, host: str, port: int, worker: bool, alone: bool) -> None:
    """Load the models and serve until SIGTERM or Ctrl-C."""
    from council.engine.runner import build_runtime
    from council.serve import serve
    from council.server import create_app

    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("COUNCIL_API_KEY"):
        err.print(f"warning: serving on {host} without COUNCIL_API_KEY: anyone who can reach it can use it")
    with err.status("Loading models…"):
        rt = build_runtime(settings)
    server_app = create_app(rt, run_tasks=worker, alone=alone)
    tasks = "" if worker else " (tasks run by `council worker`s)"
    err.print(f"serving {rt.persona.name} with the {rt.pool.name} council on http://{host}:{port}/v1{tasks}")
    serve(server_app, host, port)


def worker_command(
    pool: Annotated[str | None, typer.Option(help="Pool (council) to run tasks with.")] = None,
) -> None:
    """Run queued tasks (API requests and `council ask` prompts) with no HTTP, until SIGTERM or Ctrl-C.

    Each claim holds a lease the worker renews; a task whose worker died is taken over when its lease runs out.
    SIGTERM checkpoints the current episode and exits 0.
    """
    import signal

    from council.engine.runner import build_runtime
    from council.store.tasks import TaskQueue
    from council.worker import Worker

    settings = load_settings(pool=pool)
    alone = embedded(settings)
    with owning_home(settings, alone):
        with err.status("Loading models…"):
            rt = build_runtime(settings)
        runner = Worker(rt, TaskQueue(rt.db), settings.home / "checkpoints.db", take_over=alone)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: runner.stop())
        err.print(f"worker {runner.worker_id} runs tasks for {rt.persona.name} with the {rt.pool.name} council")
        runner.start()
        while runner.is_alive():
            runner.join(timeout=0.5)
    if runner.failure:
        raise CouncilError(f"the worker stopped: {runner.failure}", "fix the store and start it again")
