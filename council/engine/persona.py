"""The persona at work: drafting segments up to a reflection point, rewriting them, and closing gracefully."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from archetypes.backends import Backend, Chat
from archetypes.definitions import Persona
from council.core.modelock import ModeLock, Vocabulary, parse
from council.core.settings import GenerationSettings
from council.core.text import sentences, whole_sentences
from council.engine import prompts
from council.engine.reflection import BoundaryKind, ReflectionPolicy

MAX_DRAFTS = 64  # segments one uninterrupted draft may hold
_READ_AHEAD: frozenset[BoundaryKind] = frozenset({"sentence", "paragraph", "list_item", "code_block"})


@dataclass(frozen=True)
class Segment:
    """A piece of the answer between two reflection points."""

    text: str
    boundary: BoundaryKind
    n_tokens: int
    ended: bool  # the model finished its answer here


class PersonaWriter:
    """Writes with one backend, stopping wherever the reflection policy says."""

    def __init__(
        self,
        persona: Persona,
        backend: Backend,
        policy: ReflectionPolicy,
        generation: GenerationSettings,
        council: str = "",
    ):
        self.persona = persona
        self.backend = backend
        self.policy = policy
        self.generation = generation
        self.council = council  # who on the council votes from tokens (``prompts.council_note``)
        self._vocabulary: Vocabulary | None = None

    def lock(self, answer_before: str) -> ModeLock | None:
        """The mode lock for text that continues ``answer_before``, when the persona has ``mode_lock: true``."""
        if not self.persona.mode_lock:
            return None
        if self._vocabulary is None:
            self._vocabulary = Vocabulary(self.backend.token_texts())
        return ModeLock(self._vocabulary, answer_before)

    def write_segment(self, chat: Chat, answer_before: str, max_tokens: int, seed: int) -> Segment:
        """Stream from ``chat`` until a reflection point, the end of the answer, or ``max_tokens``.

        At a logical boundary the next pieces are read ahead while they could begin the stop-reflect marker,
        so a marker the persona writes right after a sentence makes the point its own (``"marker"``); pieces
        that are not the marker are dropped, and the next draft writes them again. A marker that opens a
        segment (the model writing again the one that closed the last) is skipped.
        """
        text, n = "", 0
        held: Segment | None = None  # the segment at a logical boundary, while the marker may follow
        marker = self.policy.settings.marker
        lock = self.lock(answer_before)
        for piece in self.backend.generate(
            chat, max_tokens=max_tokens, temperature=self.generation.temperature, seed=seed, constraint=lock
        ):
            text += piece
            n += 1
            if held is not None:
                ahead = text[len(held.text) :].lstrip()
                if marker in ahead:
                    return Segment(held.text, "marker", held.n_tokens, ended=False)
                if not marker.startswith(ahead) or n - held.n_tokens > len(marker):
                    return held
                continue
            kind = self.policy.boundary(answer_before, text, n)
            if kind == "marker" and not self.policy.strip_marker(text).strip():
                text = ""  # the marker that closed the last segment, written again: not a point of its own
            elif kind in _READ_AHEAD:
                held = Segment(text, kind, n, ended=False)
            elif kind is not None:
                return Segment(self.policy.strip_marker(text), kind, n, ended=False)
        if held is not None:
            return held
        ended = n < max_tokens or (lock is not None and lock.ended)
        return Segment(self.policy.strip_marker(text), "end" if ended else "max_length", n, ended=ended)

    def draft(self, prompt: str, answer: str, max_tokens: int, seed: int, recalled: str = "") -> Segment:
        """Continue the answer with its next segment."""
        chat = prompts.draft_chat(self.persona, prompt, answer, recalled, self.council)
        return self.write_segment(chat, answer, max_tokens, seed)

    def drafts(
        self, prompt: str, max_tokens: int, seed: int, answer: str = "", recalled: str = ""
    ) -> Iterator[tuple[Segment, str]]:
        """Draft on from ``answer``, never stopping for a council: yields each segment and the answer so far.

        At most ``MAX_DRAFTS`` segments; a segment that took no token still costs one, so the loop ends.
        """
        used = 0
        for index in range(MAX_DRAFTS):
            if used >= max_tokens:
                return
            seg = self.draft(prompt, answer, max_tokens - used, seed + index, recalled)
            used += max(seg.n_tokens, 1)
            if not seg.text.strip():
                return
            answer += seg.text
            yield seg, answer
            if seg.ended:
                return

    def rewrite(
        self, prompt: str, answer: str, segment: str, comments: dict[str, str], seed: int, recalled: str = ""
    ) -> Segment:
        """Rewrite ``segment`` (the part after ``answer``) with the council's comments in view."""
        chat = prompts.revise_chat(self.persona, prompt, answer, segment, comments, recalled, self.council)
        limit = self.policy.settings.max_segment_tokens
        rewritten = self.write_segment(chat, answer, limit, seed)
        text = rewritten.text.strip()
        lead = segment[: len(segment) - len(segment.lstrip())] or (" " if answer and not answer.endswith("\n") else "")
        tail = "\n" * (len(segment) - len(segment.rstrip("\n")))
        return Segment(lead + text + tail if text else segment, rewritten.boundary, rewritten.n_tokens, ended=False)

    def close(self, prompt: str, answer: str, closing: prompts.Closing, seed: int, recalled: str = "") -> str:
        """A closing of at most two whole sentences; the persona's fixed closing when the model cannot write one.

        A closing may not repeat a sentence or echo what the model was asked. A mode-locked persona that has
        already closed its turn with ``</AI>`` says nothing more.
        """
        if self.persona.mode_lock and parse(answer).ended:
            return ""
        chat = prompts.closing_chat(self.persona, prompt, answer, closing, recalled, self.council)
        raw = "".join(
            self.backend.generate(
                chat,
                max_tokens=self.generation.closing_tokens,
                temperature=self.generation.temperature,
                seed=seed,
                constraint=self.lock(answer),
            )
        )
        said = sentences(whole_sentences(self.policy.strip_marker(raw)))[:2]
        if said and is_own_closing(said, prompts.CLOSING_ASKS[closing]):
            return " ".join(said)
        return prompts.FALLBACK_CLOSINGS[closing]


def is_own_closing(said: list[str], ask: str) -> bool:
    """It says it stops, no sentence twice, and no four words in a row taken from what the model was asked."""
    if len({" ".join(s.lower().split()) for s in said}) < len(said):
        return False
    if not STOPPING.search(" ".join(said)):
        return False  # "I'm happy to continue." is no closing
    asked = _four_words(ask)
    return not any(_four_words(s) & asked for s in said)


STOPPING = re.compile(
    r"\b(stop|stopping|end|ending|leave|leaving|enough|can't|cannot|won't|will not|unable|rather not|sorry|pause)\b",
    re.I,
)


def _four_words(text: str) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z']+", text.lower())
    return set(zip(words, words[1:], words[2:], words[3:], strict=False))
