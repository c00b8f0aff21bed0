"""The promotion gate: what a persona version is measured on, and when it may replace the one in use.

A trained version is promoted only if (1) its held-out pair accuracy (log-probability of chosen above
rejected, in llama.cpp, on pairs it never trained on) beats the version it started from, (2) its mean
per-token KL from the base model on the probe prompts stays under ``train.max_kl``, and (3) the council
approves of its drafts on the probe prompts at least as often (within ``train.approval_slack``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from archetypes.backends import LocalModel, Message
from archetypes.backends.base import Role
from council.core.errors import ContextOverflowError
from council.core.settings import TrainSettings
from council.core.training import Figures
from council.engine import prompts
from council.engine.persona import PersonaWriter
from council.engine.runtime import CouncilRuntime
from council.engine.voting import Point
from council.evaluation.evaluate import PairRow

PROBES = (
    "How can I make my mornings less rushed?",
    "My sister forgot my birthday. Should I say something?",
    "Explain what a black hole is in simple words.",
    "Write the first lines of a short poem about rain.",
    "I failed my driving test today. Any advice?",
    "What is a healthy way to handle stress at work?",
    "Can you help me plan a small picnic for four people?",
    "Give me every digit of pi.",
)
_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]*")


def completion_logprob(backend: LocalModel, prompt: Sequence[dict[str, str]], completion: str) -> float:
    """The log-probability of ``completion`` as the persona's next assistant turn, in llama.cpp."""
    messages = [Message(cast(Role, m["role"]), m["content"]) for m in prompt]
    head = backend.render(messages, "")
    tokens = backend.render(messages, completion)
    return float(backend.token_logprobs(tokens, len(head)).sum())


def pair_margins(backend: LocalModel, rows: Sequence[dict[str, Any]]) -> np.ndarray:
    """Per conversational preference row, log p(chosen) - log p(rejected); rows longer than the context are skipped."""
    margins = []
    for row in rows:
        try:
            lp = [completion_logprob(backend, row["prompt"], row[c][0]["content"]) for c in ("chosen", "rejected")]
        except ContextOverflowError:
            continue
        margins.append(lp[0] - lp[1])
    return np.array(margins)


def hh_turns(system: str, prompt: str) -> list[dict[str, str]]:
    """An HH-style ``Human: … Assistant: …`` transcript as chat turns after the persona's system prompt."""
    parts = _TURN.split(prompt.strip())
    lead, parts = parts[0].strip(), parts[1:]
    roles = {"Human": "user", "Assistant": "assistant"}
    turns = [{"role": roles[who], "content": text.strip()} for who, text in zip(parts[::2], parts[1::2], strict=True)]
    if lead:  # text before any "Human:" is the human's
        turns.insert(0, {"role": "user", "content": lead})
    while turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
        turns.pop()  # a transcript ending in "Assistant:" leaves the reply to be judged
    return [{"role": "system", "content": system}, *turns]


