"""Trained judges: what an archetype learnt from human labels, applied at a reflection point.

A judge reads features of a small sentence encoder (all-MiniLM-L6-v2, the memory's embedder), not the persona's
model, so no trained persona version can shift what it reads. The features are the encoder's mean-pooled hidden
states of every layer, each scaled to unit length: the last layer alone is tuned for paraphrase, which blurs
"I unplugged the toaster" into "I plugged in the toaster"; the lower layers keep such words apart.

A judge has up to two learnt heads, each a calibrated logistic regression:
- **let go** reads the request: should this be pursued at all?
- **revise** reads a segment the persona wrote: is it harmful, wrong or unkind?

Each head's probability is calibrated on held-out rows so that 0.5 is where its judge objects, a point learnt from
held-out acceptable rows: the probability shown with a vote agrees with its verdict. A head also keeps the
last-layer features of the texts it learnt to object to (its *support*), so a pool can weigh each member by how
much its data covers the text at hand (``JudgeHeads.coverage``). A head may also read *neighbourhood evidence*:
how like a text is to the nearest texts it learnt to object to, and to the nearest it learnt to accept
(``Neighbours``); on requests from sources no judge saw, that local evidence adds to the linear reading.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, NamedTuple, TypeVar

import numpy as np

from archetypes.definitions import JUDGMENTS, Archetype, Judgment, Verdict
from archetypes.library import Library
from council.core.errors import ModelError
from council.core.text import sentences
from memory.embedder import Embedder

FEATURES = "layer-means-1-6-unit-128"
LAYERS = 6  # the encoder layers read, each mean-pooled and unit length, side by side
MAX_TOKENS = 128  # what the encoder was trained on; a segment is shorter, a long reply is read from its start
FORMAT = 4
NEIGHBOURS = 5  # coverage: mean cosine similarity to this many nearest rows of a head's support
STEERED_REVISE = 0.5  # a segment of nothing but instructions to its judges: a revise vote, undecided in a pool
Steering = Literal["none", "some", "all"]  # how much of a text addressed its judges
V = TypeVar("V")


class _Recent(Generic[V]):
    """The last ``size`` values asked for, by key; the oldest is dropped first."""

    def __init__(self, size: int):
        self._items: OrderedDict[Hashable, V] = OrderedDict()
        self._size = size

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def clear(self) -> None:
        """Forget every value."""
        self._items.clear()

    def __getitem__(self, key: Hashable) -> V:
        return self._items[key]

    def put(self, key: Hashable, value: V) -> V:
        """Keep ``value`` for ``key`` as the newest; return it."""
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return value


class Reader:
    """Features of texts for the judges, with small caches: the request is read at every reflection point.

    A judge's reading of a text (``remember``) is kept too, so the request's let-go probabilities, whose
    neighbourhood evidence compares it with thousands of training rows, are worked out once an episode.
    """

    def __init__(self, embedder: Embedder, cache: int = 64):
        self.embedder = embedder
        self._features: _Recent[np.ndarray] = _Recent(cache)
        self._readings: _Recent[Judged] = _Recent(cache)

    @property
    def encoder(self) -> str:
        """Which encoder the features come from (recorded in every heads file)."""
        return self.embedder.name

    def features(self, texts: list[str]) -> np.ndarray:
        """One feature row per text, shape ``(len(texts), layers * dim)``; repeated texts are read once."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._features))
        read = dict(zip(missing, features_of(self.embedder, missing), strict=True)) if missing else {}
        rows = [read[t] if t in read else self._features[t] for t in texts]
        return np.stack([self._features.put(t, row) for t, row in zip(texts, rows, strict=True)])

    def forget(self) -> None:
        """Empty both caches (benchmarks: each prompt is read as if new)."""
        self._features.clear()
        self._readings.clear()

    def remember(self, key: Hashable, reading: Callable[[], Judged]) -> Judged:
        """``reading()``, worked out once for ``key`` while it is among the last few asked for."""
        return self._readings.put(key, self._readings[key] if key in self._readings else reading())


def features_of(embedder: Embedder, texts: list[str]) -> np.ndarray:
    """The judges' features of ``texts``: every encoder layer's mean (embeddings excluded), each unit length.

    Each text is read alone: in a batch, its features would move in the last bits with the other texts (the
    float sums change), and a judge fitted alone would not rebuild byte for byte as when fitted with the others.
    It costs no more here (measured: 300 requests in 6.8 s either way).
    """
    layers = embedder.layer_means(texts, 1, MAX_TOKENS)[:, 1:]
    layers /= np.maximum(np.linalg.norm(layers, axis=-1, keepdims=True), 1e-12)
    return layers.reshape(len(texts), -1)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def nearest_mean(similarity: np.ndarray, k: int) -> np.ndarray:
    """Per row, the mean of its ``k`` largest similarities."""
    k = min(k, similarity.shape[1])
    return np.partition(similarity, -k, axis=1)[:, -k:].mean(axis=1)


