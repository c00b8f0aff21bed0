"""The `council` command line."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast, get_args, get_type_hints

import click
import typer
import typer.main
from typer.core import TyperGroup, TyperOption

try:
    from typer._click import exceptions as typer_click
except ImportError:  # typer before 0.29 uses click itself
    typer_click = None  # type: ignore[assignment]
import yaml
from rich.console import Console
from rich.progress import Progress
from rich.text import Text

from archetypes.library import Library
from council.core.errors import CouncilError, Interrupt
from council.core.settings import Settings, load_settings
from council.core.text import invalid_text, printable

if TYPE_CHECKING:
    from council.engine.runtime import CouncilRuntime
    from council.evaluation.judge_fit import HeadFigures
    from council.store.episodes import EpisodeLog
    from sleep.night import SleepSummary

app = typer.Typer(
    help="A persona that pauses to reflect, and a council of archetypes that votes continue, revise or let go.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
archetypes_app = typer.Typer(help="Inspect archetype definitions.", no_args_is_help=True)
pools_app = typer.Typer(help="Inspect pools (councils).", no_args_is_help=True)
logs_app = typer.Typer(help="Read the episode log.", no_args_is_help=True)
app.add_typer(archetypes_app, name="archetypes")
app.add_typer(pools_app, name="pools")
bench_app = typer.Typer(help="Benchmarks; with no subcommand, the council's overhead over plain generation.")
memory_app = typer.Typer(help="Search and maintain the vector memory of past episodes.", no_args_is_help=True)
app.add_typer(logs_app, name="logs")
app.add_typer(memory_app, name="memory")
eval_app = typer.Typer(help="The council as a judge on human-labelled data.", no_args_is_help=True)
experiment_app = typer.Typer(help="Compare pools over a prompt set.", no_args_is_help=True)
report_app = typer.Typer(help="Reports written by eval and experiment.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")
app.add_typer(experiment_app, name="experiment")
app.add_typer(report_app, name="report")
app.add_typer(bench_app, name="bench")
persona_app = typer.Typer(help="Trained persona versions: list, choose, roll back.", no_args_is_help=True)
app.add_typer(persona_app, name="persona")

out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _settings(**overrides: Any) -> Settings:  # noqa: ANN401 - any setting's value
    return load_settings(**overrides)


def _episode_log(settings: Settings) -> EpisodeLog:
    from council.store.database import Database
    from council.store.episodes import EpisodeLog

    return EpisodeLog(Database(settings.db_url))


@contextmanager
def _interruptible(note: str) -> Iterator[None]:
    """SIGTERM and Ctrl-C raise ``Interrupt`` (saying ``note``), so what runs ends ``interrupted``, not killed."""
    import signal
    import threading

    def stop(signum: int, _frame: object) -> None:
        raise Interrupt(signum, note)

    main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupt(signal.SIGINT, note) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _dump(data: object) -> None:
    out.print_json(json.dumps(data, default=str))


def _print_report(data: dict[str, Any], as_json: bool) -> None:
    """A flat report as JSON, or as aligned ``key value`` lines."""
    if as_json:
        return _dump(data)
    width = max(map(len, data)) + 2
    for key, value in data.items():
        out.print(f"{key:<{width}} {value}")


@app.command()
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
    settings = _settings(pool=pool, persona=persona, generation=generation or None, memory=memory)
    with err.status("Loading models…"):
        rt = build_runtime(settings)
    live = LiveEpisode(err if as_json else out)
    episode_id = new_episode_id()
    with (
        _interruptible(f"episode {episode_id} is logged as interrupted"),
        err.status("The persona is writing…") as status,
    ):

        def on_event(event: EpisodeEvent) -> None:
            live(event)
            voting = isinstance(event, Drafted | Revised)
            status.update("The council is voting…" if voting else "The persona is writing…")

        episode = run_episode(rt, prompt, on_event, episode_id=episode_id)
    assert episode is not None  # only a should_stop callback leaves an episode unfinished
    if as_json:
        _dump(episode.model_dump(mode="json"))
    else:
        out.rule(f"episode {episode.episode_id} · {episode.status}")
        out.print(episode.final_text)


@archetypes_app.command("list")
def archetypes_list(as_json: JsonFlag = False) -> None:
    """List every archetype, built-in and user-defined."""
    lib = Library.load(_settings().home)
    rows = [a.model_dump(mode="json") | {"hash": a.content_hash()} for a in lib.archetypes.values()]
    if as_json:
        return _dump(rows)
    for a in lib.archetypes.values():
        veto = " [veto]" if a.veto else ""
        judge = "judge" if a.judge and a.judge.weights_sha256 else "unfitted judge" if a.judge else "tokens"
        out.print(f"[bold]{a.name:<14}[/] {a.title:<14} w={a.weight:<4} {judge:<15} {a.voice}{veto}")


@archetypes_app.command("show")
def archetypes_show(name: str, as_json: JsonFlag = False) -> None:
    """Show one archetype's definition and content hash."""
    a = Library.load(_settings().home).archetype(name)
    data = a.model_dump(mode="json") | {"hash": a.content_hash()}
    _dump(data) if as_json else out.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


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
    from council.evaluation.judge_fit import fit_judge
    from memory.embedder import DEFAULT_EMBEDDER, Embedder

    settings = _settings()
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
    if as_json:
        return _dump([r.model_dump() for r in reports])
    for report in reports:
        out.print(f"[bold]{report.archetype}[/] -> {report.weights} ({report.sha256[:16]})")
        for judgment, f in report.heads.items():
            out.print(f"  {judgment:<7} held out {f.dev_rows:>5} rows of its sources: {_head_figures(f)}")
            for source, g in report.cross_source.get(judgment, {}).items():
                out.print(f"          fitted without {source} ({g.dev_rows} rows): {_head_figures(g)}")


