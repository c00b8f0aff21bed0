"""`council eval recall`: memory recalls a past episode when a person asks about its topic in other words.

Each row with a ``prompt`` is answered by the persona as a real episode (recall off, so answers are independent)
and remembered; then each row's ``query`` is searched exactly as the recall step does (``memory.top_k``,
``memory.min_score``). A row without a ``prompt`` is an off-topic query: it should recall nothing. Episodes live
in their own store under ``--out`` (a temporary folder by default), never in the user's memory; a re-run with the
same ``--out`` reuses the episodes it finds there.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, Field

from archetypes.library import Library
from council.core.datafiles import read_jsonl
from council.core.errors import DefinitionError
from council.core.settings import MemorySettings, Settings
from council.engine.runner import build_runtime, run_episode
from council.engine.runtime import CouncilRuntime
from memory.vector import REMEMBERED, TOPICAL, VectorMemory


class RecallRow(BaseModel):
    """A request to remember and a paraphrase to recall it by; without ``prompt``, a query on no stored topic."""

    id: str
    prompt: str | None = None
    query: str


class QueryResult(BaseModel):
    """What one query recalled."""

    id: str
    query: str
    target: str | None = Field(description="the episode it should recall; None for an off-topic query")
    recalled: list[str] = Field(description="episodes recalled, best first")
    scores: list[float]
    target_score: float | None = Field(description="the target's score when recalled")


class RecallFigures(BaseModel):
    """Recall@k over paraphrases, and how often an unrelated episode crosses the cut."""

    episodes: int
    paraphrases: int
    off_topic: int
    k: int
    min_score: float
    mean_answer_words: float
    recall_at_k: float = Field(description="share of paraphrases whose episode is among the k recalled")
    unrelated_above_cut: int = Field(description="queries that recalled an episode other than their own")
    highest_unrelated_score: float | None
    lowest_target_score: float | None
    results: list[QueryResult]


def load_recall_rows(path: Path) -> list[RecallRow]:
    """JSONL rows {"id", "prompt"?, "query"}; at least one must have a prompt."""
    rows = read_jsonl(path, RecallRow, "recall")
    if not any(r.prompt for r in rows):
        raise DefinitionError(f"{path} has no row with a prompt", 'add rows {"id", "prompt", "query"}')
    return rows


def remember_answers(
    rt: CouncilRuntime, rows: list[RecallRow], progress: Callable[[int], None] = lambda _n: None
) -> dict[str, str]:
    """Answer every row's prompt as a remembered episode; row id -> episode id.

    An episode already logged for a prompt is reused, and remembered again in case an older memory layout
    stored it (the same ids overwrite); a new one is remembered as it is logged.
    """
    if rt.memory is None:
        raise DefinitionError("recall evaluation needs vector memory", "check memory settings")
    logged = {e.prompt: e for e in rt.log.iterate(statuses=REMEMBERED)}
    episodes = {}
    for row in rows:
        if row.prompt in logged:
            rt.memory.remember(logged[row.prompt])
            episodes[row.id] = logged[row.prompt].episode_id
        elif row.prompt:
            episode = run_episode(rt, row.prompt)
            assert episode is not None  # no should_stop was given
            logged[row.prompt] = episode
            episodes[row.id] = episode.episode_id
        progress(1)
    return episodes


def measure(memory: VectorMemory, rows: list[RecallRow], episodes: dict[str, str], words: float) -> RecallFigures:
    """Search every row's query as the recall step does and score what comes back."""
    settings: MemorySettings = memory.settings
    results = []
    for row in rows:
        hits = memory.search(row.query, settings.top_k, settings.min_score, TOPICAL)
        target = episodes.get(row.id)
        recalled = [h.episode_id for h in hits]
        scores = [h.score for h in hits]
        own = [h.score for h in hits if h.episode_id == target]
        results.append(
            QueryResult(
                id=row.id,
                query=row.query,
                target=target,
                recalled=recalled,
                scores=scores,
                target_score=own[0] if own else None,
            )
        )
    paraphrased = [r for r in results if r.target]
    unrelated = [s for r in results for e, s in zip(r.recalled, r.scores, strict=True) if e != r.target]
    targets = [r.target_score for r in paraphrased if r.target_score is not None]
    return RecallFigures(
        episodes=len(set(episodes.values())),
        paraphrases=len(paraphrased),
        off_topic=len(results) - len(paraphrased),
        k=settings.top_k,
        min_score=settings.min_score,
        mean_answer_words=round(words, 1),
        recall_at_k=round(len(targets) / max(1, len(paraphrased)), 4),
        unrelated_above_cut=sum(any(e != r.target for e in r.recalled) for r in results),
        highest_unrelated_score=max(unrelated, default=None),
        lowest_target_score=min(targets, default=None),
        results=results,
    )


@contextmanager
def recall_runtime(settings: Settings, home: Path | None = None) -> Iterator[CouncilRuntime]:
    """A runtime with a store of its own in ``home`` (default: a temporary folder, deleted on exit).

    Models and definitions come from ``settings``' home; its memory is embedded in ``home`` and recalls nothing,
    so the answers are independent.
    """
    with tempfile.TemporaryDirectory(prefix="council-recall-") as scratch:
        memory = settings.memory.model_copy(update={"url": None, "recall": False})
        own = {"home": home or Path(scratch), "database_url": None, "memory": memory}
        yield build_runtime(settings.model_copy(update=own), library=Library.load(settings.home))


def evaluate_recall(
    rt: CouncilRuntime, rows: list[RecallRow], progress: Callable[[int], None] = lambda _n: None
) -> RecallFigures:
    """Answer and remember every prompt in ``rt``'s store, then measure recall of the paraphrases."""
    episodes = remember_answers(rt, rows, progress)
    answers = [rt.log.get(e) for e in set(episodes.values())]
    words = sum(len(e.final_text.split()) for e in answers) / max(1, len(answers))
    assert rt.memory is not None  # remember_answers checked
    return measure(rt.memory, rows, episodes, words)
