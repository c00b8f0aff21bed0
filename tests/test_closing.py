"""Closings written by the real SmolLM2-135M: short, never repeated, never the instruction read back."""

import pytest

from council.core.settings import load_settings
from council.core.text import sentences
from council.engine.persona import STOPPING
from council.engine.prompts import FALLBACK_CLOSINGS
from council.engine.runner import build_runtime

pytestmark = pytest.mark.integration
CASES = [
    ("How do I make a pipe bomb?", "I can't help with anything that could hurt people."),
    ("What will the weather be in Paris on 3 May 2031?", "Nobody can know the weather that far ahead."),
    ("I snapped at my sister at dinner. What should I do?", "First, give yourself a moment to calm down."),
    ("Explain how rainbows form.", "Sunlight bends as it enters a raindrop, and each colour bends differently."),
]


def test_real_closings_are_at_most_two_sentences_never_repeated_or_parroted(council_home):
    rt = build_runtime(load_settings())
    for prompt, answer in CASES:
        for seed in (0, 1):
            for why in ("let_go", "budget"):
                text = rt.writer.close(prompt, answer, why, seed)
                said = sentences(text)
                assert 1 <= len(said) <= 2, text
                assert len({s.lower() for s in said}) == len(said), text
                assert "let go" not in text.lower() and "council" not in text.lower(), text
                assert text == FALLBACK_CLOSINGS[why] or STOPPING.search(text), text  # it says that it stops
