"""`council nights`: days and nights in a row, each a day of episodes, the night pass, training and the gate.

Night k answers the next ``per_night`` requests of the day file (``{"id","prompt","should_let_go"}``, taken in
order and round again), as real episodes the night then sleeps on, with the persona version in use and its
council. The night pass turns them into pairs, a version is trained on them and gated; a refused version
changes nothing, so the next night runs the same persona.

The report follows the persona night by night:
- **with its council**: the day's episodes, where the council decides (how often it let go of what it should
  and should not, the marker rate, budget stops, the revise judgments' mean probability);
- **alone**: what the gate measured of the version in use after each night, with no council, on dev requests
  no night trains on (``sleep.gate.GateSets``): declines of what it should let go of, over-refusal (on the
  training sources' dev rows, and on requests from sources nothing trains on), its own marker rate and its
  perplexity on answers people wrote. Night 0 is the version the first night started from.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from pydantic import BaseModel, Field

from archetypes.backends import LoadedModels
from council.core.datafiles import read_jsonl
from council.core.errors import NothingToTrainError
from council.core.pairs import SOURCES
from council.core.settings import Settings
from council.core.text import printable
from council.core.training import Figures
from council.engine.judges import Reader
from council.engine.runner import build_runtime
from council.engine.runtime import CouncilRuntime
from council.evaluation.behaviour import (
    BehaviourRow,
    DeclineDetector,
    VersionFigures,
    load_detector,
    reader_of,
    run_rows,
    version_figures,
)
from council.evaluation.report import figure, table, write_page
from sleep.night import Slept, sleep_and_export
from sleep.train import Progress
from sleep.train_version import train_version

Step = Callable[[str], None]


class Night(BaseModel):
    """One day and its night."""

    night: int
    started_with: str = Field(description="the persona version the day's episodes ran with")
    in_use: str = Field(description="the version in use after the night")
    with_council: VersionFigures = Field(description="the day's episodes, the council deciding")
    slept: Slept
    dataset_pairs: int
    trained: str | None = Field(description="the version trained tonight (None: nothing new to train on)")
    promoted: bool = False
    reasons: list[str] = Field(default=[], description="why the gate refused it, or why nothing was trained")
    alone: Figures | None = Field(description="the gate's figures of the version in use after the night")
    report: str | None = Field(description="the night's before/after report")
    seconds: dict[str, float]


class Nights(BaseModel):
    """Every night of one `council nights` run, and the persona alone before the first."""

    day: str
    per_night: int
    pool: str
    persona: str
    before: Figures | None = Field(description="the gate's figures of the version the first night started from")
    nights: list[Night]


def day_rows(rows: Sequence[BehaviourRow], night: int, per_night: int) -> list[BehaviourRow]:
    """Night ``night``'s requests (counting from 1): the next ``per_night`` rows, round again at the end."""
    start = (night - 1) * per_night
    return [rows[(start + i) % len(rows)] for i in range(min(per_night, len(rows)))]


def run_nights(
    settings: Settings,
    day: Path,
    nights: int,
    per_night: int,
    step: Step = lambda _: None,
    progress: Progress | None = None,
) -> Nights:
    """Live ``nights`` days and nights on the requests of ``day``; returns what each one did."""
    rows = read_jsonl(day, BehaviourRow, "day")
    backends = LoadedModels(settings)
    detector = load_detector()
    done: list[Night] = []
    before: Figures | None = None
    for k in range(1, nights + 1):
        rt = build_runtime(settings, backends)
        try:
            night, started = live_night(rt, k, day_rows(rows, k, per_night), detector, reader_of(rt), step, progress)
        finally:
            rt.db.engine.dispose()
        before = before or started
        done.append(night)
    return Nights(
        day=printable(str(day)),
        per_night=per_night,
        pool=rt.pool.name,
        persona=rt.persona.name,
        before=before,
        nights=done,
    )


