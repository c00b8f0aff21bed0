"""`council eval ethics|pairs`: the council, each archetype and the persona alone, judged against human labels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from council.core.datafiles import read_jsonl
from council.engine.runtime import CouncilRuntime
from council.evaluation import metrics as m
from council.evaluation.panel import COUNCIL, PERSONA, Judges, centre_on_median, council_probability

EvalTask = Literal["ethics", "pairs", "letgo"]
METRICS: dict[str, m.Metric] = {
    "accuracy": m.accuracy,
    "balanced_accuracy": m.balanced_accuracy,
    "auroc": m.auroc,
    "ece": m.ece,
}


class EthicsRow(BaseModel):
    """One ETHICS commonsense item: label 1 means the narrator's action is clearly wrong."""

    id: str
    label: int
    scenario: str
    row: int | None = None


class PairRow(BaseModel):
    """One preference pair: ``chosen`` is the reply people preferred."""

    id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_first: bool | None = None


class LetGoRow(BaseModel):
    """One request: ``should_let_go`` says whether a careful assistant should decline it rather than answer."""

    id: str
    prompt: str
    should_let_go: bool


ROWS: dict[str, type[BaseModel]] = {"ethics": EthicsRow, "pairs": PairRow, "letgo": LetGoRow}
CI = tuple[float, float]


class JudgeFigures(BaseModel):
    """One judge on ethics or pairs: each metric with its bootstrap 95% CI."""

    accuracy: float
    accuracy_ci95: CI
    balanced_accuracy: float
    balanced_accuracy_ci95: CI
    auroc: float
    auroc_ci95: CI
    ece: float
    ece_ci95: CI
    minimal_pair_accuracy: float | None = None  # ethics rows that come in minimal pairs only
    minimal_pair_accuracy_ci95: CI | None = None


class LetGoFigures(BaseModel):
    """One judge on let-go requests: AUROC of P(let go), its let-go rates, and the accuracy of its decisions."""

    auroc: float
    auroc_ci95: CI
    let_go_when_should: float
    let_go_when_should_ci95: CI
    let_go_when_should_not: float
    let_go_when_should_not_ci95: CI
    accuracy: float
    accuracy_ci95: CI
    balanced_accuracy: float
    balanced_accuracy_ci95: CI


class Panel(BaseModel):
    """Whether the council beats its best member and the persona alone, and how its members' errors align."""

    best_archetype: str
    council_minus_best_archetype: float
    council_minus_best_archetype_ci95: CI
    council_minus_persona: float
    council_minus_persona_ci95: CI
    best_auroc_archetype: str | None = None
    council_minus_best_auroc: float | None = None
    council_minus_best_auroc_ci95: CI | None = None
    measured_council_accuracy: float
    independent_errors_majority_accuracy: float
    error_correlation: dict[str, dict[str, float]]
    mean_error_correlation: float | None


class Items(BaseModel):
    """Per row: its id, its label and every judge's probability (for calibration curves)."""

    ids: list[str]
    labels: list[int]
    probs: dict[str, list[float]]


TaskFigures = TypeVar("TaskFigures", JudgeFigures, LetGoFigures)


class Evaluation(BaseModel, Generic[TaskFigures]):
    """One `council eval` run; ``results.json`` holds it (items under ``_items``)."""

    model_config = ConfigDict(populate_by_name=True)

    task: EvalTask
    file: str
    rows: int
    pool: str
    rule: str
    majority_baseline: float
    majority_baseline_ci95: CI | None = None
    council: TaskFigures
    archetypes: dict[str, TaskFigures]
    persona: TaskFigures
    panel: Panel
    position_bias: dict[str, float] | None = None  # pairs only
    items: Items = Field(alias="_items")

    def judges(self) -> dict[str, TaskFigures]:
        """Council, persona, then each archetype."""
        return {"council": self.council, "persona": self.persona, **self.archetypes}

    def public(self) -> dict[str, Any]:
        """The figures as `--json` prints them (no per-row items)."""
        return self.model_dump(exclude={"items"}, exclude_unset=True)

    def stored(self) -> dict[str, Any]:
        """Everything, as ``results.json`` keeps it; ``model_validate`` reads it back."""
        return self.model_dump(by_alias=True, exclude_unset=True)


class LetGoEvaluation(Evaluation[LetGoFigures]):
    """One `council eval letgo` run."""

    should_let_go: int


JudgeEvaluation = Evaluation[JudgeFigures]  # `council eval ethics|pairs`


def load_rows(path: Path, task: EvalTask, limit: int | None = None) -> list[Any]:
    """Read and validate a JSONL file of ``task`` rows; a bad line is a one-line error naming the file and line."""
    return read_jsonl(path, ROWS[task], task, limit)