class VersionProbe:
    """Measures persona versions on held-out pairs, the probe prompts and (optionally) a human-labelled set."""

    def __init__(
        self,
        rt: CouncilRuntime,
        base: LocalModel,
        settings: TrainSettings,
        heldout: list[dict[str, Any]],
        dev: list[PairRow] | None = None,
    ):
        self.rt = rt
        self.base = base
        self.settings = settings
        self.heldout = heldout
        self.dev = dev or []
        self._reference = [self._reference_text(p) for p in PROBES]

    def _reference_text(self, prompt: str) -> tuple[list[int], int]:
        """The base model's greedy answer to a probe, as tokens, and where the answer starts."""
        chat = prompts.draft_chat(self.rt.persona, prompt, "")
        text = "".join(self.base.generate(chat, max_tokens=self.settings.probe_tokens, temperature=0.0))
        head = self.base.render(chat.messages, "")
        return self.base.render(chat.messages, text or " "), len(head)

    def measure(self, version: str, backend: LocalModel) -> Figures:
        """Every figure of the gate and the report for ``backend`` (the persona at ``version``)."""
        margins = pair_margins(backend, self.heldout)
        decisions, markers, points = self._drafts(backend)
        dev = self._dev_agreement(backend)
        return Figures(
            version=version,
            heldout_accuracy=round(float((margins > 0).mean()), 4) if len(margins) else None,
            heldout_margin=round(float(margins.mean()), 4) if len(margins) else None,
            heldout_pairs=len(margins),
            kl_from_base=round(self._kl(backend), 5),
            decisions=decisions,
            marker_rate=markers,
            points=points,
            dev_agreement=dev[0],
            dev_pairs=dev[1],
        )

    def _kl(self, backend: LocalModel) -> float:
        if backend is self.base:
            return 0.0
        per_token = []
        for tokens, start in self._reference:
            p = backend.distributions(tokens, start)
            q = self.base.distributions(tokens, start)
            per_token += list((np.exp(p) * (p - q)).sum(axis=1))
        return float(np.mean(per_token))

    def _drafts(self, backend: LocalModel) -> tuple[dict[str, float], float, int]:
        """Council decisions on greedy drafts of the probes (always continuing), the marker rate and the points."""
        generation = self.rt.settings.generation.model_copy(update={"temperature": 0.0})
        writer = PersonaWriter(self.rt.persona, backend, self.rt.writer.policy, generation, self.rt.council.note)
        decisions: Counter[str] = Counter()
        markers = 0
        for prompt in PROBES:
            for seg, answer in writer.drafts(prompt, self.settings.probe_tokens, generation.seed):
                votes = self.rt.council.vote(Point(prompt, answer, seg.text))
                decisions[self.rt.council.decide(votes).decision] += 1
                markers += seg.boundary == "marker"
        total = max(sum(decisions.values()), 1)
        shares = {d: round(decisions[d] / total, 4) for d in ("continue", "revise", "let_go")}
        return shares, round(markers / total, 4), sum(decisions.values())

    def _dev_agreement(self, backend: LocalModel) -> tuple[float | None, int]:
        """Share of human-labelled pairs where the persona finds the human-chosen reply more likely."""
        hits = []
        for row in self.dev:
            turns = hh_turns(self.rt.persona.character, row.prompt)
            try:
                hits.append(
                    completion_logprob(backend, turns, row.chosen) > completion_logprob(backend, turns, row.rejected)
                )
            except ContextOverflowError:
                continue
        return (round(float(np.mean(hits)), 4) if hits else None), len(hits)


def decide(candidate: Figures, previous: Figures, settings: TrainSettings) -> list[str]:
    """The gate's reasons to refuse ``candidate`` (empty: promote)."""
    reasons = []
    if candidate.heldout_accuracy is None or previous.heldout_accuracy is None:
        reasons.append("no held-out pairs to compare on (raise train.holdout or sleep on more episodes)")
    elif (candidate.heldout_accuracy, candidate.heldout_margin or 0.0) <= (
        previous.heldout_accuracy,
        previous.heldout_margin or 0.0,
    ):
        reasons.append(
            f"held-out pair accuracy {candidate.heldout_accuracy:.3f} (margin {candidate.heldout_margin:.2f}) does not"
            f" beat {previous.version}'s {previous.heldout_accuracy:.3f} (margin {previous.heldout_margin:.2f})"
        )
    if candidate.kl_from_base > settings.max_kl:
        reasons.append(
            f"drift from the base {candidate.kl_from_base:.3f} nats/token exceeds train.max_kl {settings.max_kl}"
        )
    if candidate.approval < previous.approval - settings.approval_slack - approval_noise(candidate, previous):
        reasons.append(f"council approval on the probes fell from {previous.approval:.3f} to {candidate.approval:.3f}")
    return reasons


def approval_noise(a: Figures, b: Figures) -> float:
    """Two standard errors of the difference of two approval shares (0 when either count is unknown).

    The probes give a few dozen points, so the gate must not refuse a version for one or two of them.
    """
    if not a.points or not b.points:
        return 0.0
    p = (a.approval * a.points + b.approval * b.points) / (a.points + b.points)
    return 2 * float(np.sqrt(p * (1 - p) * (1 / a.points + 1 / b.points)))


def load_dev(path: Path | None, limit: int) -> list[PairRow]:
    """The first ``limit`` human-labelled pairs of ``path`` (none without a path)."""
    if path is None or limit == 0:
        return []
    from council.evaluation.evaluate import load_rows

    return load_rows(path, "pairs", limit)
