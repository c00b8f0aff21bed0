"""A deterministic scripted backend for unit tests. Never the default."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from archetypes.backends.base import Chat, ChoiceScores, Constraint, GenerationStats, Message


@dataclass
class FakeCall:
    """One recorded call: its kind and its arguments."""

    kind: str
    chat: Chat | None = None
    messages: tuple[Message, ...] = ()
    prefills: tuple[str, ...] = ()


@dataclass
class FakeBackend:
    """Replays scripted texts and votes, and records every call in ``history``.

    ``enqueue("text")`` scripts the next ``generate`` call; ``enqueue_scores({...})`` scripts the next
    scored prefill. With nothing queued, ``generate`` yields nothing (end of text) and ``score`` favours
    ``default_choice``.
    """

    model_id: str = "fake"
    default_choice: str = "continue"
    stats: GenerationStats = field(default_factory=GenerationStats)
    history: list[FakeCall] = field(default_factory=list)
    _texts: deque[str] = field(default_factory=deque)
    _scores: deque[dict[str, float] | Exception] = field(default_factory=deque)
    _emitted: list[str] = field(default_factory=list)
    _rest: list[str] = field(default_factory=list)

    def enqueue(self, *texts: str) -> None:
        """Queue texts for the next ``generate`` calls, one text per call."""
        self._texts.extend(texts)

    def enqueue_scores(self, *scores: dict[str, float] | Exception) -> None:
        """Queue choice probabilities (or an exception to raise) for the next scored prefills."""
        self._scores.extend(scores)

    def generate(
        self,
        chat: Chat,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        constraint: Constraint | None = None,
    ) -> Iterator[str]:
        """Yield a queued text in word-sized pieces, at most ``max_tokens`` of them.

        Like a real model, a call whose prefill ends with what an interrupted call emitted (or the start of
        it) resumes that text; any other call starts the next queued text. A constraint can end the text
        (nothing is masked: the fake has no vocabulary).
        """
        self.history.append(FakeCall("generate", chat=chat))
        if not self._resume(chat.prefill):
            text = self._texts.popleft() if self._texts else ""
            self._emitted, self._rest = [], re.findall(r"\s*\S+|\s+", text)
        for _ in range(max_tokens):
            if not self._rest:
                return
            piece = self._rest.pop(0)
            self._emitted.append(piece)
            self.stats.generated_tokens += 1
            cut = constraint.accept(piece) if constraint is not None else None
            if cut is not None:
                self._rest = []
                yield cut
                return
            yield piece

    def _resume(self, prefill: str) -> bool:
        """Go on with the interrupted text if ``prefill`` ends with what it emitted, giving back what was not kept.

        Special-token-like markers (``<|...|>``) are not answer text: the writer keeps them out of the answer.
        """
        answer = _text(prefill)
        for kept in range(len(self._emitted) if prefill else 0, 0, -1):
            if answer.endswith(_text("".join(self._emitted[:kept]))):
                rest = self._emitted[kept:] + self._rest
                if rest:
                    self._emitted, self._rest = self._emitted[:kept], rest
                return bool(rest)
        return False

    def token_texts(self) -> list[str]:
        """The fake has no vocabulary."""
        return []

    def count_tokens(self, text: str) -> int:
        """One token per word, as ``generate`` emits them."""
        return len(text.split())

    def score(
        self, messages: Sequence[Message], prefills: Sequence[str], choices: Mapping[str, Sequence[str]]
    ) -> list[ChoiceScores]:
        """Return queued probabilities per prefill, or a fixed preference for ``default_choice``."""
        self.history.append(FakeCall("score", messages=tuple(messages), prefills=tuple(prefills)))
        results = []
        for _ in prefills:
            scripted = self._scores.popleft() if self._scores else None
            if isinstance(scripted, Exception):
                raise scripted
            raw = scripted or {c: (0.6 if c == self.default_choice else 0.2) for c in choices}
            total = sum(raw.get(c, 0.0) for c in choices) or 1.0
            results.append(ChoiceScores(probs={c: raw.get(c, 0.0) / total for c in choices}, mass=min(total, 1.0)))
        return results


def _text(answer: str) -> str:
    return re.sub(r"\s*<\|[^|<>]*\|>", "", answer)
