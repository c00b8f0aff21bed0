"""`council bench`: what reflection costs, measured against plain generation in the same process.

Three paths over the same prompts, each the median of several repeats:

(a) plain: the persona generates ``tokens`` tokens in one go;
(b) council: the persona drafts segment by segment with the project's fast council voting at every reflection
    point (verdicts from next-token probabilities, shared KV cache, branches batched);
(c) naive: the same drafting, but at every reflection point each archetype gets its own chat completion over
    the full context (empty cache) and writes a short verdict (its first token held to a verdict word, as
    structured output would), which is parsed; the persona then re-reads its context, as it would after any
    other tool used the model.

Times are per generated token, so the ratios compare equal amounts of text. Verdict agreement runs the naive
council on exactly the drafts that (b) voted on.
"""

from __future__ import annotations

import re
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from archetypes.backends import Chat, LocalModel
from council.core.errors import ModelError
from council.engine import prompts
from council.engine.runtime import CouncilRuntime
from council.engine.voting import Point

PROMPTS = (
    "My friend keeps cancelling plans at the last minute. How do I tell them it hurts?",
    "Explain to a ten-year-old why the sky is blue.",
    "Give me three tips for sleeping better, and say why each one works.",
    "How should I prepare for my first job interview?",
    "Write a short, kind note to a neighbour whose dog barks all night.",
)
_VERDICT_IN_TEXT = re.compile(r"continue|revise|let[ _]?go", re.I)


def _vm(field_name: str) -> int:
    """Return a /proc/self/status memory field in KiB (0 where unavailable)."""
    status = Path("/proc/self/status")
    if not status.exists():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss if field_name == "VmHWM" else 0
    for line in status.read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


class VerdictFirst:
    """Structured output for the naive council: the first token starts a verdict word, the rest is free text.

    Without it SmolLM2 mostly echoes the options or rambles (no verdict parsed in 37% of votes, measured), and
    the agreement figure would measure that, not whether the fast path changes the council's answers.
    """

    def __init__(self, allowed: list[int], vocabulary: int):
        self._banned = np.setdiff1d(np.arange(vocabulary), allowed)
        self._started = False

    def banned(self) -> np.ndarray:
        """Every token but the verdicts' first tokens, on the first step only."""
        return self._banned[:0] if self._started else self._banned

    def accept(self, piece: str) -> None:
        """Free text after the first token."""
        self._started = True


@dataclass
class PathResult:
    """One path's measurements, summed over prompts, for one repeat."""

    seconds: float = 0.0
    tokens: int = 0
    reflection_points: int = 0
    tokens_evaluated: int = 0
    peak_rss_kib: int = 0
    verdicts: list[list[str]] = field(default_factory=list)
    snapshots: list[Point] = field(default_factory=list)

    @property
    def seconds_per_token(self) -> float:
        """Time per generated token."""
        return self.seconds / max(self.tokens, 1)


@dataclass
class BenchReport:
    """Figures printed by `council bench` (and its --json object)."""

    overhead_ratio: float
    naive_ratio: float
    rss_ratio: float
    rss_ratio_without_encoder: float  # against plain generation in a process without the judges' encoder weights
    judge_encoder_mib: float
    verdict_agreement: float | None  # token voters only: a judge does not imitate the naive prompt
    plain_ms_per_token: float
    council_ms_per_token: float
    naive_ms_per_token: float
    council_tokens_per_reflection_point: float
    naive_tokens_per_reflection_point: float
    reflection_points: int
    tokens: int
    peak_rss_plain_mib: float
    peak_rss_council_mib: float
    prompts: int
    repeats: int
    model: str
    pool: str

    def as_dict(self) -> dict[str, float | int | str]:
        """The report as a plain dict."""
        return asdict(self)


