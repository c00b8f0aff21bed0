"""The council: asks every archetype of a pool for a vote and aggregates the votes into a decision."""

from __future__ import annotations

import re
from collections.abc import Sequence

from archetypes.backends import Backend, BackendPool, Chat, Message
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

    def vote(self, messages: Sequence[Message]) -> list[Vote]:
        """Collect one vote per archetype on the conversation in ``messages``."""
        groups: dict[int, list[str]] = {}
        for name, backend in self._backend_of.items():
            groups.setdefault(id(backend), []).append(name)
        votes: dict[str, Vote] = {}
        for names in groups.values():
            try:
                votes |= self._score(names, messages)
            except Exception:  # noqa: BLE001 - isolate the failing archetype below
                for name in names:
                    try:
                        votes |= self._score([name], messages)
                    except Exception as exc:  # noqa: BLE001 - a failed archetype abstains
                        votes[name] = Vote(archetype=name, verdict=None, confidence=0.0, error=_one_line(exc))
        return [votes[name] for name in self.members]

    def _score(self, names: list[str], messages: Sequence[Message]) -> dict[str, Vote]:
        backend = self._backend_of[names[0]]
        prefills = [prompts.vote_prefill(self.members[n]) for n in names]
        scores = backend.score(messages, prefills, prompts.VERDICT_CHOICES)
        votes = {}
        for name, score in zip(names, scores, strict=True):
            probs = score.probs
            verdict = max(probs, key=lambda v: probs[v])
            votes[name] = Vote(
                archetype=name,
                verdict=verdict,
                confidence=probs[verdict],
                probs=probs,
                mass=score.mass,  # type: ignore[arg-type]
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
