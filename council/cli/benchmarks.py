"""`council bench`: the council's overhead, the mode lock's, recall at scale and the night's commentary."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from council.cli._common import JsonFlag, dump, err, out
from council.core.settings import load_settings
from council.render_lists import print_report

bench_app = typer.Typer(help="Benchmarks; with no subcommand, the council's overhead over plain generation.")


def _print_report(data: dict[str, Any], as_json: bool) -> None:
    dump(data) if as_json else print_report(out, data)


@bench_app.callback(invoke_without_command=True)
def bench(
    ctx: typer.Context,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats per path; the median is reported.")] = 3,
    tokens: Annotated[int, typer.Option(min=10, help="Tokens generated per prompt.")] = 200,
    as_json: JsonFlag = False,
) -> None:
    """Measure plain generation, the fast council and a naive council on the default model, in one process."""
    if ctx.invoked_subcommand:
        return
    from council.bench import Bench
    from council.engine.runner import build_runtime

    with err.status("Loading models…") as status:
        report = Bench(build_runtime(load_settings()), tokens=tokens).run(repeats, progress=status.update)
    _print_report(report.as_dict(), as_json)


@bench_app.command("modelock")
def bench_modelock(
    tokens: Annotated[int, typer.Option(min=8, help="Tokens generated per prompt.")] = 80,
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per prompt.")] = 2,
    as_json: JsonFlag = False,
) -> None:
    """The mode lock's per-token overhead, and illegal transitions with and without it on adversarial prompts."""
    from council.bench_modelock import ModeLockBench
    from council.engine.runner import build_runtime

    with err.status("Loading models…") as status:
        report = ModeLockBench(build_runtime(load_settings()), tokens, seeds).run(progress=status.update)
    _print_report(report, as_json)


@bench_app.command("memory")
def bench_memory(
    sizes: Annotated[str, typer.Option(help="Comma-separated store sizes.")] = "10000,100000",
    queries: Annotated[int, typer.Option(min=5, help="Recalls timed per size.")] = 100,
    as_json: JsonFlag = False,
) -> None:
    """Recall latency (p50/p95) at each store size against an exact NumPy search, and write throughput."""
    from council.bench_memory import MemoryBench
    from memory.embedder import Embedder

    try:
        counts = tuple(int(s) for s in sizes.split(","))
    except ValueError:
        raise typer.BadParameter(f"{sizes!r} is not a list of numbers, e.g. 10000,100000", param_hint="--sizes")
    with err.status("Loading the embedder…") as status:
        report = MemoryBench(Embedder(load_settings().memory.embedder), counts, queries).run(progress=status.update)
    _print_report(report, as_json)


@bench_app.command("night")
def bench_night(
    tokens: Annotated[int, typer.Option(min=8, help="Tokens each archetype writes per interaction.")] = 60,
    as_json: JsonFlag = False,
) -> None:
    """The night's commentary: each archetype one by one against the council decoded side by side."""
    from council.bench_night import NightBench
    from council.engine.runner import build_runtime

    with err.status("Loading models…") as status:
        report = NightBench(build_runtime(load_settings()), tokens).run(progress=status.update)
    _print_report(report, as_json)