class Bench:
    """Runs the three paths on one runtime (one loaded model)."""

    def __init__(self, rt: CouncilRuntime, tokens: int = 200):
        self.rt = rt
        self.tokens = tokens
        if not isinstance(rt.writer.backend, LocalModel):
            what = rt.writer.backend.model_id
            raise ModelError(f"the bench needs a llama.cpp persona model, not {what}", "give the persona a GGUF")
        self.backend: LocalModel = rt.writer.backend
        self.members = list(rt.council.members.values())
        self.seed = rt.settings.generation.seed
        self._verdict_tokens: list[int] | None = None
        self.voters: dict[str, Callable[[Point], list[str]]] = {"fast": self.fast_vote, "naive": self.naive_vote}

    def plain(self, prompt: str) -> PathResult:
        """(a) Generate ``tokens`` tokens in one call."""
        chat = prompts.draft_chat(self.rt.persona, prompt, "")
        start = time.perf_counter()
        n = sum(1 for _ in self.backend.generate(chat, max_tokens=self.tokens, temperature=0.7, seed=self.seed))
        return PathResult(seconds=time.perf_counter() - start, tokens=n)

    def drafted(self, prompt: str, vote: Callable[[Point], list[str]]) -> PathResult:
        """(b) or (c): draft to each reflection point, let ``vote`` judge, always continue."""
        result = PathResult()
        start = time.perf_counter()
        for seg, answer in self.rt.writer.drafts(prompt, self.tokens, self.seed):
            result.tokens += seg.n_tokens
            point = Point(prompt, answer, seg.text)
            result.verdicts.append(vote(point))
            result.snapshots.append(point)
            result.reflection_points += 1
        result.seconds = time.perf_counter() - start
        return result

    def fast_vote(self, point: Point) -> list[str]:
        """The project's council: judges read features once; token voters are scored in one batched call."""
        return [v.verdict or "abstain" for v in self.rt.council.vote(point)]

    def naive_vote(self, point: Point) -> list[str]:
        """Each archetype: its own completion over the full context, a verdict word then free text, parsed."""
        messages = prompts.vote_messages(self.rt.persona, point.prompt, point.answer)
        verdicts = []
        for archetype in self.members:
            self._forget()
            chat = Chat(messages, prefill=prompts.vote_prefill(archetype))
            text = "".join(self.backend.generate(chat, max_tokens=8, temperature=0.0, constraint=self._verdict_first()))
            found = _VERDICT_IN_TEXT.search(text)
            verdicts.append(found.group(0).lower().replace(" ", "_").replace("letgo", "let_go") if found else "none")
        self._forget()
        return verdicts

    def _verdict_first(self) -> VerdictFirst:
        if self._verdict_tokens is None:
            forms = [f for group in prompts.VERDICT_CHOICES.values() for f in group]
            self._verdict_tokens = sorted({self.backend.encode(f)[0] for f in forms})
        return VerdictFirst(self._verdict_tokens, len(self.backend.token_texts()))

    def _forget(self) -> None:
        """Empty the model's cache and the judges' reader's: each prompt is read as if new.

        A separate request to a server without prompt caching would start so; no repeat reads a text an
        earlier one read.
        """
        self.backend.reset()
        if self.rt.council.reader is not None:
            self.rt.council.reader.forget()

    def run_path(self, path: str) -> PathResult:
        """Run one path over every prompt; return the summed result."""
        total = PathResult()
        _reset_peak_rss()
        evaluated = self.backend.stats.tokens_evaluated
        for prompt in PROMPTS:
            self._forget()
            r = self.plain(prompt) if path == "plain" else self.drafted(prompt, self.voters[path])
            total.seconds += r.seconds
            total.tokens += r.tokens
            total.reflection_points += r.reflection_points
            total.verdicts += r.verdicts
            total.snapshots += r.snapshots
        total.peak_rss_kib = _vm("VmHWM")
        total.tokens_evaluated = self.backend.stats.tokens_evaluated - evaluated
        return total

    def run(self, repeats: int = 3, progress: Callable[[str], None] | None = None) -> BenchReport:
        """Measure every path ``repeats`` times (interleaved) and build the report."""
        runs: dict[str, list[PathResult]] = {"plain": [], "fast": [], "naive": []}
        self.run_path("plain")  # warm-up: page the model in
        for i in range(repeats):
            for path in runs:
                if progress:
                    progress(f"repeat {i + 1}/{repeats}: {path}")
                runs[path].append(self.run_path(path))
        med = {p: statistics.median(r.seconds_per_token for r in rs) for p, rs in runs.items()}
        plain, fast, naive = runs["plain"][0], runs["fast"][0], runs["naive"][0]
        prompt_tokens = plain.tokens_evaluated - plain.tokens

        def per_point(r: PathResult) -> float:
            """Tokens evaluated beyond the prompt and the generated text, per reflection point."""
            return round((r.tokens_evaluated - r.tokens - prompt_tokens) / max(r.reflection_points, 1), 1)

        if progress:
            progress("verdict agreement")
        agree = total = 0
        token_voters = [i for i, a in enumerate(self.members) if a.name in self.rt.council.token_voters]
        for point, verdicts in zip(fast.snapshots, fast.verdicts):
            naive_verdicts = self.naive_vote(point) if token_voters else []
            for i in token_voters:
                agree += verdicts[i] == naive_verdicts[i]
                total += 1
        rss_plain = statistics.median(r.peak_rss_kib for r in runs["plain"])
        rss_fast = statistics.median(r.peak_rss_kib for r in runs["fast"])
        reader = self.rt.council.reader
        encoder_kib = reader.embedder.weight_bytes() / 1024 if reader is not None else 0.0
        return BenchReport(
            overhead_ratio=round(med["fast"] / med["plain"], 3),
            naive_ratio=round(med["naive"] / med["plain"], 3),
            rss_ratio=round(rss_fast / rss_plain, 3),
            rss_ratio_without_encoder=round(rss_fast / (rss_plain - encoder_kib), 3),
            judge_encoder_mib=round(encoder_kib / 1024, 1),
            verdict_agreement=round(agree / total, 3) if total else None,
            plain_ms_per_token=round(1000 * med["plain"], 2),
            council_ms_per_token=round(1000 * med["fast"], 2),
            naive_ms_per_token=round(1000 * med["naive"], 2),
            council_tokens_per_reflection_point=per_point(fast),
            naive_tokens_per_reflection_point=per_point(naive),
            reflection_points=fast.reflection_points,
            tokens=fast.tokens,
            peak_rss_plain_mib=round(rss_plain / 1024, 1),
            peak_rss_council_mib=round(rss_fast / 1024, 1),
            prompts=len(PROMPTS),
            repeats=repeats,
            model=self.backend.model_id,
            pool=self.rt.pool.name,
        )
