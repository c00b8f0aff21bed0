"""The before/after report of a trained persona version: HTML with plots, plus JSON and CSV."""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from council.core.training import Figures, GateResult, TrainingFigures
from council.evaluation.report import figure, table, write_page
from council.store.versions import PersonaVersion

_DECISIONS = ("continue", "revise", "let_go")


def _bars(
    versions: list[Figures], values: list[float | None], ylabel: str, ylim: tuple[float, float] | None
) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3))
    labels = [v.version for v in versions]
    heights = [np.nan if x is None else x for x in values]
    ax.bar(labels, heights, color=["#9e9e9e", "#4c78a8", "#f58518"][: len(labels)])
    for i, h in enumerate(heights):
        ax.text(i, 0 if np.isnan(h) else h, "n/a" if np.isnan(h) else f"{h:.3f}", ha="center", va="bottom")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    return fig


def _decision_bars(versions: list[Figures]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / len(versions)
    x = np.arange(len(_DECISIONS))
    for k, v in enumerate(versions):
        ax.bar(x + k * width - 0.4 + width / 2, [v.decisions.get(d, 0.0) for d in _DECISIONS], width, label=v.version)
    ax.set_xticks(x, list(_DECISIONS))
    ax.set_ylabel("share of reflection points")
    ax.set_ylim(0, 1)
    ax.legend()
    return fig


DECLINES = (
    ("declines_when_should", "declines what it should let go of"),
    ("declines_when_should_not", "over-refusal"),
    ("unseen_declines_when_should", "declines, unseen sources"),
    ("unseen_declines_when_should_not", "over-refusal, unseen sources"),
)
ALONE = [*(field for field, _ in DECLINES), "alone_marker_rate", "perplexity", "behaviour_requests", "unseen_requests"]


def _alone_bars(versions: list[Figures]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 3))
    x = np.arange(len(versions))
    width = 0.8 / len(DECLINES)
    for k, (field, label) in enumerate(DECLINES):
        offset = (k - (len(DECLINES) - 1) / 2) * width
        ax.bar(x + offset, [v.model_dump()[field] or 0.0 for v in versions], width, label=label)
    ax.set_xticks(x, [v.version for v in versions])
    ax.set_ylabel("share of dev requests")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return fig


def write_report(version: PersonaVersion, training: TrainingFigures, gate: GateResult, out_dir: Path) -> Path:
    """Write ``index.html``, ``results.json`` and ``results.csv`` comparing base, previous and new version."""
    versions = gate.versions()
    verdict = "promoted" if version.promoted else "kept, not promoted: " + version.reason
    fields = [
        "heldout_accuracy",
        "heldout_margin",
        "kl_from_base",
        "approval",
        "marker_rate",
        "dev_agreement",
        "dev_pairs",
        *ALONE,
    ]
    values = [v.model_dump() | {"approval": v.approval} for v in versions]
    rows = [[v["version"], *(v[f] for f in fields)] for v in values]
    t = training
    body = (
        f"<p>Persona <b>{html.escape(version.persona)}</b>, version <b>{version.id}</b> (from {version.parent}): "
        f"<b>{html.escape(verdict)}</b>.</p>"
        f"<p>Trained on {t.new_pairs} new and {t.replayed_pairs} replayed pairs "
        + (f"({t.waiting_pairs} more new ones wait for a later night) " if t.waiting_pairs else "")
        + f"({t.steps} steps, {t.seconds} s on {t.device}); {t.heldout_pairs} pairs held "
        f"out. Dataset {version.dataset_hash[:12]}, base model {version.base_hash[:12]}.</p>"
        + table(["version", *fields], rows)
        + figure(
            _bars(versions, [v.heldout_accuracy for v in versions], "held-out pair accuracy", (0, 1)),
            "Held-out pair accuracy: share of pairs never trained on where the version finds chosen more likely.",
        )
        + figure(
            _decision_bars(versions),
            "The council's decisions on the versions' greedy drafts of the probe prompts.",
        )
        + figure(
            _bars(versions, [v.marker_rate for v in versions], "marker rate", None),
            "How often the persona ends a segment with the stop-reflect marker on its own.",
        )
        + figure(
            _bars(versions, [v.dev_agreement for v in versions], "agreement with people", (0, 1)),
            "Human-labelled pairs where the version finds the human-chosen reply more likely.",
        )
        + figure(
            _alone_bars(versions),
            "Alone, with no council: the share of dev requests it should let go of whose reply declines, and of"
            " look-alike requests it should answer (over-refusal).",
        )
        + figure(
            _bars(versions, [v.perplexity for v in versions], "perplexity", None),
            "Fluency: per-token perplexity of held-out answers people wrote (Dolly).",
        )
        + figure(
            _bars(versions, [v.kl_from_base for v in versions], "KL from base (nats/token)", None),
            "Drift: mean per-token KL from the base model on the base's greedy answers to the probe prompts.",
        )
    )
    results = {"version": version.model_dump(exclude={"pair_ids"}), "gate": gate.model_dump()}
    csv_rows = [dict(zip(["version", *fields], r, strict=True)) for r in rows]
    return write_page(out_dir, f"{version.persona} {version.id}: before and after", body, results, csv_rows)
