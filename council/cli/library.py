"""`council archetypes` and `council pools`: the definitions in the library, and fitting archetypes' judges."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.progress import Progress

from archetypes.library import Library
from council.cli._common import JsonFlag, dump, err, out
from council.core.settings import load_settings
from council.render_lists import print_archetypes, print_pools

archetypes_app = typer.Typer(help="Inspect archetype definitions.", no_args_is_help=True)
pools_app = typer.Typer(help="Inspect pools (councils).", no_args_is_help=True)


@archetypes_app.command("list")
def archetypes_list(as_json: JsonFlag = False) -> None:
    """List every archetype, built-in and user-defined."""
    lib = Library.load(load_settings().home)
    rows = [a.model_dump(mode="json") | {"hash": a.content_hash()} for a in lib.archetypes.values()]
    dump(rows) if as_json else print_archetypes(out, lib.archetypes.values())


@archetypes_app.command("show")
def archetypes_show(name: str, as_json: JsonFlag = False) -> None:
    """Show one archetype's definition and content hash."""
    a = Library.load(load_settings().home).archetype(name)
    data = a.model_dump(mode="json") | {"hash": a.content_hash()}
    dump(data) if as_json else out.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@archetypes_app.command("fit")
def archetypes_fit(
    name: Annotated[str | None, typer.Argument(help="Archetype whose judge to fit.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Fit every archetype that has a judge.")] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for the heads files; default $COUNCIL_HOME/judges.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train archetype judges on their labelled files (deterministic) and print held-out figures.

    The heads go to $COUNCIL_HOME/judges/NAME.safetensors, which the archetype then reads instead of the
    packaged file. Built-in judges rebuild byte for byte from the vendored data.
    """
    from council.engine.judges import Reader
    from council.fitting.heads import fit_judge
    from council.render_evals import print_judge_fits
    from memory.embedder import DEFAULT_EMBEDDER, Embedder

    settings = load_settings()
    lib = Library.load(settings.home)
    if all_ == (name is not None):
        raise typer.BadParameter("name one archetype or give --all")
    targets = [a for a in lib.archetypes.values() if a.judge is not None] if all_ else [lib.archetype(name or "")]
    reader = Reader(Embedder(DEFAULT_EMBEDDER), cache=1_000_000)
    reports = []
    with Progress(console=err, transient=True, disable=as_json) as progress:
        task = progress.add_task("fitting", total=len(targets))
        for archetype in targets:
            target = (out_dir / f"{archetype.name}.safetensors") if out_dir else lib.fitted_weights(archetype)
            update = lambda text: progress.update(task, description=text)  # noqa: E731
            reports.append(fit_judge(archetype, lib.resolve, reader, target, update))
            progress.advance(task)
    dump([r.model_dump() for r in reports]) if as_json else print_judge_fits(out, reports)


@pools_app.command("list")
def pools_list(as_json: JsonFlag = False) -> None:
    """List every pool with its members and rule."""
    lib = Library.load(load_settings().home)
    dump([p.model_dump(mode="json") for p in lib.pools.values()]) if as_json else print_pools(out, lib.pools.values())


@pools_app.command("show")
def pools_show(name: str, as_json: JsonFlag = False) -> None:
    """Show one pool and its members' hashes."""
    lib = Library.load(load_settings().home)
    p = lib.pool(name)
    data = p.model_dump(mode="json") | {"hashes": {a.name: a.content_hash() for a in lib.members(p)}}
    dump(data) if as_json else out.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
