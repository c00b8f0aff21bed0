"""`council experiment run`: the same prompts and seeds through several pools, and how the pools differ.

Episodes are logged as usual (recall off and nothing written to memory, so pools cannot influence each other);
``episodes.jsonl`` in the output directory maps (pool, prompt, seed) to an episode, so a re-run reuses every
finished one and only runs what is missing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from archetypes.backends import LoadedModels
from archetypes.definitions import Verdict
from council.core.episode import Episode
from council.core.errors import DefinitionError
from council.core.settings import Settings
from council.engine.runner import build_runtime, run_episode
from council.engine.runtime import CouncilRuntime
from council.evaluation import metrics as m
from council.store.episodes import EpisodeLog

DECISIONS: tuple[Verdict, ...] = ("continue", "revise", "let_go")


class Record(BaseModel):
    """One finished run of the experiment."""

    pool: str
    prompt: str
    seed: int
    episode_id: str
    fingerprint: str = Field("", description="generation settings and definition hashes the episode ran with")


def fingerprint(rt: CouncilRuntime) -> str:
    """What must match for a finished episode to be reused: generation settings, persona and pool definitions."""
    parts = {
        "generation": rt.settings.generation.model_dump(exclude={"seed"}),
        "reflection": rt.settings.reflection.model_dump(),
        "hashes": rt.council.hashes | {"persona": rt.persona.content_hash(), "pool": rt.pool.content_hash()},
    }
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def load_prompts(path: Path) -> list[str]:
    """One prompt per line, or JSONL objects with a ``prompt`` field; blank lines and # comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DefinitionError(f"cannot read {path} ({exc.strerror})", "check the --prompts path") from exc
    prompts = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith("{"):
            try:
                text = str(json.loads(text)["prompt"])
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DefinitionError(f"{path}:{number}: not a JSON object with 'prompt'", "fix that line") from exc
        prompts.append(text)
    if not prompts:
        raise DefinitionError(f"{path} has no prompts", "write one prompt per line")
    return prompts


def load_labels(path: Path) -> dict[str, bool]:
    """``should_let_go`` of each JSONL prompt that carries one, so let-go rates can be split by label."""
    labels = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip().startswith("{"):
            row = json.loads(line)
            if isinstance(row.get("should_let_go"), bool):
                labels[str(row["prompt"])] = row["should_let_go"]
    return labels


def run(
    settings: Settings,
    pools: list[str],
    prompts: list[str],
    seeds: int,
    out_dir: Path,
    progress: Callable[[int], None] = lambda _: None,
) -> list[Record]:
    """Run every (pool, prompt, seed) not yet in ``out_dir/episodes.jsonl``; returns all records."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger = out_dir / "episodes.jsonl"
    records = [Record.model_validate_json(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []
    done = {(r.pool, r.prompt, r.seed, r.fingerprint) for r in records}
    wanted = set()
    backends = LoadedModels(settings)
    quiet = settings.memory.model_copy(update={"recall": False})
    for pool in pools:
        rt = build_runtime(settings.model_copy(update={"pool": pool, "memory": quiet}), backends)
        rt = replace(rt, memory=None)
        mark = fingerprint(rt)
        for seed in range(seeds):
            seeded = replace(
                rt,
                settings=rt.settings.model_copy(
                    update={"generation": rt.settings.generation.model_copy(update={"seed": seed})}
                ),
            )
            for prompt in prompts:
                key = (pool, prompt, seed, mark)
                wanted.add(key)
                if key not in done:
                    episode = run_episode(seeded, prompt)
                    assert episode is not None
                    record = Record(
                        pool=pool, prompt=prompt, seed=seed, episode_id=episode.episode_id, fingerprint=mark
                    )
                    with ledger.open("a", encoding="utf-8") as handle:
                        handle.write(record.model_dump_json() + "\n")
                    records.append(record)
                    done.add(key)
                progress(1)
    return [r for r in records if (r.pool, r.prompt, r.seed, r.fingerprint) in wanted]


def _mean_ci(values: list[float], resamples: int) -> dict[str, Any]:
    array = np.array(values, dtype=float)
    if len(array) == 0:
        return {"value": float("nan"), "ci95": (float("nan"), float("nan"))}
    return m.with_ci(lambda _, v: float(np.mean(v)), array, array, resamples)


def _share(hits: np.ndarray, total: np.ndarray, i: np.ndarray) -> float:
    """Share of the resampled episodes' reflection points that got a decision."""
    return float(hits[i].sum() / total[i].sum()) if total[i].sum() else float("nan")


