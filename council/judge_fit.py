"""`council archetypes fit`: train an archetype's judge from its labelled files, deterministically.

Each judgment (let go, revise) is a logistic regression on the judges' features (``council.judge``), fitted on
the ``train`` rows of every file that teaches it, with classes weighted to balance. Its probability is then
calibrated (Platt scaling, classes balanced) on out-of-fold scores of those rows, so 0.5 is a balanced
operating point and no threshold is set by hand. The ``dev`` rows are held out and only measured.

The same files give the same heads file, byte for byte: the solver is deterministic, weights are stored as
float32 in safetensors with sorted metadata, and figures are rounded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from archetypes.models import JUDGMENTS, Archetype, JudgeSource, Judgment
from council.errors import DefinitionError
from council.judge import FEATURES, FORMAT, Reader

FOLDS = 5
MAX_TEXT_CHARS = 1000  # beyond what the encoder reads (128 tokens)


@dataclass(frozen=True)
class Row:
    """One labelled text: what it teaches, and whether it is held out."""

    text: str
    verdict: str
    dev: bool


class HeadFigures(BaseModel):
    """Held-out figures of one learnt judgment."""

    train_rows: int
    dev_rows: int
    dev_positive: int
    auroc: float | None
    balanced_accuracy: float | None
    flagged_when_should: float | None
    flagged_when_should_not: float | None


class FitReport(BaseModel):
    """What `council archetypes fit` did for one archetype."""

    archetype: str
    weights: str
    sha256: str
    heads: dict[str, HeadFigures]


def _split(row: dict[str, Any], text: str) -> bool:
    split = row.get("split")
    if split in ("train", "dev"):
        return split == "dev"
    return int(hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest(), 16) % 5 == 0


def _text(row: dict[str, Any], spec: str, where: str) -> str:
    try:
        text = spec.format_map(row) if "{" in spec else row[spec]
    except KeyError as exc:
        raise DefinitionError(f"{where}: no column {exc.args[0]!r}", "name columns the file has") from None
    if not isinstance(text, str):
        raise DefinitionError(f"{where}: column {spec!r} is not text", "point the judge at a text column")
    return text[:MAX_TEXT_CHARS]


def read_source(source: JudgeSource, path: Path) -> list[Row]:
    """The rows of one source file; bad data is a one-line error naming the file, the line and the fix."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"judge data {path} cannot be read ({exc})", "check the judge's source paths") from exc
    rows: list[Row] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DefinitionError(f"{where}: not JSON ({exc.msg})", "write one JSON object per line") from None
        if not isinstance(row, dict):
            raise DefinitionError(f"{where}: not a JSON object", "write one JSON object per line")
        if any(str(row.get(column)).lower() not in values for column, values in source.where.items()):
            continue
        if source.chosen is not None and source.rejected is not None:
            chosen, rejected = _text(row, source.chosen, where), _text(row, source.rejected, where)
            dev = _split(row, chosen)
            rows += [Row(chosen, "continue", dev), Row(rejected, source.verdict or "revise", dev)]
            continue
        assert source.text is not None
        if source.label is None:
            text = _text(row, source.text, where)
            rows.append(Row(text, source.verdict or "continue", _split(row, text)))
            continue
        if source.label not in row:
            raise DefinitionError(f"{where}: no column {source.label!r}", "name the label column the file has")
        value = json.dumps(row[source.label]).strip('"').lower()
        if value not in source.labels:
            known = ", ".join(sorted(source.labels))
            raise DefinitionError(f"{where}: unknown label {value!r}", f"map it in the judge's labels (known: {known})")
        text = _text(row, source.text, where)
        rows.append(Row(text, source.labels[value], _split(row, text)))
    if not rows:
        raise DefinitionError(f"judge data {path} has no rows to learn from", "give it labelled JSONL rows")
    return rows


