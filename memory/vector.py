"""Vector memory: finished episodes and the council's reflections on them, embedded offline, kept in chromadb.

An episode is kept as several items that point to it, so that a long or rambling answer cannot dilute what it
was about: the exchange (``<episode>``, the text recall shows), the request alone (``<episode>:ask``), each
passage of the answer (``<episode>:a<n>``), each reflection point where the council did not simply continue
(``<episode>:rp<n>``) and each pool's night commentary (``<episode>:night:<pool>``). A search merges the hits
per episode. The SQL episode log is the source of truth; ids are derived from it, so a rebuild reproduces them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np
from pydantic import BaseModel

from council.core.episode import ENDED, Episode, MemoryKind, Recollection
from council.core.errors import DefinitionError, StorageError, one_line
from council.core.modelock import with_quotes_marked
from council.core.settings import MemorySettings
from council.core.text import sentences
from memory.embedder import Embedder, shared_embedder

if TYPE_CHECKING:
    from council.store.episodes import EpisodeLog

REMEMBERED = ENDED  # an episode is remembered once it has ended
SHOWN = ("episode", "reflection", "commentary")  # shown as they are; a request or passage shows its exchange
TOPICAL: tuple[MemoryKind, ...] = ("request", "reflection", "commentary")  # what recall ranks by: what was asked
PASSAGE_WORDS = 50  # an answer is embedded in passages of whole sentences, about this many words each
SEARCH_FANOUT = 8  # items fetched per episode asked for, before merging per episode
OUTCOMES = {"finished": "finished", "let_go": "the council let go", "budget": "stopped at its token budget"}


class MemoryDoc(BaseModel):
    """One item of memory, as embedded and stored."""

    id: str
    episode_id: str
    kind: MemoryKind
    text: str
    created_at: str
    pool: str
    persona: str


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _base(episode: Episode) -> dict[str, str]:
    return {
        "episode_id": episode.episode_id,
        "created_at": episode.created_at.isoformat(),
        "pool": episode.pool,
        "persona": episode.persona,
    }


def commentary_doc(episode: Episode, pool: str, commentary: Mapping[str, str]) -> MemoryDoc:
    """What a pool's council said about ``episode`` at night."""
    said = "; ".join(f"{name}: {_clip(text, 300)}" for name, text in commentary.items())
    return MemoryDoc(
        id=f"{episode.episode_id}:night:{pool}",
        kind="commentary",
        text=f"Asked: {_clip(episode.prompt, 200)}\nAt night the {pool} council said: {said}",
        **_base(episode),
    )


def passages(text: str, words: int = PASSAGE_WORDS) -> list[str]:
    """``text`` as runs of whole sentences of about ``words`` words each (a longer sentence stands alone)."""
    runs: list[list[str]] = [[]]
    for sentence in sentences(text):
        if runs[-1] and len(" ".join(runs[-1] + [sentence]).split()) > words:
            runs.append([])
        runs[-1].append(sentence)
    return [" ".join(run) for run in runs if run]


def documents_for(episode: Episode, commentaries: Mapping[str, Mapping[str, str]] | None = None) -> list[MemoryDoc]:
    """What ``episode`` leaves in memory.

    The exchange itself, the request alone, each passage of the answer, every pause where the council did not
    simply continue, and the night's commentary of each pool that slept on it (``commentaries``: pool ->
    archetype -> text).
    """
    if episode.status not in REMEMBERED:
        return []
    base = _base(episode)
    outcome = OUTCOMES[episode.status]
    answer = with_quotes_marked(episode.final_text)
    docs = [
        MemoryDoc(
            id=episode.episode_id,
            kind="episode",
            text=f"Asked: {episode.prompt}\nAnswered: {answer}\nOutcome: {outcome}",
            **base,
        ),
        MemoryDoc(id=f"{episode.episode_id}:ask", kind="request", text=episode.prompt, **base),
    ]
    docs += [
        MemoryDoc(id=f"{episode.episode_id}:a{n}", kind="answer", text=passage, **base)
        for n, passage in enumerate(passages(answer))
    ]
    for rp in episode.reflection_points:
        if rp.decision.decision == "continue":
            continue
        comments = "; ".join(f"{v.archetype}: {v.comment}" for v in rp.votes if v.comment)
        text = (
            f"Asked: {_clip(episode.prompt, 200)}\nOn «{_clip(rp.segment, 200)}» the council decided "
            f"{rp.decision.decision} ({rp.decision.reason})." + (f"\nComments: {comments}" if comments else "")
        )
        docs.append(MemoryDoc(id=f"{episode.episode_id}:rp{rp.index}", kind="reflection", text=text, **base))
    docs += [commentary_doc(episode, pool, said) for pool, said in (commentaries or {}).items() if said]
    return docs


