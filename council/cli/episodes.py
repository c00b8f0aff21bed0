"""`council logs` and `council memory`: the episode log, and the vector memory built from it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from council.cli._common import JsonFlag, dump, episode_log, err, out
from council.core.settings import load_settings
from council.render_lists import print_report

if TYPE_CHECKING:
    from council.store.episodes import EpisodeLog
    from memory.vector import VectorMemory

logs_app = typer.Typer(help="Read the episode log.", no_args_is_help=True)
memory_app = typer.Typer(help="Search and maintain the vector memory of past episodes.", no_args_is_help=True)


@logs_app.command("list")
def logs_list(
    limit: Annotated[int, typer.Option(help="How many episodes, newest first.")] = 20,
    pool: Annotated[str | None, typer.Option(help="Only episodes of this pool.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List logged episodes, newest first."""
    from council.render import episodes_table

    episodes = episode_log(load_settings()).list(limit=limit, pool=pool)
    if as_json:
        return dump([e.model_dump(mode="json") for e in episodes])
    out.print(episodes_table(episodes))


@logs_app.command("show")
def logs_show(episode_id: str, as_json: JsonFlag = False) -> None:
    """Show one episode (any unique id prefix) with every reflection point and vote."""
    from council.render import print_episode

    episode = episode_log(load_settings()).get(episode_id)
    dump(episode.model_dump(mode="json")) if as_json else print_episode(out, episode)


def _memory() -> tuple[VectorMemory, EpisodeLog]:
    from memory.vector import VectorMemory

    settings = load_settings()
    return VectorMemory(settings.memory, settings.chroma_dir), episode_log(settings)


@memory_app.command("search")
def memory_search(
    query: Annotated[str, typer.Argument(help="What to look for; matched by meaning, not by words.")],
    k: Annotated[int, typer.Option("-k", min=1, help="How many memories.")] = 5,
    as_json: JsonFlag = False,
) -> None:
    """Find the memories most similar to QUERY: past episodes and the council's reflections on them."""
    from council.render import recollections_table

    memory, _ = _memory()
    hits = memory.search(query, k)
    if as_json:
        return dump([h.model_dump() for h in hits])
    if not hits:
        out.print("no memories yet: finished episodes are remembered (`council run`)")
    recollections_table(out, hits)


@memory_app.command("stats")
def memory_stats(as_json: JsonFlag = False) -> None:
    """Count what memory holds, and how many logged episodes it is missing."""
    from memory.vector import REMEMBERED

    memory, log = _memory()
    stats = memory.stats()
    data = stats | {
        "logged_episodes": log.count(REMEMBERED),
        "missing_episodes": max(0, log.count(REMEMBERED) - stats["episodes"]),
        "location": memory.location,
        "embedder": memory.settings.embedder,
    }
    if as_json:
        return dump(data)
    print_report(out, data)
    if data["missing_episodes"]:
        out.print("run `council memory rebuild` to add the missing episodes")


@memory_app.command("rebuild")
def memory_rebuild(as_json: JsonFlag = False) -> None:
    """Re-create the vector memory from the episode log, the source of truth (same ids, same contents).

    The log is read in full first; a damaged embedded store is moved aside (never deleted) and built anew.
    """
    from memory.vector import open_or_set_aside, remembered

    settings = load_settings()
    episodes = remembered(episode_log(settings))
    memory, aside = open_or_set_aside(settings.memory, settings.chroma_dir)
    with err.status("Embedding episodes…"):
        items = memory.rebuild(episodes)
    data = memory.stats() | {"written": items, "damaged_store_moved_to": str(aside) if aside else None}
    if as_json:
        return dump(data)
    if aside:
        out.print(f"the vector memory could not be read; moved it to {aside}")
    out.print(f"rebuilt {items} memories from {data['episodes']} episodes at {memory.location}")
