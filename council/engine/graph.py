"""The episode as a langgraph StateGraph: recall -> draft -> council -> (draft | revise | let_go) -> log.

``builder`` is the uncompiled graph, so callers attach their own checkpointer. The state holds only JSON-ready
values; models, the council and the log live in the ``CouncilRuntime`` each run passes as langgraph's context
(``graph.stream(state, config, context=rt)``), which every node receives as ``runtime.context``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any, Literal, Protocol, TypedDict, cast

from langgraph.graph import START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from council.core.episode import Episode, EpisodeStatus, PendingSegment, Recollection, ReflectionPoint
from council.core.errors import CouncilError
from council.core.text import marked, whole_sentences
from council.engine.prompts import Closing
from council.engine.runtime import CouncilRuntime
from council.engine.voting import Point
from council.store.tasks import this_process
from memory.digest import digest
from memory.vector import TOPICAL

logger = logging.getLogger(__name__)


BUDGET_STOP = {"stop_reason": "the answer reached its token budget", "closing": "budget"}


class EpisodeState(TypedDict, total=False):
    """What flows between nodes. Reflection points are stored as dicts of ``ReflectionPoint``."""

    episode_id: str
    created_at: str
    prompt: str
    recalled: str
    recollections: list[dict[str, Any]]
    answer: str
    transcript: str
    pending: PendingSegment | None
    segment_index: int
    tokens_used: int
    reflection_points: list[dict[str, Any]]
    status: EpisodeStatus
    stop_reason: str
    closing: Closing  # why the answer is being closed: "let_go" (the council) or "budget" (its token budget)
    timings: dict[str, float]


def now() -> float:
    """Wall-clock seconds: a revision's time is counted across restarts of the process."""
    return time.time()


class Node(Protocol):
    """A graph node: the state in, a ``Command`` (route and update) out; the runtime comes as langgraph's context."""

    __name__: str

    def __call__(self, state: EpisodeState, *, runtime: Runtime[CouncilRuntime]) -> Command[Any]:
        """Run the node."""
        ...


def _timed(name: str, fn: Node) -> Node:
    def node(state: EpisodeState, *, runtime: Runtime[CouncilRuntime]) -> Command[Any]:
        start = time.perf_counter()
        command = fn(state, runtime=runtime)
        timings = dict(state.get("timings", {}))
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - start, 4)
        update = dict(cast(dict[str, Any], command.update) or {}) | {"timings": timings}
        return Command(goto=command.goto, update=update)

    node.__name__ = name
    node.__annotations__ = fn.__annotations__
    return node


def recall(state: EpisodeState, *, runtime: Runtime[CouncilRuntime]) -> Command[Literal["draft"]]:
    """Find past episodes like this request and fit them into the recall budget."""
    rt = runtime.context
    settings = rt.settings.memory
    if rt.memory is None or not settings.recall:
        return Command(goto="draft", update={"recalled": "", "recollections": []})
    try:
        hits = rt.memory.search(state["prompt"], settings.top_k, settings.min_score, TOPICAL)
    except CouncilError as exc:  # memory is an aid: without it the persona still answers
        logger.warning("recall skipped: %s", exc)
        hits = []
    text, kept = digest(hits, rt.writer.backend.count_tokens, settings.budget_tokens)
    return Command(goto="draft", update={"recalled": text, "recollections": [h.model_dump() for h in kept]})


def draft(state: EpisodeState, *, runtime: Runtime[CouncilRuntime]) -> Command[Literal["council", "let_go", "log"]]:
    """Write the next segment up to a reflection point; an empty one ends or closes the answer."""
    rt = runtime.context
    budget = rt.settings.generation.max_tokens - state["tokens_used"]
    if budget <= 0:
        return Command(goto="let_go", update=BUDGET_STOP)
    index = state["segment_index"]
    seed = rt.settings.generation.seed + index
    seg = rt.writer.draft(state["prompt"], state["answer"], budget, seed, state["recalled"])
    text = seg.text
    if seg.boundary == "max_length" and seg.n_tokens >= budget:
        text = whole_sentences(text)
    used = state["tokens_used"] + seg.n_tokens
    if not text.strip():
        if seg.ended:
            return Command(goto="log", update={"status": "finished", "stop_reason": "the persona finished"})
        return Command(goto="let_go", update=BUDGET_STOP | {"tokens_used": used})
    pending = PendingSegment(text=text, boundary=seg.boundary, ended=seg.ended, attempt=0, since=now())
    return Command(goto="council", update={"pending": pending, "tokens_used": used})


