"""Self-contained HTML reports (plots embedded as PNG), plus results.json and a CSV, for evals and experiments."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from council.core.errors import StorageError
from council.evaluation import metrics as m
from council.evaluation.evaluate import Evaluation

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
    "th:first-child,td:first-child{text-align:left}img{max-width:100%}figure{margin:1.5em 0}"
    "figcaption{color:#555;font-size:0.9em}"
)


def _png(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def figure(fig: plt.Figure, caption: str) -> str:
    """An HTML figure with the plot embedded."""
    text = html.escape(caption)
    image = f'<img alt="{text}" src="data:image/png;base64,{_png(fig)}">'
    return f"<figure>{image}<figcaption>{text}</figcaption></figure>"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:  # noqa: ANN401 - table cells
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return str(value)


def bars_with_ci(
    labels: list[str],
    values: list[float],
    cis: list[Sequence[float]],
    ylabel: str,
    baseline: float | None = None,
    ylim: tuple[float, float] | None = (0, 1),
) -> plt.Figure:
    """Bars with 95% CI whiskers, and an optional dashed baseline."""
    fig, ax = plt.subplots(figsize=(7, 3.2))
    low = [v - c[0] for v, c in zip(values, cis, strict=True)]
    high = [c[1] - v for v, c in zip(values, cis, strict=True)]
    ax.bar(labels, values, yerr=[low, high], capsize=4, color="#4c78a8")
    if baseline is not None:
        ax.axhline(baseline, ls="--", color="#d62728", label=f"majority baseline {baseline:.3f}")
        ax.legend(loc="lower right")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    plt.setp(ax.get_xticklabels(), rotation=20, ha="right")
    return fig


def heatmap(matrix: dict[str, dict[str, float]], title: str, vmin: float = -1, vmax: float = 1) -> plt.Figure:
    """A labelled heatmap of a square or rectangular mapping of mappings."""
    rows = list(matrix)
    cols = list(next(iter(matrix.values())))
    data = np.array([[matrix[r][c] for c in cols] for r in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(1.1 * len(cols) + 2, 0.7 * len(rows) + 1.5))
    image = ax.imshow(data, cmap="RdBu_r", vmin=vmin, vmax=vmax)
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(rows)):
        for j in range(len(cols)):
            ax.text(j, i, "–" if np.isnan(data[i, j]) else f"{data[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(title)
    fig.colorbar(image, ax=ax)
    return fig


def write_page(out_dir: Path, title: str, body: str, results: dict[str, Any], csv_rows: list[dict[str, Any]]) -> Path:
    """Write index.html, results.json and results.csv under ``out_dir``; returns the HTML path."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        page = out_dir / "index.html"
        page.write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>",
            encoding="utf-8",
        )
        (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
        with (out_dir / "results.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(csv_rows[0]) if csv_rows else ["empty"])
            writer.writeheader()
            writer.writerows(csv_rows)
    except OSError as exc:
        raise StorageError(
            f"cannot write the report to {out_dir} ({exc.strerror})", "pass another --report/--out DIR"
        ) from exc
    return page


def eval_report(result: Evaluation[Any], out_dir: Path) -> Path:
    """The page for one `council eval` run."""
    judges = {n: f.model_dump(exclude_unset=True) for n, f in result.judges().items()}
    names = list(judges)
    source = html.escape(result.file)
    body = f"<p>{result.rows} rows of <code>{source}</code>, pool <b>{result.pool}</b> ({result.rule}).</p>"
    body += figure(
        bars_with_ci(
            names,
            [judges[n]["accuracy"] for n in names],
            [judges[n]["accuracy_ci95"] for n in names],
            "accuracy",
            result.majority_baseline,
        ),
        "Accuracy with bootstrap 95% CIs; the dashed line is the majority-class baseline.",
    )
    metric_names = [k for k in judges["council"] if not k.endswith("_ci95")]
    body += table(["judge", *metric_names], [[n, *[judges[n][k] for k in metric_names]] for n in names])
    y = np.array(result.items.labels)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfectly calibrated")
    for name in ("council", "persona"):
        curve = m.calibration_curve(y, np.array(result.items.probs[name]))
        ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", label=name)
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.legend()
    body += figure(fig, "Calibration curve (10 bins).")
    panel = result.panel
    body += "<h2>Does the panel beat its members?</h2>" + table(
        ["figure", "value", "95% CI"],
        [
            [
                "council − best archetype (" + panel.best_archetype + ")",
                panel.council_minus_best_archetype,
                list(panel.council_minus_best_archetype_ci95),
            ],
            ["council − persona alone", panel.council_minus_persona, list(panel.council_minus_persona_ci95)],
            ["council accuracy, measured", panel.measured_council_accuracy, ""],
            ["council accuracy if errors were independent", panel.independent_errors_majority_accuracy, ""],
        ],
    )
    body += figure(
        heatmap(panel.error_correlation, "error correlation between archetypes"),
        "Pairwise correlation of the members' errors: high values mean they share mistakes.",
    )
    if result.position_bias is not None:
        body += "<h2>Position bias</h2>" + table(["judge", "P(slot A) − 0.5"], list(result.position_bias.items()))
    rows = [{"judge": n, **{k: v for k, v in judges[n].items() if not k.endswith("_ci95")}} for n in names]
    return write_page(out_dir, f"council eval {result.task}", body, result.stored(), rows)


def grouped_bars(pools: dict[str, Any], key: str, groups: Sequence[str], ylabel: str) -> plt.Figure:
    """One bar per (pool, group) with CI whiskers: ``pools[pool][key][group]`` holds value and ci95."""
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    width = 0.8 / len(groups)
    x = np.arange(len(pools))
    for k, group in enumerate(groups):
        values = [pools[p][key][group]["value"] for p in pools]
        cis = [pools[p][key][group]["ci95"] for p in pools]
        errors = [
            [v - c[0] for v, c in zip(values, cis, strict=True)],
            [c[1] - v for v, c in zip(values, cis, strict=True)],
        ]
        ax.bar(x + k * width - 0.4 + width / 2, values, width, yerr=errors, capsize=3, label=group)
    ax.set_xticks(x, list(pools))
    ax.set_ylabel(ylabel)
    ax.legend(ncols=min(len(groups), 4), fontsize=8)
    return fig


def experiment_report(figures: dict[str, Any], meta: dict[str, Any], out_dir: Path) -> Path:
    """The page for one `council experiment run`."""
    pools = list(figures)
    runs = f"{meta['prompts']} prompts x {meta['seeds']} seed(s)"
    body = f"<p>Pools {', '.join(pools)}; {runs}; bootstrap 95% CIs over episodes.</p>"
    body += figure(
        grouped_bars(figures, "decision_rates", ("continue", "revise", "let_go"), "share of reflection points"),
        "Decision rates per pool.",
    )
    singles = {p: {"measures": {k: figures[p][k] for k in ("revisions_per_episode", "let_go_episodes")}} for p in pools}
    body += figure(
        grouped_bars(singles, "measures", ("revisions_per_episode", "let_go_episodes"), "per episode"),
        "Revisions per episode, and the share of episodes where the council let go (not counting the token budget).",
    )
    if all("let_go_by_label" in figures[p] for p in pools):
        body += figure(
            grouped_bars(figures, "let_go_by_label", ("should_let_go", "should_answer"), "share of episodes"),
            "Share of episodes the council let go, among prompts that should be let go and those to answer.",
        )
    lengths = [figures[p]["answer_words"] for p in pools]
    body += figure(
        bars_with_ci(pools, [v["value"] for v in lengths], [v["ci95"] for v in lengths], "words", None, ylim=None),
        "Answer length in words.",
    )
    names = sorted({n for p in pools for n in figures[p]["dissent_rate"]})
    dissent = {
        p: {n: figures[p]["dissent_rate"].get(n, {"value": float("nan")})["value"] for n in names} for p in pools
    }
    body += figure(
        heatmap(dissent, "dissent rate (verdict ≠ decision)", vmin=0, vmax=1),
        "How often each archetype dissents, per pool (– where it is not a member).",
    )
    kappas = [figures[p]["fleiss_kappa"] for p in pools]
    body += figure(
        bars_with_ci(
            pools, [k["value"] for k in kappas], [k["ci95"] for k in kappas], "Fleiss' kappa", None, ylim=(-0.2, 1)
        ),
        "Agreement among each pool's archetypes (Fleiss' kappa).",
    )
    rows = []
    for p in pools:
        f = figures[p]
        rows.append(
            {
                "pool": p,
                "episodes": f["episodes"],
                "reflection_points": f["reflection_points"],
                **{f"rate_{d}": f["decision_rates"][d]["value"] for d in ("continue", "revise", "let_go")},
                "revisions_per_episode": f["revisions_per_episode"]["value"],
                "let_go_episodes": f["let_go_episodes"]["value"],
                "answer_words": f["answer_words"]["value"],
                "fleiss_kappa": f["fleiss_kappa"]["value"],
            }
        )
    body += table(list(rows[0]), [list(r.values()) for r in rows])
    return write_page(out_dir, "council experiment", body, {"meta": meta, "pools": figures}, rows)