class VectorMemory:
    """Episodes and reflections in a chromadb collection, with embeddings computed locally."""

    def __init__(self, settings: MemorySettings, chroma_dir: Path, embedder: Embedder | None = None):
        self.settings = settings
        self.location = settings.url or str(chroma_dir)
        self._embedder = embedder
        self._client = _client(settings.url, chroma_dir)
        self._collection = self._open()

    @property
    def embedder(self) -> Embedder:
        """The embedding model, loaded on first use."""
        if self._embedder is None:
            self._embedder = shared_embedder(self.settings.embedder)
        return self._embedder

    def _open(self, name: str | None = None) -> Any:  # noqa: ANN401 - chromadb.Collection
        return self._do(
            "open",
            self._client.get_or_create_collection,
            name or self.settings.collection,
            embedding_function=None,
            configuration={"hnsw": {"space": "cosine"}},
            metadata={"embedder": self.settings.embedder},
        )

    def _drop(self, name: str) -> None:
        if name in {c.name for c in self._do("read", self._client.list_collections)}:
            self._do("reset", self._client.delete_collection, name)

    def _error(self, action: str, exc: Exception) -> StorageError:
        return StorageError(f"cannot {action} vector memory at {self.location} ({one_line(exc)})", _fix(exc))

    def _do(self, action: str, fn: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401 - chromadb values
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise self._error(action, exc) from exc

    def _collection_do(self, action: str, call: Callable[[Any], Any]) -> Any:  # noqa: ANN401 - chromadb values
        """Call ``call`` on the collection; if another process rebuilt the store meanwhile, re-open it and retry."""
        try:
            return call(self._collection)
        except Exception as exc:
            if "does not exist" not in str(exc):
                raise self._error(action, exc) from exc
        self._collection = self._open()
        return self._do(action, call, self._collection)

    def add(self, docs: list[MemoryDoc]) -> int:
        """Embed and upsert ``docs``; the same ids overwrite, so adding twice changes nothing."""
        for i in range(0, len(docs), 256):
            batch = docs[i : i + 256]
            self.add_vectors(batch, self.embedder.embed([d.text for d in batch]))
        return len(docs)

    def add_vectors(self, docs: list[MemoryDoc], vectors: np.ndarray) -> None:
        """Upsert ``docs`` with embeddings computed elsewhere (one row of ``vectors`` each)."""
        step = self._client.get_max_batch_size()
        for i in range(0, len(docs), step):
            batch = docs[i : i + step]
            self._collection_do("write to", partial(_upsert, docs=batch, vectors=vectors[i : i + step]))

    def remember(self, episode: Episode) -> int:
        """Store what ``episode`` leaves in memory; returns the number of items."""
        return self.add(documents_for(episode))

    def search(
        self, query: str, k: int, min_score: float = -1.0, kinds: tuple[MemoryKind, ...] | None = None
    ) -> list[Recollection]:
        """The ``k`` past episodes most similar to ``query``, best first, scoring at least ``min_score``.

        An episode scores the cosine similarity of its best-matching item among ``kinds`` (default: every kind).
        Recall passes ``TOPICAL``: a rambling answer then cannot make an episode look related, or unrelated.
        """
        return self.search_vector(self.embedder.embed([query])[0], k, min_score, kinds)

    def search_vector(
        self, vector: np.ndarray, k: int, min_score: float = -1.0, kinds: tuple[MemoryKind, ...] | None = None
    ) -> list[Recollection]:
        """Like ``search``, for a query already embedded."""
        count = self.count()
        if count == 0:
            return []
        found = self._collection_do(
            "search",
            lambda c: c.query(
                query_embeddings=vector[None, :],
                n_results=min(count, k * SEARCH_FANOUT),
                where={"kind": {"$in": list(kinds)}} if kinds else None,
                include=["documents", "metadatas", "distances"],
            ),
        )
        best: dict[str, Recollection] = {}  # per episode, its best item (results come best first)
        for memory_id, document, meta, distance in zip(
            found["ids"][0], found["documents"][0], found["metadatas"][0], found["distances"][0], strict=True
        ):
            score = round(1.0 - float(distance), 4)
            episode_id = str(meta["episode_id"])
            if score >= min_score and episode_id not in best:
                hit = Recollection(memory_id=memory_id, episode_id=episode_id, kind=meta["kind"], score=score, text="")
                best[episode_id] = hit.model_copy(update={"text": document}) if hit.kind in SHOWN else hit
            if len(best) == k:
                break
        return self._shown(list(best.values()))

    def _shown(self, hits: list[Recollection]) -> list[Recollection]:
        """``hits`` with the exchange as the text of those that matched by their request or a passage."""
        wanted = [h.episode_id for h in hits if not h.text]
        if not wanted:
            return hits
        found = self._collection_do("read", lambda c: c.get(ids=wanted, include=["documents"]))
        exchange = dict(zip(found["ids"], found["documents"], strict=True))
        return [h if h.text else h.model_copy(update={"text": exchange.get(h.episode_id, "")}) for h in hits]

    def count(self) -> int:
        """Items stored."""
        return int(self._collection_do("read", lambda c: c.count()))

    def stats(self) -> dict[str, int]:
        """Items per kind, and the number of distinct episodes."""
        metas = self._collection_do("read", lambda c: c.get(include=["metadatas"]))["metadatas"]
        kinds = [str(m["kind"]) for m in metas]
        return {
            "items": len(metas),
            "episodes": kinds.count("episode"),
            "passages": kinds.count("answer"),
            "reflections": kinds.count("reflection"),
            "commentaries": kinds.count("commentary"),
        }

    def ids(self) -> set[str]:
        """Every stored id."""
        return set(self._collection_do("read", lambda c: c.get(include=[]))["ids"])

    def rebuild(self, episodes: Iterable[tuple[Episode, Mapping[str, Mapping[str, str]]]]) -> int:
        """Store ``episodes`` (each with its night commentaries) anew; returns the count.

        Every episode is read before anything is written, and the new collection is built beside the old one and
        swapped in only when complete, so a log that cannot be read or a failed embedding leaves memory as it was.
        """
        docs = [doc for episode, commentaries in episodes for doc in documents_for(episode, commentaries)]
        name, staging = self.settings.collection, f"{self.settings.collection}-rebuild"
        self._drop(staging)  # what an interrupted rebuild left
        self._collection = self._open(staging)
        total = self.add(docs)
        self._drop(name)
        self._do("rename", self._collection.modify, name=name)
        return total

    def rebuild_from(self, log: EpisodeLog) -> int:
        """Re-create the store from the episode log, the source of truth."""
        return self.rebuild(remembered(log))


def remembered(log: EpisodeLog) -> list[tuple[Episode, dict[str, dict[str, str]]]]:
    """Every episode memory keeps, with its night commentaries, read from the log in full."""
    return [(e, log.commentaries(e.episode_id)) for e in log.iterate(statuses=REMEMBERED)]


def open_or_set_aside(settings: MemorySettings, chroma_dir: Path) -> tuple[VectorMemory, Path | None]:
    """The embedded store; if it cannot be opened or read, a new one and where the damaged folder was moved.

    Nothing is deleted. A Chroma server (``memory.url``) is never touched.
    """
    try:
        memory = VectorMemory(settings, chroma_dir)
        memory.count()
        return memory, None
    except StorageError:
        if settings.url or not chroma_dir.exists():
            raise
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient.clear_system_cache()  # forget the damaged store's open client
    aside = chroma_dir.with_name(f"{chroma_dir.name}.broken-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    chroma_dir.rename(aside)
    return VectorMemory(settings, chroma_dir), aside


def _upsert(collection: Any, docs: list[MemoryDoc], vectors: np.ndarray) -> None:  # noqa: ANN401 - chromadb's
    collection.upsert(
        ids=[d.id for d in docs],
        embeddings=vectors,
        documents=[d.text for d in docs],
        metadatas=[d.model_dump(exclude={"id", "text"}) for d in docs],
    )


def _client(url: str | None, chroma_dir: Path) -> Any:  # noqa: ANN401 - chromadb.ClientAPI
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if url:
        parsed = urlparse(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise DefinitionError(f"memory.url {url!r} is not an http(s) URL", "write it as http://host:port")
    try:
        if url:
            return chromadb.HttpClient(
                host=parsed.hostname or "",
                port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                ssl=parsed.scheme == "https",
                settings=chroma_settings,
            )
        chroma_dir.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(chroma_dir), settings=chroma_settings)
    except Exception as exc:
        where = url or chroma_dir
        raise StorageError(f"cannot open vector memory at {where} ({one_line(exc)})", _fix(exc)) from exc


def _fix(exc: BaseException) -> str:
    text = str(exc).lower()
    if "disk" in text or "no space" in text:
        return "free disk space; the episode log still has everything, then run `council memory rebuild`"
    if "connect" in text:
        return "start the Chroma server named by memory.url, or unset it to use the embedded store"
    return "run `council memory rebuild` to re-create it from the episode log"
