"""`council eval`, `council experiment` and `council report`: the council measured on data, and pools compared."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress

from archetypes.library import Library
from council.cli._common import JsonFlag, dump, episode_log, err, example, out
from council.core.errors import CouncilError
from council.core.settings import load_settings
from council.core.text import printable

if TYPE_CHECKING:
    from council.evaluation.evaluate import Evaluation

eval_app = typer.Typer(help="The council as a judge on human-labelled data.", no_args_is_help=True)
experiment_app = typer.Typer(help="Compare pools over a prompt set.", no_args_is_help=True)
report_app = typer.Typer(help="Reports written by eval and experiment.", no_args_is_help=True)


def _evaluate(task: str, file: Path, pool: str | None, limit: int | None, report: Path | None, as_json: bool) -> None:
    from council.engine.runner import build_runtime
    from council.evaluation.evaluate import evaluate, evaluate_letgo
    from council.evaluation.report import eval_report
    from council.render_evals import print_evaluation

    with err.status("Loading models…"):
        rt = build_runtime(load_settings(pool=pool))
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
    dump(result.public()) if as_json else print_evaluation(out, result)


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
    from council.evaluation import behaviour as b
    from council.render_evals import print_behaviour

    if pool and no_council:
        raise typer.BadParameter("give --pool or --no-council, not both", param_hint="--no-council")
    versions = [v.strip() for v in (persona or "").split(",") if v.strip()]
    settings = load_settings(pool=pool, generation={"max_tokens": max_tokens} if max_tokens else None)
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
    dump(result.public()) if as_json else print_behaviour(out, result)


@eval_app.command("recall")
def eval_recall(
    file: Annotated[
        Path,
        typer.Argument(
            help='JSONL rows {"id","prompt","query"}; a row without prompt is off-topic.',
            exists=True,
            show_default="examples/recall_paraphrases.jsonl",
        ),
    ] = example("recall_paraphrases.jsonl"),
    max_tokens: Annotated[int | None, typer.Option(help="Token budget of each answer.")] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Keep the episodes here; a re-run reuses them (default: temporary).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Answer each prompt, remember it, then recall it by a paraphrase: recall@k and unrelated episodes recalled."""
    from council.evaluation.recall import evaluate_recall, load_recall_rows, recall_runtime
    from council.render_evals import print_recall

    rows = load_recall_rows(file)
    settings = load_settings(generation={"max_tokens": max_tokens} if max_tokens else None)
    with ExitStack() as stack:
        with err.status("Loading models…"):
            rt = stack.enter_context(recall_runtime(settings, out_dir))
        with Progress(console=err, transient=True) as bar:
            job = bar.add_task("Answering and remembering", total=len(rows))
            figures = evaluate_recall(rt, rows, progress=lambda n: bar.advance(job, n))
    dump(figures.model_dump()) if as_json else print_recall(out, figures)


@experiment_app.command("run")
def experiment_run(
    pools: Annotated[str, typer.Option(help="Comma-separated pools.")] = "default,soldier,pupil,mother",
    prompts: Annotated[
        Path,
        typer.Option(
            help="One prompt per line, or JSONL with 'prompt'.", exists=True, show_default="examples/prompts.jsonl"
        ),
    ] = example("prompts.jsonl"),
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
    from council.render_evals import print_experiment

    names = [p.strip() for p in pools.split(",") if p.strip()]
    settings = load_settings(generation={"max_tokens": max_tokens} if max_tokens else None)
    for name in names:
        Library.load(settings.home).pool(name)  # unknown pools fail before any model loads
    texts = experiment.load_prompts(prompts)
    with Progress(console=err, transient=True) as bar:
        job = bar.add_task("Running episodes", total=len(names) * len(texts) * seeds)
        records = experiment.run(settings, names, texts, seeds, out_dir, progress=lambda n: bar.advance(job, n))
    figures = experiment.summarize(episode_log(settings), records, labels=experiment.load_labels(prompts))
    meta = {"pools": names, "prompts": len(texts), "seeds": seeds, "prompt_file": str(prompts)}
    page = experiment_report(figures, meta, out_dir)
    if as_json:
        return dump({"meta": meta, "pools": figures, "report": str(page)})
    print_experiment(out, figures, page)


@report_app.command("open")
def report_open(directory: Annotated[Path, typer.Argument(help="A --report or --out directory.")]) -> None:
    """Print the path of the report's HTML page."""
    page = directory / "index.html"
    if not page.is_file():
        raise CouncilError(f"no report at {directory}", "pass the --report or --out directory of an eval or experiment")
    out.print(str(page.resolve()))
