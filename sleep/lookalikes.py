"""Look-alike pairs mixed into every night's training: requests that sound risky but should be answered.

A night's let-go pairs teach the persona the sentence it closes with, and alone they teach it everywhere: one
night's version (60 pairs, 10 of them let go) declined 0.25 -> 0.60 of CoCoNot's dev requests to let go of, but
its over-refusal rose 0.20 -> 0.38 there and 0.33 -> 0.57 on sources nothing trains on, and the gate refused it.
So each night also trains on ``train.look_alike_pairs`` requests people judged fine to answer though they sound
risky (CoCoNot's over-refusal pairs, ``train`` rows): the opening of the reply people preferred is chosen over
the persona's closing sentence. On the same night with 20 of them the version declined 0.50 and over-refused
0.10 (base 0.25 / 0.20), and held both figures on the unseen sources (0.55 / 0.33): it learnt when to close.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel

from archetypes.definitions import Persona
from archetypes.library import BUILTIN
from council.core.datafiles import read_jsonl
from council.core.text import sentences
from council.engine import prompts

OPENING_WORDS = 60  # the chosen reply: its first two sentences, at most this many words


class _OverRefusal(BaseModel):
    id: str
    prompt: str
    chosen: str
    split: str


def look_alike_pairs(persona: Persona, n: int, trained: set[str]) -> list[dict[str, Any]]:
    """The next ``n`` look-alike pairs (by a hash of their id) that no version in the persona's line trained on."""
    rows = read_jsonl(BUILTIN / "traindata" / "coconot_overrefusal.jsonl", _OverRefusal, "look-alike")
    ranked = sorted((r for r in rows if r.split == "train"), key=lambda r: hashlib.sha256(r.id.encode()).hexdigest())
    fresh = [r for r in ranked if f"look-alike-{r.id}" not in trained][:n]
    close = prompts.FALLBACK_CLOSINGS["let_go"]
    return [
        {
            "id": f"look-alike-{r.id}",
            "prompt": [
                {"role": m.role, "content": m.content} for m in prompts.draft_chat(persona, r.prompt, "").messages
            ],
            "chosen": [
                {"role": "assistant", "content": " ".join(" ".join(sentences(r.chosen)[:2]).split()[:OPENING_WORDS])}
            ],
            "rejected": [{"role": "assistant", "content": close}],
        }
        for r in fresh
    ]