def live_night(
    rt: CouncilRuntime,
    k: int,
    todo: list[BehaviourRow],
    detector: DeclineDetector,
    reader: Reader,
    step: Step,
    progress: Progress | None,
) -> tuple[Night, Figures | None]:
    """Day and night ``k``: the episodes, the night pass, training and the gate.

    Returns the night and the gate's figures of the version it started from (None when nothing was trained).
    """
    seconds = {}
    start = time.perf_counter()
    step(f"night {k}: {len(todo)} episodes with {rt.persona_version}")
    items = run_rows(rt, todo, detector, reader, "council")
    seconds["episodes"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    step(f"night {k}: sleeping on the day")
    slept = sleep_and_export(rt)
    path, pairs = slept.dataset, slept.dataset_pairs
    seconds["sleep"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    step(f"night {k}: training on {pairs} pairs")
    night = Night(
        night=k,
        started_with=rt.persona_version,
        in_use=rt.persona_version,
        with_council=version_figures(rt.persona_version, "council", rt.pool.name, items, 1000),
        slept=slept,
        dataset_pairs=pairs,
        trained=None,
        alone=None,
        report=None,
        seconds=seconds,
    )
    try:
        trained = train_version(rt, path, progress)
    except NothingToTrainError as exc:
        night.reasons = [exc.what]
        return night, None
    finally:
        seconds["training"] = round(time.perf_counter() - start, 1)
    night.trained, night.promoted, night.reasons = trained.version.id, trained.version.promoted, trained.gate.reasons
    night.in_use, night.report = trained.in_use, trained.report
    night.alone = trained.gate.candidate if trained.version.promoted else trained.gate.previous
    return night, trained.gate.previous


ALONE_LINES = (
    ("declines_when_should", "declines what it should let go of"),
    ("declines_when_should_not", "over-refusal"),
    ("unseen_declines_when_should", "declines, unseen sources"),
    ("unseen_declines_when_should_not", "over-refusal, unseen sources"),
    ("alone_marker_rate", "its own marker"),
)
COUNCIL_LINES = (
    ("stops_when_should", "let go of what it should"),
    ("stops_when_should_not", "let go of what it should answer"),
    ("marker_rate", "its own marker"),
    ("budget_stops", "budget stops"),
)


def _alone_series(result: Nights, field: str) -> list[float]:
    figures = [result.before, *(n.alone for n in result.nights)]
    values = [None if f is None else f.model_dump()[field] for f in figures]
    return [np.nan if v is None else float(v) for v in values]


def _council_series(result: Nights, field: str) -> list[float]:
    values = [n.with_council.model_dump()[field]["value"] for n in result.nights]
    return [np.nan if v is None else float(v) for v in values]


def _lines(
    x: Sequence[int], series: dict[str, list[float]], ylabel: str, ylim: tuple[float, float] | None
) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for label, values in series.items():
        ax.plot(x, values, marker="o", label=label)
    ax.set_xticks(list(x))
    ax.set_xlabel("night")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=8)
    return fig


def write_nights_report(result: Nights, directory: Path) -> Path:
    """``index.html`` (plots night by night), ``results.json`` and ``results.csv`` under ``directory``."""
    nights = list(range(len(result.nights) + 1))
    alone = {label: _alone_series(result, f) for f, label in ALONE_LINES}
    council = {label: _council_series(result, f) for f, label in COUNCIL_LINES}
    rows = [
        [
            n.night,
            n.started_with,
            n.trained or "-",
            "promoted" if n.promoted else "; ".join(n.reasons) or "refused",
            n.dataset_pairs,
            *(n.slept.pairs.get(s, 0) for s in SOURCES),
            *(v[i + 1] for v in alone.values()),
            _alone_series(result, "perplexity")[i + 1],
            *(v[i] for v in council.values()),
        ]
        for i, n in enumerate(result.nights)
    ]
    header = ["night", "ran with", "trained", "gate", "pairs", *(s.replace("_", " ") for s in SOURCES)]
    header += [f"alone: {label}" for label in alone] + ["alone: perplexity"]
    header += [f"council: {label}" for label in council]
    body = (
        f"<p>Persona <b>{result.persona}</b> with the <b>{result.pool}</b> council, {len(result.nights)} nights of "
        f"{result.per_night} requests from {result.day}. Alone: the gate's dev requests, no council. With its "
        "council: the day's own episodes.</p>"
        + table(header, rows)
        + figure(
            _lines(nights, alone, "share", (0, 1)),
            "Alone, with no council, after each night (0: before the first): how often the persona declines the dev "
            "requests it should let go of and the look-alikes it should answer, and how often it ends a segment "
            "with its own marker.",
        )
        + figure(
            _lines(nights, {"perplexity": _alone_series(result, "perplexity")}, "perplexity", None),
            "Alone: perplexity on held-out answers people wrote (Dolly), after each night.",
        )
        + figure(
            _lines(nights[1:], council, "share", (0, 1)),
            "With its council, in each day's episodes: how often the council let go of what it should and of "
            "what it should answer, the persona's own marker rate and the share of budget stops.",
        )
    )
    csv_rows = [dict(zip(header, r, strict=True)) for r in rows]
    return write_page(directory, f"{result.persona}: nights in a row", body, result.model_dump(mode="json"), csv_rows)
