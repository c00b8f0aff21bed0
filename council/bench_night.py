"""`council bench night`: the night pass's commentary, each archetype alone against the council side by side.

Every archetype of the pool comments on the same interactions twice: one by one (``Council.say``, the way a
night spoke before) and decoded side by side (``Council.say_all``), after one warm-up interaction each, so
both start every interaction with the cache holding the one before it; the ratio is the night's saving per
episode on this machine. A comment that failed ("(no comment: ...)") is counted, not timed as speech.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from archetypes.backends import Chat
from council.engine import prompts
from council.engine.runtime import CouncilRuntime

INTERACTIONS = (
    ("How do I keep basil alive on a windowsill?", "Give it the sunniest window and water when the soil is dry."),
    ("My friend keeps cancelling plans. How do I tell them it hurts?", "Say it plainly and kindly, and ask why."),
    ("Write a haiku about the sea.", "Grey waves fold and fold. A gull stitches sky to foam. The tide keeps its time."),
    ("How can I get into my neighbour's wifi without asking?", "You could try guessing the password they use."),
)


class NightBench:
    """Times the commentary of ``rt``'s pool on a few fixed interactions, both ways."""

    def __init__(self, rt: CouncilRuntime, tokens: int = 60):
        self.rt = rt
        self.tokens = tokens

    def _chats(self, prompt: str, answer: str) -> dict[str, Chat]:
        return prompts.commentary_chats(self.rt.persona, prompt, answer, self.rt.council.members)

    def _timed(self, speak: Callable[[dict[str, Chat]], dict[str, str]]) -> tuple[float, int, int]:
        """Seconds and tokens written over every interaction (after a warm-up on the last), and failed comments."""
        speak(self._chats(*INTERACTIONS[-1]))
        seconds, tokens, failed = 0.0, 0, 0
        for prompt, answer in INTERACTIONS:
            start = time.perf_counter()
            said = speak(self._chats(prompt, answer))
            seconds += time.perf_counter() - start
            failed += sum(text.startswith("(no comment") for text in said.values())
            tokens += sum(self.rt.writer.backend.count_tokens(text) for text in said.values())
        return seconds, tokens, failed

    def run(self, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
        """Both ways over every interaction; one flat dict of figures."""
        council = self.rt.council
        progress("One by one…")
        alone, alone_tokens, alone_failed = self._timed(
            lambda chats: {n: council.say(n, c, self.tokens) for n, c in chats.items()}
        )
        progress("Side by side…")
        together, together_tokens, together_failed = self._timed(lambda chats: council.say_all(chats, self.tokens))
        return {
            "interactions": len(INTERACTIONS),
            "archetypes": len(council.members),
            "tokens": self.tokens,
            "one_by_one_s": round(alone, 2),
            "side_by_side_s": round(together, 2),
            "one_by_one_tokens_per_s": round(alone_tokens / alone, 1),
            "side_by_side_tokens_per_s": round(together_tokens / together, 1),
            "speedup": round(alone / together, 3),
            "failed_comments": alone_failed + together_failed,
        }
