"""Preference pairs from episodes: what the council preferred (chosen) over what it did not (rejected).

Texts keep the stop-reflect marker between segments (``marked``), so training teaches the persona to emit it
where it goes on writing; a completion never ends with it, which would teach "marker, then end of turn". Where
both sides of a pair carry it, DPO's log-ratio cancels it; a *marker* pair is the accepted answer with the marker
at each of its reflection points over the same answer without, so there the marker is all that differs.
In the conversational format the prompt ends with the user's turn and both completions carry the persona's
text before the judged part; that shared prefix cancels in DPO's log-ratio, and it keeps every row a
well-formed chat (a prompt that ended inside an assistant turn would make TRL's template split it in two).
"""

from __future__ import annotations

import hashlib

from archetypes.definitions import Archetype, Persona
from council.core.episode import Episode, ReflectionPoint, Vote
from council.core.pairs import PreferencePair, Source
from council.core.text import marked, unmarked
from council.engine import prompts


def pair_id(episode_id: str, pool: str, source: Source, key: str) -> str:
    """A stable id per episode, sleeping pool and source, so re-running the night adds no duplicates."""
    return hashlib.sha1(f"{episode_id}|{pool}|{source}|{key}".encode()).hexdigest()[:24]


def opening(persona: Persona, episode: Episode, council: str = "") -> list[dict[str, str]]:
    """The turns the persona answered, as it saw them (memories and the council's note included)."""
    return [
        {"role": m.role, "content": m.content}
        for m in prompts.draft_chat(persona, episode.prompt, "", episode.recalled, council).messages
    ]


def accepted_segments(episode: Episode) -> dict[int, ReflectionPoint]:
    """The last version of each segment, by segment index."""
    return {rp.segment_index: rp for rp in episode.reflection_points}


def transcript_before(episode: Episode, segment_index: int, marker: str) -> str:
    """The persona's text before segment ``segment_index``, each accepted segment followed by the marker."""
    accepted = accepted_segments(episode)
    return "".join(marked(accepted[i].segment, marker) for i in sorted(accepted) if i < segment_index)


def weighted(votes: list[Vote], members: dict[str, Archetype], verdict: str) -> float:
    """The council's weighted probability of ``verdict`` over the archetypes that voted."""
    voted = [v for v in votes if v.verdict is not None]
    total = sum(members[v.archetype].weight for v in voted if v.archetype in members)
    if not total:
        return 0.0
    return sum(members[v.archetype].weight * v.probs.get(verdict, 0.0) for v in voted if v.archetype in members) / total


def vote_scores(chosen: list[Vote], rejected: list[Vote], verdict: str) -> dict[str, dict[str, float]]:
    """Per archetype, its probability of ``verdict`` on the chosen and on the rejected text."""
    by_name = {v.archetype: v for v in rejected}
    return {
        v.archetype: {
            "chosen": round(v.probs.get(verdict, 0.0), 4),
            "rejected": round(by_name[v.archetype].probs.get(verdict, 0.0), 4),
        }
        for v in chosen
        if v.archetype in by_name and v.verdict is not None and by_name[v.archetype].verdict is not None
    }


def revision_pairs(
    episode: Episode, persona: Persona, members: dict[str, Archetype], marker: str, pool: str, council: str = ""
) -> list[PreferencePair]:
    """Where the council had a segment rewritten and then accepted the rewrite: rewrite over original."""
    pairs = []
    accepted = accepted_segments(episode)
    for index, last in sorted(accepted.items()):
        if last.attempt == 0 or last.decision.decision == "revise":
            continue
        first = next(rp for rp in episode.reflection_points if rp.segment_index == index and rp.attempt == 0)
        margin = weighted(last.votes, members, "continue") - weighted(first.votes, members, "continue")
        pairs.append(
            PreferencePair(
                id=pair_id(episode.episode_id, pool, "revision", str(index)),
                episode_id=episode.episode_id,
                source="revision",
                pool=pool,
                messages=opening(persona, episode, council),
                before=transcript_before(episode, index, marker),
                chosen=last.segment,
                rejected=first.segment,
                scores=vote_scores(last.votes, first.votes, "continue"),
                margin=round(margin, 4),
            )
        )
    return pairs


def let_go_point(episode: Episode) -> ReflectionPoint | None:
    """The reflection point where the council decided to let go, if it did."""
    if episode.status != "let_go" or not episode.reflection_points:
        return None
    last = episode.reflection_points[-1]
    return last if last.decision.decision == "let_go" or "says let_go" in last.decision.reason else None


def let_go_prefix(episode: Episode, marker: str) -> tuple[str, str] | None:
    """The persona's text up to the let-go point (markers included) and the graceful close that followed."""
    point = let_go_point(episode)
    if point is None:
        return None
    prefix = transcript_before(episode, point.segment_index + 1, marker)
    start, said = unmarked(prefix, marker).lstrip(), unmarked(episode.transcript, marker)
    if not said.startswith(start):
        return None
    closing = said[len(start) :].strip()
    return (prefix, closing) if closing else None


def marker_pair(episode: Episode, persona: Persona, marker: str, pool: str, council: str = "") -> PreferencePair | None:
    """The accepted answer paused at each reflection point the council continued from, over the same text unpaused.

    None for an answer of one segment. The margin is the share of its points at which the council continued.
    """
    accepted = accepted_segments(episode)
    texts = [accepted[i].segment for i in sorted(accepted)]
    if len(texts) < 2:
        return None
    continued = [rp.decision.decision == "continue" for rp in accepted.values()]
    return PreferencePair(
        id=pair_id(episode.episode_id, pool, "marker", "answer"),
        episode_id=episode.episode_id,
        source="marker",
        pool=pool,
        messages=opening(persona, episode, council),
        chosen="".join(marked(t, marker) for t in texts[:-1]) + texts[-1],
        rejected="".join(texts),
        margin=round(sum(continued) / len(continued), 4),
    )