def council(
    state: EpisodeState, *, runtime: Runtime[CouncilRuntime]
) -> Command[Literal["draft", "revise", "let_go", "log"]]:
    """The council votes on the pending segment; its decision (or the pool's rule when revisions run out) routes."""
    rt = runtime.context
    pending = state["pending"]
    assert pending is not None
    answer = state["answer"] + pending["text"]
    votes = rt.council.vote(Point(state["prompt"], answer, pending["text"], state["recalled"]))
    decision = rt.council.decide(votes)
    overtime = now() - pending.get("since", now()) > rt.pool.revision_seconds
    exhausted = decision.decision == "revise" and (pending["attempt"] >= rt.pool.max_revisions or overtime)
    if exhausted:
        used = "revision time" if overtime else "revisions"
        decision.reason += f"; {used} used up, the pool says {rt.pool.after_revisions}"
    points = state["reflection_points"]
    point = ReflectionPoint(
        index=len(points),
        segment_index=state["segment_index"],
        attempt=pending["attempt"],
        boundary=pending["boundary"],
        segment=pending["text"],
        votes=votes,
        decision=decision,
    )
    update: dict[str, Any] = {"reflection_points": [*points, point.model_dump(mode="json")]}
    verdict = rt.pool.after_revisions if exhausted else decision.decision
    if verdict == "revise":
        return Command(goto="revise", update=update)
    update |= {
        "answer": answer,
        "transcript": state["transcript"] + marked(pending["text"], rt.settings.reflection.marker),
        "segment_index": state["segment_index"] + 1,
        "pending": None,
    }
    if verdict == "let_go":
        reason = f"the council let go ({decision.reason})"
        return Command(goto="let_go", update=update | {"stop_reason": reason, "closing": "let_go"})
    if pending["ended"]:
        return Command(goto="log", update=update | {"status": "finished", "stop_reason": "the persona finished"})
    return Command(goto="draft", update=update)


def revise(state: EpisodeState, *, runtime: Runtime[CouncilRuntime]) -> Command[Literal["council"]]:
    """The two most confident revisers comment; the persona rewrites the segment with their comments."""
    rt = runtime.context
    pending = state["pending"]
    assert pending is not None
    points = list(state["reflection_points"])
    last = ReflectionPoint.model_validate(points[-1])
    revisers = sorted((v for v in last.votes if v.verdict == "revise"), key=lambda v: -v.confidence)[:2]
    answer_with_segment = state["answer"] + pending["text"]
    for vote in revisers:
        vote.comment = rt.council.comment(
            vote.archetype,
            state["prompt"],
            answer_with_segment,
            rt.settings.generation.comment_tokens,
            state["recalled"],
        )
    points[-1] = last.model_dump(mode="json")
    comments = {v.archetype: v.comment or "" for v in revisers}
    seed = rt.settings.generation.seed + 1000 * (pending["attempt"] + 1) + state["segment_index"]
    seg = rt.writer.rewrite(state["prompt"], state["answer"], pending["text"], comments, seed, state["recalled"])
    new = pending.copy()
    new["text"], new["attempt"] = seg.text, pending["attempt"] + 1
    return Command(goto="council", update={"pending": new, "reflection_points": points})


def let_go(state: EpisodeState, *, runtime: Runtime[CouncilRuntime]) -> Command[Literal["log"]]:
    """Close the answer gracefully: the council let go, or the token budget is spent."""
    rt = runtime.context
    why = state.get("closing", "let_go")
    closing = rt.writer.close(state["prompt"], state["answer"], why, rt.settings.generation.seed, state["recalled"])
    sep = "" if not state["answer"] or state["answer"].endswith("\n") else "\n\n"
    return Command(
        goto="log",
        update={
            "answer": state["answer"] + sep + closing,
            "transcript": state["transcript"] + sep + closing,
            "status": why,
        },
    )


def log(state: EpisodeState, *, runtime: Runtime[CouncilRuntime]) -> Command[Literal["__end__"]]:
    """Write the episode to the log, then to memory (memory may lag; the log never does)."""
    rt = runtime.context
    episode = episode_from_state(rt, state)
    rt.log.save(episode)
    if rt.memory is not None:
        try:
            rt.memory.remember(episode)
        except CouncilError as exc:
            logger.warning("episode %s is logged but not yet in memory: %s", episode.episode_id, exc)
    return Command(goto="__end__")  # END, as the literal the route type names


Builder = StateGraph[EpisodeState, CouncilRuntime, EpisodeState, EpisodeState]


def _build() -> Builder:
    graph: Builder = StateGraph(EpisodeState, context_schema=CouncilRuntime)
    for fn in (recall, draft, council, revise, let_go, log):
        graph.add_node(fn.__name__, _timed(fn.__name__, fn))
    graph.add_edge(START, "recall")
    return graph


builder = _build()


def initial_state(episode_id: str, prompt: str) -> EpisodeState:
    """The state an episode starts from."""
    return EpisodeState(
        episode_id=episode_id,
        created_at=datetime.now(timezone.utc).isoformat(),
        prompt=prompt,
        recalled="",
        recollections=[],
        answer="",
        transcript="",
        pending=None,
        segment_index=0,
        tokens_used=0,
        reflection_points=[],
        status="running",
        stop_reason="",
        timings={},
    )


def episode_from_state(rt: CouncilRuntime, state: EpisodeState) -> Episode:
    """Turn graph state into the episode record."""
    running = state.get("status", "running") == "running"
    return Episode(
        episode_id=state["episode_id"],
        created_at=datetime.fromisoformat(state["created_at"]),
        finished_at=None if running else datetime.now(timezone.utc),
        prompt=state["prompt"],
        persona=rt.persona.name,
        pool=rt.pool.name,
        status=state.get("status", "running"),
        stop_reason=state.get("stop_reason", ""),
        final_text=state.get("answer", "").strip(),
        transcript=state.get("transcript", "").strip(),
        model_ids=rt.model_ids(),
        archetype_hashes=rt.archetype_hashes,
        timings=state.get("timings", {}) | {"tokens": float(state.get("tokens_used", 0))},
        reflection_points=[ReflectionPoint.model_validate(p) for p in state.get("reflection_points", [])],
        recalled=state.get("recalled", ""),
        persona_version=rt.persona_version,
        recollections=[Recollection.model_validate(r) for r in state.get("recollections", [])],
        owner=this_process(),
    )
