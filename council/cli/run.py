"""`council run` answers a prompt here, live; `council ask` queues one for a running daemon."""

from __future__ import annotations

from typing import Annotated

import typer

from council.cli._common import JsonFlag, dump, episode_log, err, interruptible, out
from council.core.errors import CouncilError
from council.core.settings import load_settings


def run(
    prompt: Annotated[str, typer.Argument(help="What the persona is asked.")],
    pool: Annotated[str | None, typer.Option(help="Pool (council) to use.")] = None,
    persona: Annotated[str | None, typer.Option(help="Persona to use.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Token budget of the answer.")] = None,
    seed: Annotated[int | None, typer.Option(min=0, max=2**32 - 1, help="Sampling seed.")] = None,
    recall: Annotated[
        bool | None, typer.Option("--recall/--no-recall", help="Recall related past episodes from memory.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Answer PROMPT in segments; the council votes at every reflection point. The episode is logged and remembered."""
    from council.engine.events import Drafted, EpisodeEvent, Revised
    from council.engine.runner import build_runtime, new_episode_id, run_episode
    from council.render import LiveEpisode

    generation = {k: v for k, v in {"max_tokens": max_tokens, "seed": seed}.items() if v is not None}
    memory = None if recall is None else {"recall": recall}
    settings = load_settings(pool=pool, persona=persona, generation=generation or None, memory=memory)
    with err.status("Loading models…"):
        rt = build_runtime(settings)
    live = LiveEpisode(err if as_json else out)
    episode_id = new_episode_id()
    with (
        interruptible(f"episode {episode_id} is logged as interrupted"),
        err.status("The persona is writing…") as status,
    ):

        def on_event(event: EpisodeEvent) -> None:
            live(event)
            voting = isinstance(event, Drafted | Revised)
            status.update("The council is voting…" if voting else "The persona is writing…")

        episode = run_episode(rt, prompt, on_event, episode_id=episode_id)
    assert episode is not None  # only a should_stop callback leaves an episode unfinished
    if as_json:
        dump(episode.model_dump(mode="json"))
    else:
        out.rule(f"episode {episode.episode_id} · {episode.status}")
        out.print(episode.final_text)


def ask(
    prompt: Annotated[str, typer.Argument(help="What the persona is asked.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the daemon to answer, then print the answer.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 600.0,
    as_json: JsonFlag = False,
) -> None:
    """Queue PROMPT in the inbox; a running `council serve` answers it while idle."""
    import time

    from council.store.tasks import TaskQueue

    log = episode_log(load_settings())
    queue = TaskQueue(log.db)
    task = queue.put(prompt, "inbox")
    if not wait:
        return dump(task.model_dump(mode="json")) if as_json else out.print(f"queued task {task.id}")
    deadline = time.monotonic() + timeout
    with interruptible(f"the daemon still answers task {task.id}"):
        while (task := queue.get(task.id)).status in ("queued", "running"):
            if time.monotonic() > deadline:
                raise CouncilError(
                    f"task {task.id} is still {task.status}", "is `council serve` running? It stays queued"
                )
            time.sleep(0.5)
    if task.status == "failed":
        raise CouncilError(f"task {task.id} failed: {task.error}", "see `council logs show " + task.episode_id + "`")
    episode = log.get(task.episode_id)
    dump(episode.model_dump(mode="json")) if as_json else out.print(episode.final_text)
