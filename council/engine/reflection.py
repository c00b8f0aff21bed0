"""The reflection-point policy: where the persona pauses to let its council vote."""

from __future__ import annotations

import re
from typing import Literal

from council.core.modelock import QUOTE_CLOSE
from council.core.settings import ReflectionSettings
from council.core.text import unmarked

BoundaryKind = Literal["marker", "quote_end", "sentence", "paragraph", "list_item", "code_block", "max_length", "end"]

_SENTENCE_END = re.compile(r"[.!?…]['\")\]»”’]*\s*$")
_LIST_ITEM = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+\S")
_ABBREVIATIONS = {"e.g", "i.e", "etc", "mr", "mrs", "ms", "dr", "vs", "st", "no", "fig", "approx"}
FENCE = "```"


class ReflectionPolicy:
    """Decides, after each streamed piece, whether the current segment has reached a reflection point.

    A stop-reflect marker always ends a segment. Logical boundaries (sentence, paragraph, list item,
    closed code block) end it once it holds ``min_segment_tokens``; ``max_segment_tokens`` ends it anyway.
    Inside an open code block only the block's end, the marker and the length limit count.
    """

    def __init__(self, settings: ReflectionSettings):
        self.settings = settings

    def strip_marker(self, segment: str) -> str:
        """Return the segment without the stop-reflect marker (``unmarked``)."""
        return unmarked(segment, self.settings.marker)

    def boundary(self, before: str, segment: str, n_tokens: int) -> BoundaryKind | None:
        """Return the kind of reflection point reached, or None to keep writing.

        Args:
            before: the accepted answer so far (decides whether a code block is open).
            segment: the text of the segment being written.
            n_tokens: how many tokens the segment holds.
        """
        s = self.settings
        if s.marker in segment:
            return "marker"
        if segment.endswith(QUOTE_CLOSE):
            return "quote_end"  # a quoted human never goes uncommented
        if n_tokens >= s.max_segment_tokens:
            return "max_length"
        in_code = (before + segment).count(FENCE) % 2 == 1
        if s.code_blocks and not in_code and FENCE in segment and segment.endswith("\n"):
            last_line = segment.rstrip("\n").rsplit("\n", 1)[-1]
            if last_line.strip() == FENCE:
                return "code_block"
        if in_code or n_tokens < s.min_segment_tokens or not segment.strip():
            return None
        if s.paragraphs and segment.endswith("\n\n"):
            return "paragraph"
        if s.list_items and segment.endswith("\n"):
            last_line = segment.rstrip("\n").rsplit("\n", 1)[-1]
            if _LIST_ITEM.match(last_line):
                return "list_item"
        if s.sentences and _SENTENCE_END.search(segment) and not _abbreviation_or_number(segment):
            return "sentence"
        return None


def _abbreviation_or_number(segment: str) -> bool:
    stripped = segment.rstrip()
    if not stripped.endswith("."):
        return False
    body = stripped[:-1]
    if body[-1:].isdigit():
        return True
    last_word = re.split(r"\s", body)[-1].lower()
    return last_word in _ABBREVIATIONS
