"""Mode-locked decoding: the persona speaks only as the AI, and quotes humans only inside marked spans.

Three modes, switched by tags: the AI speaking (``<AI>`` … ``</AI>``), a human quoted by the AI
(``<AI_quoting_human>`` … ``</AI_quoting_human>``, inside AI mode), and plain human text outside both.
Legal transitions: human → AI, AI → quote, quote → AI, AI → human; ``</AI>`` ends generation. Generation
starts in AI mode. ``ModeLock`` masks, at every step, each token that would complete an illegal tag, tracking
tags that span several tokens; ``parse`` reads the modes back from any text.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Mode = Literal["human", "ai", "quote"]
AI_OPEN, AI_CLOSE = "<AI>", "</AI>"
QUOTE_OPEN, QUOTE_CLOSE = "<AI_quoting_human>", "</AI_quoting_human>"
TAGS = (AI_OPEN, AI_CLOSE, QUOTE_OPEN, QUOTE_CLOSE)
TRANSITIONS: dict[tuple[Mode, str], Mode] = {
    ("human", AI_OPEN): "ai",
    ("ai", QUOTE_OPEN): "quote",
    ("quote", QUOTE_CLOSE): "ai",
    ("ai", AI_CLOSE): "human",
}
PROTOCOL = (
    "You speak inside <AI> and </AI>; the answer you write is already inside <AI>. When you quote what a human "
    "said or would say, wrap it in <AI_quoting_human> and </AI_quoting_human>. End your answer with </AI>."
)


def illegal_tags(mode: Mode) -> tuple[str, ...]:
    """Tags that may not be written in ``mode``."""
    return tuple(t for t in TAGS if (mode, t) not in TRANSITIONS)


@dataclass
class Span:
    """A stretch of text in one mode (tags excluded), as offsets into the parsed text."""

    mode: Mode
    start: int
    end: int


@dataclass
class Parse:
    """What ``parse`` found: spans, every tag with its legality, and whether ``</AI>`` ended the AI's turn."""

    spans: list[Span] = field(default_factory=list)
    tags: list[tuple[int, str, bool]] = field(default_factory=list)  # (offset, tag, legal)
    mode: Mode = "ai"
    ended: bool = False

    @property
    def violations(self) -> int:
        """Illegal tags, plus every stretch of text written as a human after the AI's turn ended."""
        outside = sum(1 for s in self.spans if s.mode == "human" and s.end > s.start)
        return sum(1 for _, _, legal in self.tags if not legal) + outside


def parse(text: str, start: Mode = "ai") -> Parse:
    """Split ``text`` into mode spans, starting in ``start``; illegal tags are recorded and do not switch mode."""
    result = Parse(mode=start)
    position = span_start = 0
    while True:
        found = [(text.find(tag, position), tag) for tag in TAGS]
        found = [(i, tag) for i, tag in found if i >= 0]
        if not found:
            break
        index, tag = min(found)
        if index > span_start:
            result.spans.append(Span(result.mode, span_start, index))
        legal = (result.mode, tag) in TRANSITIONS
        result.tags.append((index, tag, legal))
        if legal:
            result.ended = result.ended or tag == AI_CLOSE
            result.mode = TRANSITIONS[(result.mode, tag)]
        position = span_start = index + len(tag)
    if len(text) > span_start:
        result.spans.append(Span(result.mode, span_start, len(text)))
    return result


def with_quotes_marked(text: str) -> str:
    """``text`` without tags, each quoted span shown as [a human, quoted: "…"] so nobody mistakes it for the AI's."""
    state = parse(text)
    parts = []
    for span in state.spans:
        words = text[span.start : span.end]
        parts.append(f'[a human, quoted: "{words.strip()}"]' if span.mode == "quote" else words)
    return "".join(parts)


def pending_prefixes(text: str) -> list[str]:
    """Every suffix of ``text`` that is a proper, non-empty prefix of some tag (a tag possibly being written)."""
    longest = max(len(t) for t in TAGS)
    tail = text[-(longest - 1) :]
    return [tail[i:] for i in range(len(tail)) if any(t.startswith(tail[i:]) and t != tail[i:] for t in TAGS)]


class Vocabulary:
    """A model's token texts, indexed for prefix and substring look-ups of tag pieces."""

    def __init__(self, texts: Sequence[str]):
        order = sorted(range(len(texts)), key=lambda i: texts[i])
        self._sorted = [texts[i] for i in order]
        self._ids = np.array(order, dtype=np.int64)
        self._texts = list(texts)
        self._containing = {tag: np.array([i for i, t in enumerate(texts) if tag in t], dtype=np.int64) for tag in TAGS}

    def text(self, token: int) -> str:
        """The text of one token."""
        return self._texts[token]

    def starting_with(self, prefix: str) -> np.ndarray:
        """Ids of tokens whose text starts with ``prefix``."""
        low = bisect.bisect_left(self._sorted, prefix)
        high = bisect.bisect_left(self._sorted, prefix + "\U0010ffff")
        return self._ids[low:high]

    def containing(self, tag: str) -> np.ndarray:
        """Ids of tokens whose text contains the whole of ``tag``."""
        return self._containing[tag]


class ModeLock:
    """Per-answer decoding state: which tokens are banned next, and the mode after each emitted piece."""

    def __init__(self, vocabulary: Vocabulary, text_so_far: str = ""):
        self.vocabulary = vocabulary
        state = parse(text_so_far)
        self.mode: Mode = state.mode
        self.ended = state.ended
        self.text = text_so_far

    def banned(self) -> np.ndarray:
        """Token ids that would complete a tag that is illegal in the current mode.

        A tag being written across tokens is caught by its remaining characters; a token holding whole tags
        is checked by parsing the text as it would become, so that legal sequences inside one token pass.
        """
        pieces = []
        for prefix in pending_prefixes(self.text):
            for tag in illegal_tags(self.mode):
                if tag.startswith(prefix):
                    pieces.append(self.vocabulary.starting_with(tag[len(prefix) :]))
        illegal_now = sum(1 for _, _, legal in parse(self.text).tags if not legal)
        for token in np.unique(np.concatenate([self.vocabulary.containing(tag) for tag in TAGS])):
            after = parse(self.text + self.vocabulary.text(int(token)))
            if sum(1 for _, _, legal in after.tags if not legal) > illegal_now:
                pieces.append(np.array([token]))
        return np.unique(np.concatenate(pieces)).astype(np.int64) if pieces else np.zeros(0, dtype=np.int64)

    def accept(self, piece: str) -> str | None:
        """Take an emitted piece; returns the piece cut after ``</AI>`` when that tag ends the turn, else None."""
        before = len(self.text)
        self.text += piece
        state = parse(self.text)
        self.mode = state.mode
        if state.ended and not self.ended:
            self.ended = True
            close = next(i for i, tag, legal in state.tags if tag == AI_CLOSE and legal)
            return self.text[before : close + len(AI_CLOSE)]
        return None
