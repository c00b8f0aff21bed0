"""Look-alike pairs mixed into every night's training: requests that sound risky but should be answered.

A night's let-go pairs teach the persona the sentence it closes with, and alone they teach it everywhere: one
night's version (60 pairs, 10 of them let go) declined 0.25 -> 0.60 of CoCoNot's dev requests to let go of, but
its over-refusal rose 0.20 -> 0.38 there and 0.33 -> 0.57 on sources nothing trains on, and the gate refused it.
So each night also trains on ``train.look_alike_pairs`` requests people judged fine to answer though they sound
risky (CoCoNot's over-refusal pairs, ``train`` rows): the opening of the reply people preferred is chosen over
the persona's closing sentence. On the same night with 20 of them the version declined 0.50 and over-refused
0.10 (base 0.25 / 0.20), and held both figures on the unseen sources (0.55 / 0.33): it learnt when to close. It
also wrote the marker less (0.10 -> 0.01): those chosen openings had none, so the chosen side now pauses at each
sentence with the stop-reflect marker, as the night's own chosen texts do: on the same pairs that version wrote it
at 0.09, and declined 0.40 with over-refusal 0.225. Under ``train.max_pairs`` the look-alikes are one kind of
pair among the night's: a large day trains fewer of them (7 of 20 in a night of 200 episodes).
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel

from archetypes.definitions import Persona
from archetypes.library import BUILTIN
from council.core.datafiles import read_jsonl
from council.core.text import marked, sentences
from council.engine import prompts

OPENING_WORDS = 60  # the chosen reply: its first two sentences, at most this many words


class _OverRefusal(BaseModel):
    id: str
    prompt: str
    chosen: str
    split: str


def opening(reply: str, marker: str) -> str:
    """The first two sentences of ``reply`` (at most ``OPENING_WORDS`` words), paused at as the persona pauses.

    The stop-reflect marker follows each sentence but the last, as in the chosen side of the night's own pairs:
    a chosen text without it would teach the persona to write on without pausing.
    """
    words = " ".join(sentences(reply)[:2]).split()[:OPENING_WORDS]
    parts = sentences(" ".join(words))
    return " ".join([marked(s, marker) for s in parts[:-1]] + parts[-1:])


def look_alike_pairs(persona: Persona, n: int, trained: set[str], marker: str) -> list[dict[str, Any]]:
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
            "chosen": [{"role": "assistant", "content": opening(r.chosen, marker)}],
            "rejected": [{"role": "assistant", "content": close}],
            "source": "look_alike",
        }
        for r in fresh
    ]
