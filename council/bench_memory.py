"""`council bench memory`: recall latency and write throughput of the vector memory, at several sizes.

Each size gets a fresh embedded chromadb in a temporary directory, filled with synthetic vectors: real
embeddings of 512 generated sentences, each repeated with noise, so the store has the topical clusters that
real memories have (embedding 100k texts would take longer than the store itself; uniformly random vectors
have no neighbours worth the name and make any approximate index look broken). Queries are real sentences embedded
by the real model, so a recall is measured end to end: embed the prompt, then search. The baseline in the
same run is an exact NumPy search over the same vectors; its top 3 also give the approximate index's recall.
Write throughput is measured twice: the store alone (vectors given), and whole episodes (embedding included).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from council.core.settings import MemorySettings
from memory.embedder import Embedder
from memory.vector import MemoryDoc, VectorMemory

_WORDS = (
    "garden water tomato friend sorry plan interview sleep dog neighbour python list tuple bread wedding speech "
    "money grocery tap leak vaccine immune hike mountain thesis meditate child grief bicycle cat raise run plastic "
    "season nurse letter kind calm honest council revise continue let go answer question help learn"
).split()


def _sentences(n: int, rng: np.random.Generator, length: int = 14) -> list[str]:
    return [" ".join(rng.choice(_WORDS, size=length)) + "?" for _ in range(n)]


def _doc(i: int, text: str) -> MemoryDoc:
    return MemoryDoc(
        id=f"m{i}",
        episode_id=f"e{i}",
        kind="episode",
        text=text,
        created_at="2026-11-26T00:00:00+00:00",
        pool="default",
        persona="default",
    )


def _ms(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 3)


class MemoryBench:
    """Fill, query and time the vector memory; ``run`` returns one flat dict of figures."""

    def __init__(self, embedder: Embedder, sizes: tuple[int, ...] = (10_000, 100_000), queries: int = 100):
        self.embedder = embedder
        self.sizes = sizes
        self.queries = queries
        self.rng = np.random.default_rng(0)
        self._topics: np.ndarray | None = None

    def _synthetic(self, size: int, topics: int = 512, noise: float = 0.6) -> np.ndarray:
        if self._topics is None:
            self._topics = self.embedder.embed(_sentences(topics, self.rng))
        centres = self._topics[self.rng.integers(0, len(self._topics), size)]
        jitter = self.rng.standard_normal(centres.shape).astype(np.float32) * noise / np.sqrt(self.embedder.dim)
        vectors = centres + jitter
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def _store(self, root: Path, name: str) -> VectorMemory:
        return VectorMemory(MemorySettings(collection=name), root / name, self.embedder)

    def run(self, progress: Callable[[str], None] = lambda _: None) -> dict[str, float | int | str]:
        """Measure every size, then write throughput; figures are per size, with ratios between them."""
        report: dict[str, float | int | str] = {"embedder": self.embedder.name, "dim": self.embedder.dim}
        texts = _sentences(self.queries, self.rng)
        with tempfile.TemporaryDirectory(prefix="council-bench-memory-") as tmp:
            root = Path(tmp)
            for size in self.sizes:
                report |= self._size(root, size, texts, progress)
            progress("Writing whole episodes (embedding included)…")
            report |= self._writes(root)
        if len(self.sizes) > 1:
            small, large = self.sizes[0], self.sizes[-1]
            report[f"recall_p50_ratio_{large}_vs_{small}"] = round(
                float(report[f"recall_p50_ms_{large}"]) / float(report[f"recall_p50_ms_{small}"]), 3
            )
        return report

    def _size(
        self, root: Path, size: int, texts: list[str], progress: Callable[[str], None]
    ) -> dict[str, float | int | str]:
        store = self._store(root, f"bench-{size}")
        vectors = self._synthetic(size)
        progress(f"Storing {size:,} synthetic memories…")
        start = time.perf_counter()
        store.add_vectors([_doc(i, f"synthetic memory {i}") for i in range(size)], vectors)
        insert_s = time.perf_counter() - start

        progress(f"Recalling from {size:,} memories…")
        recall_s, query_s, exact_s, overlap = [], [], [], []
        for text in texts:
            start = time.perf_counter()
            query = self.embedder.embed([text], cache=False)[0]  # time the encoder at every size
            middle = time.perf_counter()
            hits = store.search_vector(query, 3)
            end = time.perf_counter()
            recall_s.append(end - start)
            query_s.append(end - middle)
            start = time.perf_counter()
            exact = np.argpartition(-(vectors @ query), 3)[:3]
            exact_s.append(time.perf_counter() - start)
            overlap.append(len({f"m{i}" for i in exact} & {h.memory_id for h in hits}) / 3)
        return {
            f"insert_per_s_{size}": round(size / insert_s, 1),
            f"recall_p50_ms_{size}": _ms(recall_s, 50),
            f"recall_p95_ms_{size}": _ms(recall_s, 95),
            f"search_only_p50_ms_{size}": _ms(query_s, 50),
            f"exact_numpy_p50_ms_{size}": _ms(exact_s, 50),
            f"search_vs_exact_ratio_{size}": round(float(np.median(query_s)) / float(np.median(exact_s)), 3),
            f"index_recall_at_3_{size}": round(float(np.mean(overlap)), 3),
        }

    def _writes(self, root: Path, n: int = 128) -> dict[str, float]:
        store = self._store(root, "bench-writes")
        docs = [
            _doc(i, "Asked: " + t + "\nAnswered: " + " ".join(_sentences(3, self.rng)))
            for i, t in enumerate(_sentences(n, self.rng))
        ]
        start = time.perf_counter()
        store.add(docs)
        return {"episode_writes_per_s": round(n / (time.perf_counter() - start), 1)}