def minimal_pairs(rows: list[EthicsRow]) -> list[tuple[int, int]]:
    """Indices of adjacent rows (consecutive ``row`` numbers) with opposite labels."""
    pairs = []
    for i in range(len(rows) - 1):
        a, b = rows[i], rows[i + 1]
        if a.row is not None and b.row is not None and abs(a.row - b.row) == 1 and a.label != b.label:
            pairs.append((i, i + 1))
    return pairs


def _judge_metrics(y: np.ndarray, p: np.ndarray, pairs: list[tuple[int, int]], resamples: int) -> JudgeFigures:
    out: dict[str, Any] = {}
    for name, metric in METRICS.items():
        result = m.with_ci(metric, y, p, resamples)
        out[name], out[name + "_ci95"] = result["value"], result["ci95"]
    if pairs:
        hits = m.minimal_pair_hits(y, p, pairs)
        result = m.with_ci(lambda _, h: float(np.mean(h)), hits, hits, resamples)
        out["minimal_pair_accuracy"], out["minimal_pair_accuracy_ci95"] = result["value"], result["ci95"]
    return JudgeFigures(**out)


def _panel(
    rt: CouncilRuntime,
    figures: dict[str, JudgeFigures] | dict[str, LetGoFigures],
    y: np.ndarray,
    p: dict[str, np.ndarray],
    resamples: int,
    scores: dict[str, np.ndarray] | None = None,
) -> Panel:
    """Whether the council beats its best member and the persona alone (paired CIs); how members' errors align.

    ``p`` holds each judge's probability of label 1 (or its 0/1 decision); ``p > 0.5`` is what it says.
    ``scores`` (default ``p``) are the probabilities whose AUROC is compared with the best member's by AUROC.
    """
    members = list(rt.council.members)
    scores = p if scores is None else scores
    ranked = [n for n in members if not np.isnan(scores[n]).any()]
    best_auroc = max(ranked, key=lambda n: m.auroc(y, scores[n])) if ranked else None
    vs_auroc = m.difference_ci(m.auroc, y, scores[COUNCIL], scores[best_auroc], resamples) if best_auroc else None
    best = max(members, key=lambda n: figures[n].accuracy)
    vs_best = m.difference_ci(m.accuracy, y, p[COUNCIL], p[best], resamples)
    vs_persona = m.difference_ci(m.accuracy, y, p[COUNCIL], p[PERSONA], resamples)
    independent = m.independent_majority_accuracy(
        [figures[n].accuracy for n in members], [rt.council.members[n].weight for n in members]
    )
    correlation = m.error_correlation({n: (p[n] > 0.5) != (y == 1) for n in members})
    return Panel(
        best_archetype=best,
        council_minus_best_archetype=vs_best["value"],
        council_minus_best_archetype_ci95=vs_best["ci95"],
        council_minus_persona=vs_persona["value"],
        council_minus_persona_ci95=vs_persona["ci95"],
        best_auroc_archetype=best_auroc,
        council_minus_best_auroc=vs_auroc["value"] if vs_auroc else None,
        council_minus_best_auroc_ci95=vs_auroc["ci95"] if vs_auroc else None,
        measured_council_accuracy=figures[COUNCIL].accuracy,
        independent_errors_majority_accuracy=round(independent, 4),
        error_correlation=correlation,
        mean_error_correlation=m.mean_off_diagonal(correlation),
    )


def evaluate(
    rt: CouncilRuntime,
    path: Path,
    task: EvalTask,
    *,
    limit: int | None = None,
    resamples: int = 1000,
    progress: Callable[[int], None] = lambda _: None,
) -> JudgeEvaluation:
    """Judge every row with every judge, then compute metrics, CIs and the panel comparison."""
    rows = load_rows(path, task, limit)
    judges = Judges(rt)
    raw: dict[str, list[float]] = {n: [] for n in judges.names}
    slot_a: dict[str, list[float]] = {n: [] for n in judges.names}
    labels = []
    for row in rows:
        if task == "ethics":
            scores = judges.ethics(row.scenario)
            labels.append(row.label)
        else:
            first_is_chosen = row.chosen_first if row.chosen_first is not None else len(labels) % 2 == 0
            first, second = (row.chosen, row.rejected) if first_is_chosen else (row.rejected, row.chosen)
            scores, bias = judges.first_better(row.prompt, first, second)
            labels.append(int(first_is_chosen))
            for name in judges.names:
                slot_a[name].append(bias[name])
        for name in judges.names:
            raw[name].append(scores[name])
        progress(1)
    y = np.array(labels)
    probs = _centred(task, raw, judges.trained)
    members = {n: probs[n] for n in rt.council.members}
    council = probs[COUNCIL] if judges.pooled else council_probability(rt, members)
    probs.pop(COUNCIL, None)
    pairs = minimal_pairs(rows) if task == "ethics" else []

    baseline = m.with_ci(m.majority_baseline, y, y, resamples)
    figures = {n: _judge_metrics(y, p, pairs, resamples) for n, p in {COUNCIL: council, **members}.items()}
    bias = {n: round(float(np.mean(v)) - 0.5, 4) for n, v in slot_a.items()}
    return JudgeEvaluation(
        task=task,
        file=str(path),
        rows=len(rows),
        pool=rt.pool.name,
        rule=rt.pool.rule,
        majority_baseline=baseline["value"],
        majority_baseline_ci95=baseline["ci95"],
        council=figures[COUNCIL],
        archetypes={n: figures[n] for n in members},
        persona=_judge_metrics(y, probs[PERSONA], pairs, resamples),
        panel=_panel(rt, figures, y, {COUNCIL: council, PERSONA: probs[PERSONA], **members}, resamples),
        **({"position_bias": bias} if task == "pairs" else {}),
        items=Items(
            ids=[r.id for r in rows],
            labels=y.tolist(),
            probs={"council": council.round(4).tolist(), **{n: p.round(4).tolist() for n, p in probs.items()}},
        ),
    )


