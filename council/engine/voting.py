"""The council: asks every archetype of a pool for a vote and aggregates the votes into a decision."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from archetypes.backends import Backend, Chat, ChoiceScores, LoadedModels, LocalModel, Message
from archetypes.definitions import Archetype, Persona, Pool
from council.core.episode import Decision, Vote
from council.core.errors import one_line
from council.engine import prompts
from council.engine.aggregation import aggregate
from council.engine.judges import JudgeHeads, Reader


@dataclass(frozen=True)
class Point:
    """What the council judges at a reflection point: the request, the answer so far and its last segment.

    An empty segment (nothing written yet) is judged only on the request.
    """

    prompt: str
    answer: str
    segment: str
    recalled: str = ""


class Council:
    """A pool's archetypes with their judges and models. Definitions are frozen: nothing here can change them.

    An archetype with a trained judge votes from what its judge learnt (features of the request and the
    segment, read once for the whole council). One without votes from next-token probabilities: archetypes
    sharing a backend are scored in one batched call, after the persona's system prompt has told the model who
    they are (``note``); if that call fails, each is retried alone. An archetype that still fails is recorded
    as an abstention with its error. Every archetype speaks (comments, commentary) with its model.
    """

    def __init__(
        self,
        pool: Pool,
        members: Sequence[Archetype],
        persona: Persona,
        backends: LoadedModels,
        judges: Mapping[str, JudgeHeads] | None = None,
        reader: Reader | None = None,
    ):
        self.pool = pool
        self.persona = persona
        self.members = {a.name: a for a in members}
        self.judges = dict(judges or {})
        self.reader = reader
        self._backend_of = {a.name: backends.get(a.model, persona.model) for a in members}
        self.token_voters = [name for name in self.members if name not in self.judges]
        self.note = prompts.council_note([self.members[name] for name in self.token_voters])

    @property
    def hashes(self) -> dict[str, str]:
        """Content hash of every archetype definition on the council (a judge's weights included)."""
        return {name: a.content_hash() for name, a in self.members.items()}

    def model_ids(self) -> dict[str, str]:
        """What each archetype votes with: its judge's weights, or its model."""
        return {
            name: f"judge:{self.judges[name].sha256[:16]}" if name in self.judges else self._backend_of[name].model_id
            for name in self.members
        }

    def next_token_scores(
        self,
        messages: Sequence[Message],
        choices: Mapping[str, Sequence[str]],
        cue: Callable[[Archetype], str],
        names: Sequence[str] | None = None,
    ) -> dict[str, ChoiceScores | Exception]:
        """Next-token probabilities of ``choices`` after ``messages`` and each archetype's own ``cue``.

        ``names`` defaults to every archetype without a judge. Archetypes sharing a backend are read in one
        batched call; if it fails, each is retried alone, and one that still fails maps to its exception.
        """
        read: dict[str, ChoiceScores | Exception] = {}
        for group in self._by_backend(self.token_voters if names is None else names):
            try:
                read |= self._next_token_scores(group, messages, choices, cue)
            except Exception:  # noqa: BLE001 - isolate the failing archetype below
                for name in group:
                    try:
                        read |= self._next_token_scores([name], messages, choices, cue)
                    except Exception as exc:  # noqa: BLE001 - recorded by the caller
                        read[name] = exc
        return read

    def _by_backend(self, names: Sequence[str]) -> list[list[str]]:
        """``names`` grouped by the model they speak with, in order."""
        groups: dict[int, list[str]] = {}
        for name in names:
            groups.setdefault(id(self._backend_of[name]), []).append(name)
        return list(groups.values())

    def _next_token_scores(
        self,
        names: list[str],
        messages: Sequence[Message],
        choices: Mapping[str, Sequence[str]],
        cue: Callable[[Archetype], str],
    ) -> dict[str, ChoiceScores]:
        backend = self._backend_of[names[0]]
        scores = backend.score(messages, [cue(self.members[n]) for n in names], choices)
        return dict(zip(names, scores, strict=True))

    def vote(self, point: Point) -> list[Vote]:
        """Collect one vote per archetype at ``point``; a failure is an abstention."""
        votes = self._judged(point)
        if self.token_voters:
            messages = prompts.vote_messages(self.persona, point.prompt, point.answer, point.recalled, self.note)
            for name, score in self.next_token_scores(messages, prompts.VERDICT_CHOICES, prompts.vote_prefill).items():
                if isinstance(score, Exception):
                    votes[name] = _abstain(name, score)
                else:
                    votes[name] = _vote(name, score.probs, score.mass)
        return [votes[name] for name in self.members]

    def _judged(self, point: Point) -> dict[str, Vote]:
        """Votes of the archetypes with judges: the reader reads each text once for all of them."""
        if not self.judges:
            return {}
        try:
            assert self.reader is not None, "judges need a reader"
            reader, request, segment = self.reader, point.prompt, point.segment
            votes = {name: heads.vote(reader, request, segment) for name, heads in self.judges.items()}
        except Exception as exc:  # noqa: BLE001 - recorded as abstentions
            return {name: _abstain(name, exc) for name in self.judges}
        return {
            name: _vote(name, v.probs, 1.0, v.verdict).model_copy(
                update={"coverage": v.coverage, "steering": v.steering}
            )
            for name, v in votes.items()
        }

    def decide(self, votes: list[Vote]) -> Decision:
        """Aggregate votes with the pool's rule."""
        return aggregate(self.pool, votes, self.members)

    def comment(self, name: str, prompt: str, answer: str, max_tokens: int, recalled: str = "") -> str:
        """Ask one archetype, in its own voice, how the last part should change (used on revise)."""
        chat = prompts.comment_chat(self.persona, prompt, answer, self.members[name], recalled, self.note)
        return self.say(name, chat, max_tokens).split("\n")[0].strip()

    def say(self, name: str, chat: Chat, max_tokens: int) -> str:
        """Archetype ``name`` speaks (greedy) after ``chat``; a failure becomes a note saying why, never a crash."""
        backend: Backend = self._backend_of[name]
        try:
            return "".join(backend.generate(chat, max_tokens=max_tokens, temperature=0.0)).strip()
        except Exception as exc:  # noqa: BLE001 - words are optional; record why they are missing
            return _no_comment(exc)

    def say_all(self, chats: Mapping[str, Chat], max_tokens: int) -> dict[str, str]:
        """Each archetype speaks after its chat, as ``say``; those on one in-process model are decoded side by side.

        If decoding them together fails (their chats too long for one batch), each speaks alone.
        """
        said: dict[str, str] = {}
        for names in self._by_backend(list(chats)):
            backend = self._backend_of[names[0]]
            if len(names) > 1 and isinstance(backend, LocalModel):
                try:
                    texts = backend.generate_many([chats[n] for n in names], max_tokens=max_tokens)
                    said |= {n: t.strip() for n, t in zip(names, texts, strict=True)}
                    continue
                except Exception:  # noqa: BLE001 - too long to decode together, say: each speaks alone below
                    pass
            said |= {n: self.say(n, chats[n], max_tokens) for n in names}
        return {n: said[n] for n in chats}


def _no_comment(exc: BaseException) -> str:
    return f"(no comment: {one_line(exc, 300, typed=True)})"


def _vote(name: str, probs: dict[str, float], mass: float, verdict: str | None = None) -> Vote:
    """A vote for ``verdict``, by default the most probable one."""
    verdict = verdict or max(probs, key=lambda v: probs[v])
    return Vote(archetype=name, verdict=verdict, confidence=probs[verdict], probs=probs, mass=mass)


def _abstain(name: str, exc: BaseException) -> Vote:
    return Vote(archetype=name, verdict=None, confidence=0.0, error=one_line(exc, 300, typed=True))
