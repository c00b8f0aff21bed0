"""Splitting text into whole sentences, and marking reflection points: shared by the persona, the night and memory."""

from __future__ import annotations

import re

_SENTENCE_GAP = re.compile(r"(?<=[.!?])\s+|\n+")
_UP_TO_LAST_SENTENCE = re.compile(r"^(.*[.!?…]['\")\]»”’]*)", re.S)


def whole_sentences(text: str) -> str:
    """Cut ``text`` after its last complete sentence; return "" when it holds none."""
    match = _UP_TO_LAST_SENTENCE.match(text)
    return match.group(1) if match else ""


def sentences(text: str) -> list[str]:
    """The sentences (and lines) of ``text``, stripped; a fragment of one or two words ("P.S.") joins the next."""
    parts: list[str] = []
    carry = ""
    for part in (p.strip() for p in _SENTENCE_GAP.split(text)):
        if not part:
            continue
        part = f"{carry} {part}".strip()
        carry = part if len(part.split()) < 3 else ""
        if not carry:
            parts.append(part)
    return parts + [carry] if carry else parts


def invalid_text(text: str) -> str | None:
    """Why ``text`` is not valid Unicode text (a lone surrogate, which UTF-8 cannot encode), or None if it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"not valid text: a lone surrogate {text[exc.start]!r} at character {exc.start + 1}"
    return None


def printable(text: str) -> str:
    """``text`` with each lone surrogate written as a backslash escape, so that UTF-8 can print or store it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def marked(segment: str, marker: str) -> str:
    """``segment`` and the stop-reflect marker after it, as the persona writes the marker at a reflection point.

    After a space where the segment ends in a non-space: the segment's last token stays the one it is written
    with anyway (in SmolLM2's vocabulary ".<" is one token, while "." and " <" are two), so the marker is one
    choice at the boundary, where the writer reads ahead for it.
    """
    return segment + (marker if not segment or segment[-1].isspace() else " " + marker)


def unmarked(text: str, marker: str) -> str:
    """``text`` without its stop-reflect markers (and the space that ``marked`` put before each)."""
    return text.replace(" " + marker, "").replace(marker, "")