def pool_figures(episodes: list[Episode], resamples: int = 1000) -> dict[str, Any]:
    """Decision rates, revisions, length, dissent and agreement of one pool's episodes, with bootstrap CIs."""
    points = [rp for e in episodes for rp in e.reflection_points]
    per_episode = [[rp.decision.decision for rp in e.reflection_points] for e in episodes]
    rates: dict[str, Any] = {}
    for decision in DECISIONS:
        total = np.array([len(d) for d in per_episode], dtype=np.float64)
        hits = np.array([d.count(decision) for d in per_episode], dtype=np.float64)
        value = float(hits.sum() / total.sum()) if total.sum() else float("nan")
        ci = m.bootstrap_ci(partial(_share, hits, total), len(episodes), resamples)
        rates[decision] = {"value": round(value, 4), "ci95": ci}
    names = sorted({v.archetype for rp in points for v in rp.votes})
    dissent = {}
    for name in names:
        flags = [
            float(v.verdict != rp.decision.decision)
            for rp in points
            for v in rp.votes
            if v.archetype == name and v.verdict
        ]
        dissent[name] = _mean_ci(flags, resamples)
    full = [rp for rp in points if all(v.verdict for v in rp.votes)]
    counts = np.array([[sum(v.verdict == d for v in rp.votes) for d in DECISIONS] for rp in full])
    kappa = m.fleiss_kappa(counts) if len(full) else float("nan")
    kappa_ci = (
        m.bootstrap_ci(lambda i: m.fleiss_kappa(counts[i]), len(full), resamples) if len(full) else (float("nan"),) * 2
    )
    return {
        "episodes": len(episodes),
        "reflection_points": len(points),
        "decision_rates": rates,
        "revisions_per_episode": _mean_ci(
            [sum(rp.attempt > 0 for rp in e.reflection_points) for e in episodes], resamples
        ),
        "let_go_episodes": _mean_ci([_council_let_go(e) for e in episodes], resamples),
        "answer_words": _mean_ci([float(len(e.final_text.split())) for e in episodes], resamples),
        "dissent_rate": dissent,
        "fleiss_kappa": {"value": round(kappa, 4) if not np.isnan(kappa) else kappa, "ci95": kappa_ci},
    }


def summarize(
    log: EpisodeLog, records: list[Record], resamples: int = 1000, labels: dict[str, bool] | None = None
) -> dict[str, Any]:
    """Figures per pool, in the order the pools were given.

    With ``labels`` (prompt -> should let go), each pool also gets the share of episodes its council let go
    among prompts that should be let go and among those that should be answered.
    """
    pools: dict[str, list[Episode]] = {}
    for record in records:
        pools.setdefault(record.pool, []).append(log.get(record.episode_id))
    figures = {pool: pool_figures(episodes, resamples) for pool, episodes in pools.items()}
    for pool, episodes in pools.items():
        if labels:
            figures[pool]["let_go_by_label"] = {
                name: _mean_ci([_council_let_go(e) for e in episodes if labels.get(e.prompt) is want], resamples)
                for name, want in (("should_let_go", True), ("should_answer", False))
            }
    return figures


def _council_let_go(episode: Episode) -> float:
    return float(any(rp.decision.decision == "let_go" for rp in episode.reflection_points))
