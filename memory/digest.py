"""Recall: turn the memories most similar to a prompt into a compact digest that fits a token budget."""

from __future__ import annotations

from collections.abc import Callable

from council.core.episode import Recollection


def _line(hit: Recollection, limit: int) -> str:
    text = " / ".join(part.strip() for part in hit.text.splitlines() if part.strip())
    if len(text) > limit:
        text = text[: max(0, limit - 1)].rstrip() + "…"
    return f"- ({hit.kind}) {text}"


def digest(
    hits: list[Recollection], count_tokens: Callable[[str], int], budget: int, line_chars: int = 400
) -> tuple[str, list[Recollection]]:
    """The digest of ``hits`` (best first) within ``budget`` tokens, and the hits it kept.

    Each memory becomes one line; a line that does not fit is shortened to what is left of the budget, and
    recall stops at the first memory that cannot keep at least a few words.
    """
    lines: list[str] = []
    kept: list[Recollection] = []
    for hit in hits:
        left = budget - count_tokens("\n".join(lines)) - (1 if lines else 0)
        limit = line_chars
        line = _line(hit, limit)
        while count_tokens(line) > left and limit > 60:
            limit = int(limit * 0.7)
            line = _line(hit, limit)
        if count_tokens(line) > left:
            break
        lines.append(line)
        kept.append(hit)
    return "\n".join(lines), kept
