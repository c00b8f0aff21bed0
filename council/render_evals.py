"""Terminal output for evaluations: judge fits, judged datasets, behaviour, recall and pool experiments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from council.evaluation import behaviour as b
from council.evaluation.evaluate import Evaluation, LetGoFigures
from council.evaluation.recall import RecallFigures
from council.fitting.heads import FitReport, HeadFigures


def head_figures(f: HeadFigures) -> str:
    """One head's held-out figures on one line."""
    return (
        f"AUROC {f.auroc}, balanced accuracy {f.balanced_accuracy}, flags {f.flagged_when_should} when it should, "
        f"{f.flagged_when_should_not} when it should not"
    )


def print_judge_fits(console: Console, reports: list[FitReport]) -> None:
    """Where each fitted judge went, and its heads' held-out figures (and fitted without each source)."""
    for report in reports:
        console.print(f"[bold]{report.archetype}[/] -> {report.weights} ({report.sha256[:16]})")
        for judgment, f in report.heads.items():
            console.print(f"  {judgment:<7} held out {f.dev_rows:>5} rows of its sources: {head_figures(f)}")
            for source, g in report.cross_source.get(judgment, {}).items():
                console.print(f"          fitted without {source} ({g.dev_rows} rows): {head_figures(g)}")


def print_evaluation(console: Console, result: Evaluation[Any]) -> None:
    """Accuracy, AUROC (and let-go rates) per judge, then how the council compares with its best archetype."""
    console.print(f"{result.rows} rows, pool {result.pool}, majority baseline {result.majority_baseline:.3f}")
    for name, figures in result.judges().items():
        low, high = figures.accuracy_ci95
        line = f"  {name:<14} accuracy {figures.accuracy:.3f} [{low:.3f}, {high:.3f}]  auroc {figures.auroc:.3f}"
        if isinstance(figures, LetGoFigures):
            line += (
                f"  lets go {figures.let_go_when_should:.2f} when it should, "
                f"{figures.let_go_when_should_not:.2f} when it should not"
            )
        console.print(line)
    panel = result.panel
    gap, ci = panel.council_minus_best_archetype, list(panel.council_minus_best_archetype_ci95)
    independent = panel.independent_errors_majority_accuracy
    console.print(f"council − best archetype {gap:+.3f} {ci}; if errors were independent {independent:.3f}")
    console.print(f"mean error correlation between archetypes {panel.mean_error_correlation}")


def print_behaviour(console: Console, result: b.BehaviourEvaluation) -> None:
    """The per-version summary table of whole episodes, and the decline detector's figures."""
    table = Table(
        *b.SUMMARY_HEADER, title=f"{result.rows} rows ({result.should_let_go} to let go), {result.max_tokens} tokens"
    )
    for row in b.summary_rows(result):
        table.add_row(*row)
    console.print(table)
    console.print("stops: the council let go, or with --no-council the persona declined; answer length in words")
    console.print(b.detector_line(result))


def print_recall(console: Console, figures: RecallFigures) -> None:
    """Recall@k, the scores around the cut, and the paraphrases whose episode was not recalled."""
    console.print(
        f"{figures.episodes} episodes (answers of {figures.mean_answer_words:.0f} words on average), "
        f"{figures.paraphrases} paraphrases, {figures.off_topic} off-topic queries; "
        f"top {figures.k}, cut {figures.min_score}"
    )
    console.print(f"recall@{figures.k} {figures.recall_at_k:.3f}; lowest own score {figures.lowest_target_score}")
    highest = figures.highest_unrelated_score
    console.print(
        f"queries that recalled an unrelated episode: {figures.unrelated_above_cut}"
        + (f" (highest unrelated score {highest})" if highest is not None else "")
    )
    for r in figures.results:
        if r.target and r.target_score is None:
            console.print(f"  missed {r.id}: {r.query}")


def print_experiment(console: Console, figures: dict[str, Any], page: Path) -> None:
    """Per pool: its decision rates, revisions per episode and (with labels) let-go rates; then the report's page."""
    for name, f in figures.items():
        rates = ", ".join(f"{d} {f['decision_rates'][d]['value']:.2f}" for d in ("continue", "revise", "let_go"))
        line = f"{name:<10} {rates}; revisions/episode {f['revisions_per_episode']['value']:.2f}"
        if "let_go_by_label" in f:
            by = f["let_go_by_label"]
            line += (
                f"; let go in {by['should_let_go']['value']:.2f} of episodes that should, "
                f"{by['should_answer']['value']:.2f} of those that should be answered"
            )
        console.print(line)
    console.print(f"report: {page}")