def _centred(task: EvalTask, raw: dict[str, list[float]], trained: set[str]) -> dict[str, np.ndarray]:
    """Each judge's probabilities, centred on their median over the file (``centre_on_median``) where they need it.

    Token judges always. On an ethics file the council and trained judges too: a revise head is calibrated for
    how rarely a segment should be revised, not for a file where about half the actions are wrong, so at its vote
    threshold it would flag few of them whatever it knows (its accuracy then said nothing).
    """
    centre = {n for n in raw if task == "ethics" or n not in trained}
    return {n: centre_on_median(np.array(v)) if n in centre else np.array(v) for n, v in raw.items()}


def _rate(decided: np.ndarray, mask: np.ndarray, resamples: int) -> dict[str, object]:
    """Share of let-go decisions among the ``mask`` rows, with a bootstrap CI."""
    picked = decided[mask].astype(float)
    return m.with_ci(lambda _, d: float(np.mean(d)) if len(d) else float("nan"), picked, picked, resamples)


def _letgo_metrics(y: np.ndarray, p: np.ndarray, decided: np.ndarray, resamples: int) -> LetGoFigures:
    """AUROC of P(let go), the let-go rates on both kinds of request, and accuracy of the decisions."""
    out: dict[str, Any] = {}
    figures = {
        "auroc": m.with_ci(m.auroc, y, p, resamples),
        "let_go_when_should": _rate(decided, y == 1, resamples),
        "let_go_when_should_not": _rate(decided, y == 0, resamples),
        "accuracy": m.with_ci(m.accuracy, y, decided.astype(float), resamples),
        "balanced_accuracy": m.with_ci(m.balanced_accuracy, y, decided.astype(float), resamples),
    }
    for name, result in figures.items():
        out[name], out[name + "_ci95"] = result["value"], result["ci95"]
    return LetGoFigures(**out)


def evaluate_letgo(
    rt: CouncilRuntime,
    path: Path,
    *,
    limit: int | None = None,
    resamples: int = 1000,
    progress: Callable[[int], None] = lambda _: None,
) -> LetGoEvaluation:
    """Ask every judge whether to let go of each request, and compare with what people labelled."""
    rows = load_rows(path, "letgo", limit)
    judges = Judges(rt)
    names = list(dict.fromkeys([*judges.names, COUNCIL]))
    probs: dict[str, list[float]] = {n: [] for n in judges.names}
    decided: dict[str, list[bool]] = {n: [] for n in names}
    for row in rows:
        said, lets_go = judges.let_go(row.prompt)
        for name in judges.names:
            probs[name].append(said[name])
        for name in names:
            decided[name].append(lets_go[name])
        progress(1)
    y = np.array([int(r.should_let_go) for r in rows])
    p = {n: np.array(v) for n, v in probs.items()}
    members = {n: p[n] for n in rt.council.members}
    if not judges.pooled:
        p[COUNCIL] = council_probability(rt, members)
    d = {n: np.array(v) for n, v in decided.items()}
    figures = {n: _letgo_metrics(y, p[n], d[n], resamples) for n in [COUNCIL, PERSONA, *members]}
    return LetGoEvaluation(
        task="letgo",
        file=str(path),
        rows=len(rows),
        should_let_go=int(y.sum()),
        pool=rt.pool.name,
        rule=rt.pool.rule,
        majority_baseline=round(m.majority_baseline(y), 4),
        council=figures[COUNCIL],
        archetypes={n: figures[n] for n in members},
        persona=figures[PERSONA],
        panel=_panel(rt, figures, y, {n: d[n].astype(float) for n in names}, resamples, p),
        items=Items(
            ids=[r.id for r in rows], labels=y.tolist(), probs={n: np.round(v, 4).tolist() for n, v in p.items()}
        ),
    )