def fit_head(x: np.ndarray, y: np.ndarray, c: float) -> np.ndarray:
    """Weights and bias of a class-balanced L2 logistic regression (lbfgs), as ``[w..., b]``."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit(x, y)
    return np.append(model.coef_[0], model.intercept_[0])


def calibrate(x: np.ndarray, y: np.ndarray, c: float) -> tuple[float, float]:
    """Platt scaling (a, c) on out-of-fold scores, classes balanced: 0.5 becomes the balanced operating point."""
    folds = np.arange(len(y)) % FOLDS
    scores = np.zeros(len(y))
    for k in range(FOLDS):
        wb = fit_head(x[folds != k], y[folds != k], c)
        scores[folds == k] = x[folds == k] @ wb[:-1] + wb[-1]
    ab = fit_head(scores[:, None], y, 1e4)
    return float(ab[0]), float(ab[1])


def _figures(p: np.ndarray, y: np.ndarray, train_rows: int) -> HeadFigures:
    from council.evaluation.metrics import auroc, balanced_accuracy

    both = len(set(y.tolist())) == 2
    flagged = p >= 0.5
    return HeadFigures(
        train_rows=train_rows,
        dev_rows=len(y),
        dev_positive=int(y.sum()),
        auroc=round(auroc(y, p), 4) if both else None,
        balanced_accuracy=round(balanced_accuracy(y, p), 4) if both else None,
        flagged_when_should=round(float(flagged[y == 1].mean()), 4) if y.any() else None,
        flagged_when_should_not=round(float(flagged[y == 0].mean()), 4) if (y == 0).any() else None,
    )


def fit_judge(
    archetype: Archetype,
    resolve: Callable[[str], Path],
    reader: Reader,
    out: Path,
    progress: Callable[[str], None] = lambda _: None,
) -> FitReport:
    """Fit ``archetype``'s judge from its sources and write its heads file to ``out``."""
    judge = archetype.judge
    if judge is None:
        raise DefinitionError(f"archetype {archetype.name!r} has no judge", "add a judge: section with sources")
    tensors: dict[str, np.ndarray] = {}
    figures: dict[str, HeadFigures] = {}
    digests = []
    rows_by: dict[Judgment, list[Row]] = {j: [] for j in JUDGMENTS}
    for source in judge.sources:
        path = resolve(source.file)
        rows = read_source(source, path)
        digests.append({"file": source.file, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        for judgment in source.judgments():
            rows_by[judgment] += [r for r in rows if r.verdict in ("continue", judgment)]
    for judgment, rows in rows_by.items():
        if not rows:
            continue
        y = np.array([r.verdict == judgment for r in rows], dtype=np.int64)
        if len(set(y.tolist())) < 2:
            raise DefinitionError(
                f"archetype {archetype.name!r}: the {judgment} judgment has only one kind of row",
                "give it rows labelled continue as well",
            )
        progress(f"{archetype.name}: reading {len(rows)} texts for {judgment}")
        x = reader.features([r.text for r in rows]).astype(np.float64)
        dev = np.array([r.dev for r in rows])
        progress(f"{archetype.name}: fitting {judgment}")
        wb = fit_head(x[~dev], y[~dev], judge.regularization)
        a, c = calibrate(x[~dev], y[~dev], judge.regularization)
        tensors[f"{judgment}.w"] = wb[:-1].astype(np.float32)
        tensors[f"{judgment}.bac"] = np.array([wb[-1], a, c], dtype=np.float32)
        w, bac = tensors[f"{judgment}.w"].astype(np.float64), tensors[f"{judgment}.bac"].astype(np.float64)
        p = 1 / (1 + np.exp(-(bac[1] * (x[dev] @ w + bac[0]) + bac[2])))
        figures[judgment] = _figures(p, y[dev], int((~dev).sum()))
    meta = {
        "format": FORMAT,
        "features": FEATURES,
        "encoder": reader.encoder,
        "archetype": archetype.name,
        "sources": digests,
        "figures": {k: v.model_dump() for k, v in figures.items()},
    }
    from safetensors.numpy import save

    raw = save(tensors, metadata={"judge": json.dumps(meta, sort_keys=True)})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(raw)
    tmp.replace(out)
    return FitReport(archetype=archetype.name, weights=str(out), sha256=hashlib.sha256(raw).hexdigest(), heads=figures)
