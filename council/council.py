"""The council: asks every archetype of a pool for a vote and aggregates the votes into a decision."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from archetypes.backends import Backend, BackendPool, Chat, ChoiceScores, Message
from archetypes.models import Archetype, Persona, Pool
from council import prompts
from council.aggregate import aggregate
from council.episode import Decision, Vote


class Council:
    """A pool's archetypes with their loaded models. Definitions are frozen: nothing here can change them.

    Archetypes that share a backend are scored in one batched call; if that call fails, each archetype is
    retried alone, and one that still fails is recorded as an abstention with its error.
    """

    def __init__(self, pool: Pool, members: Sequence[Archetype], persona: Persona, backends: BackendPool):
        self.pool = pool
        self.members = {a.name: a for a in members}
        self._backend_of = {a.name: backends.get(a.model, persona.model) for a in members}

    @property
    def hashes(self) -> dict[str, str]:
        """Content hash of every archetype definition on the council."""
        return {name: a.content_hash() for name, a in self.members.items()}

    def model_ids(self) -> dict[str, str]:
        """Which model each archetype votes with."""
        return {name: backend.model_id for name, backend in self._backend_of.items()}

    def read(
        self, messages: Sequence[Message], choices: Mapping[str, Sequence[str]], cue: Callable[[Archetype], str]
    ) -> dict[str, ChoiceScores | Exception]:
        """Every archetype's next-token probabilities of ``choices`` after ``messages`` and its own ``cue``.

        Archetypes sharing a backend are read in one batched call; if it fails, each is retried alone, and
        one that still fails maps to its exception.
        """
        groups: dict[int, list[str]] = {}
        for name, backend in self._backend_of.items():
            groups.setdefault(id(backend), []).append(name)
        read: dict[str, ChoiceScores | Exception] = {}
        for names in groups.values():
            try:
                read |= self._read(names, messages, choices, cue)
            except Exception:  # noqa: BLE001 - isolate the failing archetype below
                for name in names:
                    try:
                        read |= self._read([name], messages, choices, cue)
                    except Exception as exc:  # noqa: BLE001 - recorded by the caller
                        read[name] = exc
        return {name: read[name] for name in self.members}

    def _read(
        self,
        names: list[str],
        messages: Sequence[Message],
        choices: Mapping[str, Sequence[str]],
        cue: Callable[[Archetype], str],
    ) -> dict[str, ChoiceScores]:
        backend = self._backend_of[names[0]]
        scores = backend.score(messages, [cue(self.members[n]) for n in names], choices)
        return dict(zip(names, scores, strict=True))

    def vote(self, messages: Sequence[Message]) -> list[Vote]:
        """Collect one vote per archetype on the conversation in ``messages``; a failure is an abstention."""
        votes = []
        for name, score in self.read(messages, prompts.VERDICT_CHOICES, prompts.vote_prefill).items():
            if isinstance(score, Exception):
                votes.append(Vote(archetype=name, verdict=None, confidence=0.0, error=_one_line(score)))
                continue
            verdict = max(score.probs, key=lambda v: score.probs[v])
            votes.append(
                Vote(
                    archetype=name,
                    verdict=verdict,  # type: ignore[arg-type]
                    confidence=score.probs[verdict],
                    probs=score.probs,
                    mass=score.mass,
                )
            )
        return votes

    def decide(self, votes: list[Vote]) -> Decision:
        """Aggregate votes with the pool's rule."""
        return aggregate(self.pool, votes, self.members)

    def comment(
        self, name: str, persona: Persona, prompt: str, answer: str, max_tokens: int, recalled: str = ""
    ) -> str:
        """Ask one archetype, in its own voice, how the last part should change (used on revise)."""
        chat = prompts.comment_chat(persona, prompt, answer, self.members[name], recalled)
        return self.say(name, chat, max_tokens).split("\n")[0].strip()

    def say(self, name: str, chat: Chat, max_tokens: int) -> str:
        """Archetype ``name`` speaks (greedy) after ``chat``; a failure becomes a note saying why, never a crash."""
        backend: Backend = self._backend_of[name]
        try:
            return "".join(backend.generate(chat, max_tokens=max_tokens, temperature=0.0)).strip()
        except Exception as exc:  # noqa: BLE001 - words are optional; record why they are missing
            return f"(no comment: {_one_line(exc)})"


def _one_line(exc: BaseException) -> str:
    return re.sub(r"\s+", " ", f"{type(exc).__name__}: {exc}")[:300]