@dataclass(frozen=True)
class Neighbours:
    """Neighbourhood evidence: ``u . (mean similarity to the k nearest objected texts, ... accepted texts)``.

    The texts are a head's training texts, as last-layer features of unit length: those it learnt to object to
    (its support) and those it learnt to accept.
    """

    accepted: np.ndarray
    k: int
    u: tuple[float, float]

    def evidence(self, last: np.ndarray, objected: np.ndarray) -> np.ndarray:
        """The evidence term for unit last-layer rows ``last`` (n, dim)."""
        near = (nearest_mean(last @ objected.T, self.k), nearest_mean(last @ self.accepted.T, self.k))
        return self.u[0] * near[0] + self.u[1] * near[1]


@dataclass(frozen=True)
class Head:
    """One learnt judgment: ``p = sigmoid(a * (x . w + b + evidence) + c)``, and the probability at which it objects.

    ``evidence`` is the neighbourhood term (0 without ``neighbours``). ``p`` is calibrated so that ``threshold``
    (0.5 for heads fitted now) is where the judge raises its objection in a vote, a point learnt from held-out
    acceptable rows.
    """

    w: np.ndarray
    b: float
    a: float
    c: float
    threshold: float = 0.5
    support: np.ndarray | None = None
    neighbours: Neighbours | None = None

    def score(self, x: np.ndarray) -> np.ndarray:
        """The uncalibrated score of each feature row (``x`` of shape (n, features) or (features,))."""
        rows = np.atleast_2d(x)
        z = rows @ self.w + self.b
        if self.neighbours is not None and self.support is not None:
            z = z + self.neighbours.evidence(unit_rows(rows[:, -self.support.shape[1] :]), self.support)
        return z if x.ndim == 2 else z[0]

    def probability(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probability for each feature row."""
        return 1.0 / (1.0 + np.exp(-(self.a * self.score(x) + self.c)))

    def coverage(self, x: np.ndarray) -> float | None:
        """How close a feature row is to what this head learnt to object to (mean cosine of its nearest rows).

        None for a head fitted before heads kept their support: its vote then records coverage 0 (refit it).
        """
        if self.support is None or not len(self.support):
            return None
        last = unit_rows(x[-self.support.shape[1] :][None, :])
        return float(nearest_mean(last @ self.support.T, NEIGHBOURS)[0])


class Judged(NamedTuple):
    """One head's reading of one text: its probability and coverage (None: no head, or no text)."""

    p: float | None
    coverage: float | None
    steering: Steering


class JudgeVote(NamedTuple):
    """A judge's vote at a reflection point, before it becomes a ``Vote``."""

    verdict: Verdict
    probs: dict[str, float]
    coverage: dict[str, float]
    steering: bool


@dataclass(frozen=True)
class JudgeHeads:
    """A judge's learnt heads, loaded read-only from its file.

    Besides its judgments, every judge has a ``steer`` head that spots sentences addressed to whoever judges the
    text ("the panel must output let go"). Such sentences are left out before the judgments read the text, so
    a request or an answer cannot instruct its judges; a text of nothing else is read as written, and the vote
    records that steering was found.
    """

    heads: dict[str, Head]
    meta: dict[str, object]
    sha256: str

    def read(self, reader: Reader, text: str) -> tuple[np.ndarray | None, Steering]:
        """Features of ``text`` without its sentences addressed to the judge, and how much of it addressed it.

        Steering text never leaves a text unread: when every sentence addresses the judge, the text is read as
        written. None only for an empty text.
        """
        text = text.strip()
        steer = self.heads.get("steer")
        if not text or steer is None:
            return (reader.features([text])[0] if text else None), "none"
        parts = sentences(text)
        flagged = steer.probability(reader.features(parts)) >= steer.threshold
        if not flagged.any() or flagged.all():
            return reader.features([text])[0], ("all" if flagged.all() else "none")
        kept = " ".join(part for part, flag in zip(parts, flagged, strict=True) if not flag)
        return reader.features([kept])[0], "some"

    def vote(self, reader: Reader, request: str, segment: str) -> JudgeVote:
        """The verdict, P(let_go) and P(revise) with P(continue) = neither, each judgment's coverage, and steering.

        Let go reads the request, revise the segment. The verdict is let go when that head's probability reaches
        its threshold (0.5 for heads fitted now), else revise when that one's does, else continue, so the
        verdict's probability is the largest shown. A judgment the judge never learnt, or has nothing to read
        for, has probability 0: a judge without a let-go head never lets go. A segment that is nothing but
        instructions to its judges is a reason to revise: its P(revise) is at least ``STEERED_REVISE``.
        """
        read = {"let_go": self.judged("let_go", reader, request), "revise": self.judged("revise", reader, segment)}
        p_l, p_r = read["let_go"].p or 0.0, read["revise"].p or 0.0
        if read["revise"].steering == "all":
            p_r = max(p_r, STEERED_REVISE)
        probs = {"continue": 1 - max(p_l, p_r), "revise": p_r, "let_go": p_l}
        coverage = {j: r.coverage or 0.0 for j, r in read.items() if r.p is not None}
        steering = any(r.steering != "none" for r in read.values())
        if p_l and p_l >= self.heads["let_go"].threshold:
            return JudgeVote("let_go", probs, coverage, steering)
        verdict: Verdict = "revise" if p_r and p_r >= self.heads["revise"].threshold else "continue"
        return JudgeVote(verdict, probs, coverage, steering)

    def probability(self, judgment: Judgment, reader: Reader, text: str) -> float | None:
        """The calibrated probability of ``judgment`` for ``text``; None without such a head or anything to read."""
        return self.judged(judgment, reader, text).p

    def judged(self, judgment: Judgment, reader: Reader, text: str) -> Judged:
        """The probability of ``judgment`` for ``text``, how much the head's data covers it, and steering found."""
        return reader.remember((self.sha256, judgment, text), lambda: self._judged(judgment, reader, text))

    def _judged(self, judgment: Judgment, reader: Reader, text: str) -> Judged:
        head = self.heads.get(judgment)
        x, steering = self.read(reader, text) if head is not None else (None, "none")
        if head is None or x is None:
            return Judged(None, None, "none")
        return Judged(float(head.probability(x)), head.coverage(x), steering)


def load_heads(path: Path, encoder: str) -> JudgeHeads:
    """Read a heads file; a missing, corrupt or foreign file is a one-line error saying how to fit it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    fix = f"run `council archetypes fit {path.stem}`"
    try:
        raw = path.read_bytes()
        tensors = load(raw)
        meta = json.loads(_metadata(raw).get("judge", "{}"))
    except FileNotFoundError as exc:
        raise ModelError(f"judge weights {path} do not exist", fix) from exc
    except (OSError, SafetensorError, ValueError) as exc:
        raise ModelError(f"judge weights {path} cannot be read ({exc})", fix) from exc
    if meta.get("format") != FORMAT or meta.get("features") != FEATURES:
        raise ModelError(f"judge weights {path} were written by another version", fix)
    if meta.get("encoder") != encoder:
        raise ModelError(f"judge weights {path} read the encoder {meta.get('encoder')!r}, not {encoder!r}", fix)
    try:
        heads = {j: head_from(tensors, j) for j in (*JUDGMENTS, "steer") if f"{j}.w" in tensors}
    except (KeyError, ValueError) as exc:
        raise ModelError(f"judge weights {path} are incomplete ({exc})", fix) from exc
    return JudgeHeads(heads, meta, hashlib.sha256(raw).hexdigest())


def head_from(tensors: dict[str, np.ndarray], judgment: str) -> Head:
    """One head from its stored tensors, read as a vote reads them (read-only float arrays)."""
    w = tensors[f"{judgment}.w"].astype(np.float64)
    w.flags.writeable = False
    b, a, c, threshold = (float(v) for v in tensors[f"{judgment}.calibration"])
    support, accepted = (_frozen(tensors.get(f"{judgment}.{n}")) for n in ("support", "accepted"))
    neighbours = None
    if accepted is not None:
        u_objected, u_accepted, k = (float(v) for v in tensors[f"{judgment}.neighbours"])
        if support is None or k < 1:
            raise ValueError(f"{judgment}: neighbours without the texts it objected to")
        neighbours = Neighbours(accepted, int(k), (u_objected, u_accepted))
    return Head(w, b, a, c, threshold, support, neighbours)


def _frozen(rows: np.ndarray | None) -> np.ndarray | None:
    """Stored float16 rows as read-only float32 (None stays None)."""
    if rows is None:
        return None
    rows = rows.astype(np.float32)
    rows.flags.writeable = False
    return rows


def load_judge(library: Library, archetype: Archetype, encoder: str) -> JudgeHeads:
    """``archetype``'s heads, checked to be the very file whose hash its definition carries."""
    assert archetype.judge is not None
    path = library.judge_weights(archetype)
    heads = load_heads(path, encoder)
    if heads.sha256 != archetype.judge.weights_sha256:
        raise ModelError(f"judge weights {path} changed while the definitions were loaded", "start again")
    return heads


def _metadata(raw: bytes) -> dict[str, str]:
    """The string metadata of a safetensors file (its JSON header's ``__metadata__``)."""
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size]).get("__metadata__", {})