def _head_figures(f: HeadFigures) -> str:
    return (
        f"AUROC {f.auroc}, balanced accuracy {f.balanced_accuracy}, flags {f.flagged_when_should} when it should, "
        f"{f.flagged_when_should_not} when it should not"
    )


@pools_app.command("list")
def pools_list(as_json: JsonFlag = False) -> None:
    """List every pool with its members and rule."""
    lib = Library.load(_settings().home)
    if as_json:
        return _dump([p.model_dump(mode="json") for p in lib.pools.values()])
    for p in lib.pools.values():
        out.print(f"[bold]{p.name:<10}[/] {p.rule:<18} {', '.join(p.archetypes)}")


@pools_app.command("show")
def pools_show(name: str, as_json: JsonFlag = False) -> None:
    """Show one pool and its members' hashes."""
    lib = Library.load(_settings().home)
    p = lib.pool(name)
    data = p.model_dump(mode="json") | {"hashes": {a.name: a.content_hash() for a in lib.members(p)}}
    _dump(data) if as_json else out.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@logs_app.command("list")
def logs_list(
    limit: Annotated[int, typer.Option(help="How many episodes, newest first.")] = 20,
    pool: Annotated[str | None, typer.Option(help="Only episodes of this pool.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List logged episodes, newest first."""
    from council.render import episodes_table

    episodes = _episode_log(_settings()).list(limit=limit, pool=pool)
    if as_json:
        return _dump([e.model_dump(mode="json") for e in episodes])
    out.print(episodes_table(episodes))


@logs_app.command("show")
def logs_show(episode_id: str, as_json: JsonFlag = False) -> None:
    """Show one episode (any unique id prefix) with every reflection point and vote."""
    from council.render import print_episode

    episode = _episode_log(_settings()).get(episode_id)
    _dump(episode.model_dump(mode="json")) if as_json else print_episode(out, episode)


def _memory() -> tuple[Any, Any]:
    from memory.vector import VectorMemory

    settings = _settings()
    return VectorMemory(settings.memory, settings.chroma_dir), _episode_log(settings)


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
        return _dump([h.model_dump() for h in hits])
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
    _print_report(data, as_json)
    if data["missing_episodes"] and not as_json:
        out.print("run `council memory rebuild` to add the missing episodes")


@memory_app.command("rebuild")
def memory_rebuild(as_json: JsonFlag = False) -> None:
    """Re-create the vector memory from the episode log, the source of truth (same ids, same contents).

    The log is read in full first; a damaged embedded store is moved aside (never deleted) and built anew.
    """
    from memory.vector import open_or_set_aside, remembered

    settings = _settings()
    episodes = remembered(_episode_log(settings))
    memory, aside = open_or_set_aside(settings.memory, settings.chroma_dir)
    with err.status("Embedding episodes…"):
        items = memory.rebuild(episodes)
    data = memory.stats() | {"written": items, "damaged_store_moved_to": str(aside) if aside else None}
    if as_json:
        return _dump(data)
    if aside:
        out.print(f"the vector memory could not be read; moved it to {aside}")
    out.print(f"rebuilt {items} memories from {data['episodes']} episodes at {memory.location}")


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
        report = Bench(build_runtime(_settings()), tokens=tokens).run(repeats, progress=status.update)
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
        report = ModeLockBench(build_runtime(_settings()), tokens, seeds).run(progress=status.update)
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
        report = MemoryBench(Embedder(_settings().memory.embedder), counts, queries).run(progress=status.update)
    _print_report(report, as_json)


def _evaluate(task: str, file: Path, pool: str | None, limit: int | None, report: Path | None, as_json: bool) -> None:
    from council.engine.runner import build_runtime
    from council.evaluation.evaluate import Evaluation, LetGoFigures, evaluate, evaluate_letgo
    from council.evaluation.report import eval_report

    with err.status("Loading models…"):
        rt = build_runtime(_settings(pool=pool))
    with Progress(console=err, transient=True) as bar:
        job = bar.add_task(f"Judging {file.name}", total=limit)
        step = lambda n: bar.advance(job, n)  # noqa: E731
        result: Evaluation[Any]
        if task == "letgo":
            result = evaluate_letgo(rt, file, limit=limit, progress=step)
        else:
            result = evaluate(rt, file, task, limit=limit, progress=step)  # type: ignore[arg-type]
    if report:
        err.print(f"report: {eval_report(result, report)}")
    if as_json:
        return _dump(result.public())
    out.print(f"{result.rows} rows, pool {result.pool}, majority baseline {result.majority_baseline:.3f}")
    for name, figures in result.judges().items():
        low, high = figures.accuracy_ci95
        line = f"  {name:<14} accuracy {figures.accuracy:.3f} [{low:.3f}, {high:.3f}]  auroc {figures.auroc:.3f}"
        if isinstance(figures, LetGoFigures):
            line += (
                f"  lets go {figures.let_go_when_should:.2f} when it should, "
                f"{figures.let_go_when_should_not:.2f} when it should not"
            )
        out.print(line)
    panel = result.panel
    gap, ci = panel.council_minus_best_archetype, list(panel.council_minus_best_archetype_ci95)
    independent = panel.independent_errors_majority_accuracy
    out.print(f"council − best archetype {gap:+.3f} {ci}; if errors were independent {independent:.3f}")
    out.print(f"mean error correlation between archetypes {panel.mean_error_correlation}")


FileArg = Annotated[Path, typer.Argument(help="JSONL rows.", exists=True, dir_okay=False)]
PoolOpt = Annotated[str | None, typer.Option(help="Pool (council) to judge with.")]
LimitOpt = Annotated[int | None, typer.Option(min=1, help="Only the first N rows.")]
ReportOpt = Annotated[Path | None, typer.Option(help="Write an HTML report, results.json and a CSV here.")]


@eval_app.command("ethics")
def eval_ethics(
    file: FileArg, pool: PoolOpt = None, limit: LimitOpt = None, report: ReportOpt = None, as_json: JsonFlag = False
) -> None:
    """Rows {"id","label","scenario"}: label 1 = clearly morally wrong. Accuracy, AUROC, ECE and CIs per judge."""
    _evaluate("ethics", file, pool, limit, report, as_json)


@eval_app.command("letgo")
def eval_letgo(
    file: FileArg, pool: PoolOpt = None, limit: LimitOpt = None, report: ReportOpt = None, as_json: JsonFlag = False
) -> None:
    """Rows {"id","prompt","should_let_go"}: let-go AUROC and let-go rates when it should and should not, per judge."""
    _evaluate("letgo", file, pool, limit, report, as_json)


@eval_app.command("pairs")
def eval_pairs(
    file: FileArg, pool: PoolOpt = None, limit: LimitOpt = None, report: ReportOpt = None, as_json: JsonFlag = False
) -> None:
    """Rows {"id","prompt","chosen","rejected"}: each pair judged in both orders; position bias reported."""
    _evaluate("pairs", file, pool, limit, report, as_json)


@eval_app.command("behaviour")
def eval_behaviour(
    file: Annotated[
        Path, typer.Argument(help='JSONL rows {"id","prompt","should_let_go"}.', exists=True, dir_okay=False)
    ],
    persona: Annotated[
        str | None, typer.Option(help="Persona version(s), comma-separated: base, v1, ... (default: the one in use).")
    ] = None,
    pool: PoolOpt = None,
    no_council: Annotated[
        bool, typer.Option("--no-council", help="No council votes: the decline detector reads the persona's text.")
    ] = False,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Token budget of each answer.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write results.json and report.md here.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Whole episodes over rows {"id","prompt","should_let_go"}: let-go and over-refusal rates, markers, per version."""
    from rich.table import Table

    from council.evaluation import behaviour as b

    if pool and no_council:
        raise typer.BadParameter("give --pool or --no-council, not both", param_hint="--no-council")
    versions = [v.strip() for v in (persona or "").split(",") if v.strip()]
    settings = _settings(pool=pool, generation={"max_tokens": max_tokens} if max_tokens else None)
    with ExitStack() as stack:
        with err.status("Loading models…"):
            scratch = stack.enter_context(b.scratch_runtime(settings))
        with Progress(console=err, transient=True) as bar:
            rows = sum(1 for line in file.read_text(encoding="utf-8").split("\n") if line.strip())
            job = bar.add_task(f"Answering {printable(file.name)}", total=rows * max(len(versions), 1))
            result = b.evaluate_behaviour(
                scratch, file, versions=versions, council=not no_council, progress=lambda n: bar.advance(job, n)
            )
    if report:
        err.print(f"report: {printable(str(b.write_report(result, report)))}")
    if as_json:
        return _dump(result.public())
    table = Table(
        *b.SUMMARY_HEADER, title=f"{result.rows} rows ({result.should_let_go} to let go), {result.max_tokens} tokens"
    )
    for row in b.summary_rows(result):
        table.add_row(*row)
    out.print(table)
    out.print("stops: the council let go, or with --no-council the persona declined; answer length in words")
    out.print(b.detector_line(result))


@eval_app.command("recall")
def eval_recall(
    file: Annotated[
        Path, typer.Argument(help='JSONL rows {"id","prompt","query"}; a row without prompt is off-topic.', exists=True)
    ] = Path("examples/recall_paraphrases.jsonl"),
    max_tokens: Annotated[int | None, typer.Option(help="Token budget of each answer.")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Keep the episodes here; a re-run reuses them (default: temporary).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Answer each prompt, remember it, then recall it by a paraphrase: recall@k and unrelated episodes recalled."""
    from council.engine.runner import build_runtime
    from council.evaluation.recall import evaluate_recall, load_recall_rows

    rows = load_recall_rows(file)
    settings = _settings(generation={"max_tokens": max_tokens} if max_tokens else None)
    with tempfile.TemporaryDirectory(prefix="council-recall-") as scratch:
        home = out_dir or Path(scratch)
        memory = settings.memory.model_copy(update={"url": None, "recall": False})  # answers independent
        own = {"home": home, "database_url": None, "memory": memory}
        with err.status("Loading models…"):
            rt = build_runtime(settings.model_copy(update=own), library=Library.load(settings.home))
        with Progress(console=err, transient=True) as bar:
            job = bar.add_task("Answering and remembering", total=len(rows))
            figures = evaluate_recall(rt, rows, progress=lambda n: bar.advance(job, n))
    if as_json:
        return _dump(figures.model_dump())
    out.print(
        f"{figures.episodes} episodes (answers of {figures.mean_answer_words:.0f} words on average), "
        f"{figures.paraphrases} paraphrases, {figures.off_topic} off-topic queries; "
        f"top {figures.k}, cut {figures.min_score}"
    )
    out.print(f"recall@{figures.k} {figures.recall_at_k:.3f}; lowest own score {figures.lowest_target_score}")
    highest = figures.highest_unrelated_score
    out.print(
        f"queries that recalled an unrelated episode: {figures.unrelated_above_cut}"
        + (f" (highest unrelated score {highest})" if highest is not None else "")
    )
    for r in figures.results:
        if r.target and r.target_score is None:
            out.print(f"  missed {r.id}: {r.query}")


@experiment_app.command("run")
def experiment_run(
    pools: Annotated[str, typer.Option(help="Comma-separated pools.")] = "default,soldier,pupil,mother",
    prompts: Annotated[Path, typer.Option(help="One prompt per line, or JSONL with 'prompt'.", exists=True)] = Path(
        "examples/prompts.jsonl"
    ),
    out_dir: Annotated[
        Path, typer.Option("--out", help="Report directory; re-runs reuse its finished episodes.")
    ] = Path("experiment"),
    seeds: Annotated[int, typer.Option(min=1, help="Seeds per prompt.")] = 1,
    max_tokens: Annotated[int | None, typer.Option(help="Token budget of each answer.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the persona with each pool over the same prompts and seeds, and compare how the pools behave."""
    from council.evaluation import experiment
    from council.evaluation.report import experiment_report

    names = [p.strip() for p in pools.split(",") if p.strip()]
    settings = _settings(generation={"max_tokens": max_tokens} if max_tokens else None)
    for name in names:
        Library.load(settings.home).pool(name)  # unknown pools fail before any model loads
    texts = experiment.load_prompts(prompts)
    with Progress(console=err, transient=True) as bar:
        job = bar.add_task("Running episodes", total=len(names) * len(texts) * seeds)
        records = experiment.run(settings, names, texts, seeds, out_dir, progress=lambda n: bar.advance(job, n))
    figures = experiment.summarize(_episode_log(settings), records, labels=experiment.load_labels(prompts))
    meta = {"pools": names, "prompts": len(texts), "seeds": seeds, "prompt_file": str(prompts)}
    page = experiment_report(figures, meta, out_dir)
    if as_json:
        return _dump({"meta": meta, "pools": figures, "report": str(page)})
    for name, f in figures.items():
        rates = ", ".join(f"{d} {f['decision_rates'][d]['value']:.2f}" for d in ("continue", "revise", "let_go"))
        line = f"{name:<10} {rates}; revisions/episode {f['revisions_per_episode']['value']:.2f}"
        if "let_go_by_label" in f:
            by = f["let_go_by_label"]
            line += (
                f"; let go in {by['should_let_go']['value']:.2f} of episodes that should, "
                f"{by['should_answer']['value']:.2f} of those that should be answered"
            )
        out.print(line)
    out.print(f"report: {page}")


@report_app.command("open")
def report_open(directory: Annotated[Path, typer.Argument(help="A --report or --out directory.")]) -> None:
    """Print the path of the report's HTML page."""
    page = directory / "index.html"
    if not page.is_file():
        raise CouncilError(f"no report at {directory}", "pass the --report or --out directory of an eval or experiment")
    out.print(str(page.resolve()))


@app.command()
def sleep(
    since: Annotated[str | None, typer.Option(help="Only episodes created at or after this ISO time.")] = None,
    all_episodes: Annotated[bool, typer.Option("--all", help="Every episode not yet slept on (the default).")] = False,
    pool: Annotated[
        str | None, typer.Option(help="Pool that sleeps (default: sleep.pool, else the day's pool).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Dataset directory (default $COUNCIL_HOME/datasets/POOL).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="conversational or standard.")] = "conversational",
    train: Annotated[
        bool, typer.Option("--train", help="Then train a new persona version on the pairs (needs the train extra).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """The night pass: the council comments on each episode not yet slept on, and the day becomes DPO pairs.

    Pairs come from revisions, rankings of sampled answers and let-go decisions, and are exported as TRL JSONL
    with a dataset card. Safe to re-run: nothing is added twice, and a killed run resumes. With --train, the
    persona then learns from the pairs (see `council train`).
    """
    from council.engine.runner import build_runtime
    from sleep.night import SleepPass

    if fmt not in ("conversational", "standard"):
        raise typer.BadParameter(f"{fmt!r}: use conversational or standard", param_hint="--format")
    start = _since(since) if not all_episodes else None
    base = _settings()
    settings = _settings(pool=pool or base.sleep.pool or base.pool)
    with err.status("Loading models…"):
        rt = build_runtime(settings)
    night = SleepPass(rt, settings.sleep)
    todo = night.pending(start)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("Sleeping on episodes", total=len(todo))
        summary = night.run(todo, progress=lambda n: bar.advance(task, n))
    path, pairs = night.export(out_dir, fmt)  # type: ignore[arg-type]  # checked above
    data = summary.model_dump() | {"dataset": str(path), "dataset_pairs": pairs}
    if train:
        data["training"] = _train(rt, path, quiet_if_nothing_new=True)
    if as_json:
        return _dump(data)
    _print_night(summary, path, pairs)
    if train:
        _print_wakeup(data["training"])


def _since(since: str | None) -> datetime | None:
    """``--since`` as a UTC time (a naive time is local; the log keeps UTC)."""
    try:
        start = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise typer.BadParameter(f"{since!r} is not an ISO time such as 2026-11-26T00:00", param_hint="--since")
    return start.astimezone(timezone.utc) if start is not None else None


def _print_night(summary: SleepSummary, path: Path, pairs: int) -> None:
    new = ", ".join(f"{k} {v}" for k, v in summary.pairs.items())
    out.print(f"slept on {summary.episodes} episodes with the {summary.pool} council")
    if summary.claimed_elsewhere:
        out.print(f"left {summary.claimed_elsewhere} episodes to another night pass already sleeping on them")
    out.print(f"new pairs: {new} (ranking pairs dropped for a low margin: {summary.dropped_low_margin})")
    if summary.mean_margin is not None:
        out.print(f"mean margin: {summary.mean_margin}")
    for name, share in summary.agreement.items():
        out.print(f"  {name:<14} agreed with the council {share:.0%}")
    out.print(f"dataset: {path} ({pairs} pairs)")


@app.command()
def nights(
    day: Annotated[
        Path, typer.Argument(help='JSONL rows {"id","prompt","should_let_go"}: the day\'s requests.', dir_okay=False)
    ],
    count: Annotated[int, typer.Option("--nights", min=1, help="Days and nights to live in a row.")] = 3,
    per_night: Annotated[int, typer.Option(min=1, help="Requests answered each day (the next ones each day).")] = 40,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Token budget of each answer.")] = None,
    report: Annotated[
        Path | None, typer.Option(help="Report directory (default $COUNCIL_HOME/reports/nights).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Days and nights in a row: the day's episodes, the night pass, training and the gate, then a report.

    Each day answers the next --per-night requests of DAY with the persona version in use and its council,
    as real episodes in the log; the night sleeps on them, trains a version and gates it (see `council train`).
    The report plots, night by night, the persona alone (the gate's dev requests) and with its council.
    """
    from sleep.nights import run_nights, write_nights_report

    settings = _settings(generation={"max_tokens": max_tokens} if max_tokens else None)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("Starting", total=None)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        result = run_nights(
            settings, day, count, per_night, step=lambda what: bar.update(task, description=what), progress=progress
        )
    page = write_nights_report(result, report or settings.home / "reports" / "nights")
    if as_json:
        return _dump(result.model_dump(mode="json") | {"report": str(page)})
    for n in result.nights:
        verdict = "promoted" if n.promoted else "; ".join(n.reasons)
        out.print(
            f"night {n.night}: {n.dataset_pairs} pairs; {n.trained or 'nothing trained'} {verdict}", soft_wrap=True
        )
    out.print(f"the persona now runs {result.nights[-1].in_use}; report: {printable(str(page))}")


@app.command("train")
def train_command(
    dataset: Annotated[Path, typer.Argument(help="A `council sleep` dataset directory (or its pairs.jsonl).")],
    persona: Annotated[str | None, typer.Option(help="Persona to train (default: the configured one).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train a new persona version with DPO and LoRA on DATASET, gate it, and write a before/after report.

    Training starts from the version in use and mixes in a replay share of earlier pairs (train.replay); a
    share of pairs is held out (train.holdout). The new version is promoted, and used from the next run, only
    if it does at least as well as the one in use on held-out pairs, stays within train.max_kl of the base
    model, the council approves of it at least as often on the probe prompts, and alone, on dev requests, it
    declines more of what it should let go of, over-refuses at most train.max_overrefusal_rise more than the
    base and stays fluent (train.max_perplexity_ratio). A killed run resumes from its last checkpoint.
    """
    from council.engine.runner import build_runtime

    with err.status("Loading models…"):
        rt = build_runtime(_settings(persona=persona))
    data = _train(rt, dataset, quiet_if_nothing_new=False)
    _dump(data) if as_json else _print_wakeup(data)


def _train(rt: CouncilRuntime, dataset: Path, *, quiet_if_nothing_new: bool) -> dict[str, Any]:
    """Train and gate a persona version; after a night with nothing new, ``sleep --train`` just says so."""
    from council.core.errors import NothingToTrainError
    from sleep.train_version import train_version

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("Training", total=None)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        try:
            woke = train_version(rt, dataset, progress)
        except NothingToTrainError as exc:
            if not quiet_if_nothing_new:
                raise
            return {"skipped": exc.what}
    return {
        "version": woke.version.id,
        "promoted": woke.version.promoted,
        "reasons": woke.gate.reasons,
        "in_use": woke.in_use,
        "report": woke.report,
        "training": woke.version.training.model_dump() if woke.version.training else {},
        "gate": woke.gate.model_dump(),
    }


def _print_wakeup(data: dict[str, Any]) -> None:
    from council.core.training import GateResult

    if "skipped" in data:
        return out.print(f"nothing to train: {data['skipped']}")
    t, gate = data["training"], data["gate"]
    out.print(f"trained {data['version']}: {t['steps']} steps on {t['pairs']} pairs, {t['seconds']} s on {t['device']}")
    for f in GateResult.model_validate(gate).versions():
        out.print(
            f"  {f.version:<6} held-out accuracy {f.heldout_accuracy}  KL {f.kl_from_base}"
            f"  approval {f.approval}  markers {f.marker_rate}  people {f.dev_agreement}",
            soft_wrap=True,
        )
        if f.behaviour_requests:
            out.print(
                f"         alone: declines {f.declines_when_should} of what it should let go of,"
                f" {f.declines_when_should_not} of look-alikes; markers {f.alone_marker_rate}"
                f"  perplexity {f.perplexity}",
                soft_wrap=True,
            )
    verdict = "promoted" if data["promoted"] else "not promoted: " + "; ".join(data["reasons"])
    out.print(f"{data['version']} {verdict}; the persona now runs {data['in_use']}")
    out.print(f"report: {data['report']}")


def _versions(persona: str | None) -> tuple[Any, str]:
    from council.store.database import Database
    from council.store.versions import PersonaVersions

    settings = _settings()
    name = persona or settings.persona
    Library.load(settings.home).persona(name)  # an unknown name is an error, not an empty history
    return PersonaVersions(Database(settings.db_url), settings.personas_dir), name


@persona_app.command("versions")
def persona_versions(
    persona: Annotated[str | None, typer.Option(help="Persona (default: the configured one).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List a persona's trained versions, with their gate figures; * marks the one in use."""
    store, name = _versions(persona)
    current = store.current(name)
    versions = store.all(name)
    if as_json:
        rows = [v.model_dump(mode="json", exclude={"pair_ids"}) | {"in_use": v.id == current} for v in versions]
        return _dump({"persona": name, "in_use": current, "versions": rows})
    out.print(f"{'*' if current == 'base' else ' '} base")
    for v in versions:
        c = v.gate.candidate if v.gate else None
        state = "promoted" if v.promoted else f"not promoted: {v.reason}"
        out.print(
            f"{'*' if v.id == current else ' '} {v.id:<5} {v.created_at:%Y-%m-%d %H:%M} from {v.parent:<5}"
            f" held-out {c and c.heldout_accuracy} KL {c and c.kl_from_base} - {state}",
            soft_wrap=True,
        )


@persona_app.command("use")
def persona_use(
    version: Annotated[str, typer.Argument(help="A version id such as v2, or base.")],
    persona: Annotated[str | None, typer.Option(help="Persona (default: the configured one).")] = None,
) -> None:
    """Run the persona with VERSION from the next episode on (promoted or not)."""
    store, name = _versions(persona)
    store.use(name, version)
    out.print(f"persona {name} now runs {version}")


@persona_app.command("rollback")
def persona_rollback(
    persona: Annotated[str | None, typer.Option(help="Persona (default: the configured one).")] = None,
) -> None:
    """Go back to the version the persona ran before the current one."""
    store, name = _versions(persona)
    out.print(f"persona {name} now runs {store.rollback(name)}")


def _embedded(settings: Settings) -> bool:
    """The default store: SQLite and an embedded Chroma, which one process on one machine owns."""
    return settings.db_url.startswith("sqlite") and not settings.memory.url


def _owning_home(settings: Settings, alone: bool) -> AbstractContextManager[None]:
    """On the embedded store, the lock that keeps a second worker off this home; elsewhere nothing."""
    from council.core.locks import exclusive

    if not alone:
        return nullcontext()
    return exclusive(
        settings.home / "serve.lock",
        "another `council serve` or `council worker`",
        "stop it, point COUNCIL_HOME elsewhere, or share a Postgres store (COUNCIL_DATABASE_URL) and a Chroma "
        "server (memory.url) between workers",
    )


@app.command()
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
    settings = _settings(pool=pool)
    alone = _embedded(settings)
    with _owning_home(settings, alone and worker):
        _serve(settings, host, port, worker, alone)


def _serve(settings: Settings, host: str, port: int, worker: bool, alone: bool) -> None:
    """Load the models and serve until SIGTERM or Ctrl-C."""
    import signal

    import uvicorn

    from council.engine.runner import build_runtime
    from council.server import create_app

    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get("COUNCIL_API_KEY"):
        err.print(f"warning: serving on {host} without COUNCIL_API_KEY: anyone who can reach it can use it")
    with err.status("Loading models…"):
        rt = build_runtime(settings)
    server_app = create_app(rt, run_tasks=worker, alone=alone)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:  # noqa: ANN401 - signal frame
            server_app.state.services.worker.stop()  # waiting clients hear at once; the episode stays checkpointed
            super().handle_exit(sig, frame)

    tasks = "" if worker else " (tasks run by `council worker`s)"
    err.print(f"serving {rt.persona.name} with the {rt.pool.name} council on http://{host}:{port}/v1{tasks}")
    # uvicorn re-raises the signal it caught once it has shut down; a no-op handler here makes SIGTERM exit 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    Server(uvicorn.Config(server_app, host=host, port=port, log_level="warning")).run()


@app.command("worker")
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

    settings = _settings(pool=pool)
    alone = _embedded(settings)
    with _owning_home(settings, alone):
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


@app.command()
def ask(
    prompt: Annotated[str, typer.Argument(help="What the persona is asked.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the daemon to answer, then print the answer.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait with --wait.")] = 600.0,
    as_json: JsonFlag = False,
) -> None:
    """Queue PROMPT in the inbox; a running `council serve` answers it while idle."""
    import time

    from council.store.tasks import TaskQueue

    log = _episode_log(_settings())
    queue = TaskQueue(log.db)
    task = queue.put(prompt, "inbox")
    if not wait:
        return _dump(task.model_dump(mode="json")) if as_json else out.print(f"queued task {task.id}")
    deadline = time.monotonic() + timeout
    with _interruptible(f"the daemon still answers task {task.id}"):
        while (task := queue.get(task.id)).status in ("queued", "running"):
            if time.monotonic() > deadline:
                raise CouncilError(
                    f"task {task.id} is still {task.status}", "is `council serve` running? It stays queued"
                )
            time.sleep(0.5)
    if task.status == "failed":
        raise CouncilError(f"task {task.id} failed: {task.error}", "see `council logs show " + task.episode_id + "`")
    episode = log.get(task.episode_id)
    _dump(episode.model_dump(mode="json")) if as_json else out.print(episode.final_text)


# typer 0.29 and later raise their own copy of click's usage errors; older ones raise click's.
USAGE_ERRORS: tuple[type[Exception], ...] = (
    click.ClickException,
    *([typer_click.ClickException] if typer_click else []),
)


SHOWN_CHARS = 40  # how much of a refused argument the error repeats


def _check_text(args: list[str]) -> None:
    """Refuse a text argument that is not valid text (bytes that are not UTF-8 reach Python as lone surrogates).

    A path's argument is exempt: a file name may be any bytes, and ``Path`` carries them through.
    """
    refused = [(i, arg, problem) for i, arg in enumerate(args) if (problem := invalid_text(arg)) is not None]
    paths = _path_arguments(args) if refused else set()
    for i, arg, problem in refused:
        if i not in paths:
            shown = printable(arg)
            shown = shown if len(shown) <= SHOWN_CHARS else shown[:SHOWN_CHARS] + "…"
            raise CouncilError(f"argument {i + 1} ('{shown}') is {problem}", "pass UTF-8 text")


def _path_arguments(args: list[str]) -> set[int]:
    """Indices of ``args`` that a parameter typed ``Path`` takes (as an option's value or positionally)."""
    command = typer.main.get_command(app)
    i = 0
    while isinstance(command, TyperGroup) and i < len(args) and args[i] in command.commands:
        command, i = command.commands[args[i]], i + 1
    if command.callback is None:
        return set()
    hints = get_type_hints(command.callback)
    paths = {name for name, hint in hints.items() if Path in (hint, *get_args(hint))}
    options = {o: p for p in command.params if isinstance(p, TyperOption) for o in (*p.opts, *p.secondary_opts)}
    positional = [p for p in command.params if not isinstance(p, TyperOption)]
    found: set[int] = set()
    while i < len(args):
        name, inline, _ = args[i].partition("=")
        option = options.get(name)
        if option is not None:
            takes = not option.is_flag and not inline  # the value is the next argument
            if option.name in paths:
                found.add(i + 1 if takes else i)
            i += 2 if takes else 1
            continue
        if positional:
            if positional[0].name in paths:
                found.add(i)
            if positional[0].nargs != -1:
                positional.pop(0)
        i += 1
    return found


def main(argv: list[str] | None = None) -> int:
    """Entry point: errors become one line and exit code 1; ``--debug`` or COUNCIL_DEBUG=1 shows tracebacks."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("COUNCIL_DEBUG", "") not in ("", "0")
    args = [a for a in args if a != "--debug"]
    try:
        _check_text(args)
        code = app(args=args, prog_name="council", standalone_mode=False)
    except (click.exceptions.Exit, typer.Exit) as exc:
        return exc.exit_code
    except Interrupt as exc:
        err.print(printable(str(exc)))
        return exc.exit_code
    except USAGE_ERRORS as exc:
        usage = cast(click.ClickException, exc)  # typer's copy of the class has the same interface
        usage.show()
        return usage.exit_code
    except (click.exceptions.Abort, typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        return 130
    except CouncilError as exc:
        if debug:
            raise
        err.print(Text("error: ", style="red") + Text(printable(str(exc))), soft_wrap=True)
        return 1
    except Exception as exc:
        if debug:
            raise
        line = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
        err.print(Text("error: ", style="red") + Text(printable(line)), soft_wrap=True)
        return 1
    if code == 130:  # typer answers a KeyboardInterrupt with exit code 130 in place of the command's result
        err.print("interrupted")
    return code if isinstance(code, int) and not isinstance(code, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
