import json
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from chromadb.api.shared_system_client import SharedSystemClient

from council.core.episode import Decision, Episode, Recollection, ReflectionPoint, Vote
from council.core.errors import DefinitionError, ModelError, StorageError
from council.core.settings import load_settings
from council.store.database import Database
from council.store.episodes import EpisodeLog
from memory.digest import digest
from memory.embedder import Embedder, resolve_embedder
from memory.vector import TOPICAL, VectorMemory, documents_for, passages

DATA = Path(__file__).parent / "data"
PARAPHRASES = [json.loads(line) for line in (DATA / "paraphrases.jsonl").open()]
LONG_ANSWERS = {row["prompt"]: row for row in map(json.loads, (DATA / "paraphrases_long_answers.jsonl").open())}
OFF_TOPIC = ["What is the boiling point of water on Everest?", "Who wrote War and Peace?", "How do I knit a scarf?"]
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def embedder():
    return Embedder()


@pytest.fixture
def no_network(monkeypatch):
    """Fail, and record, any attempt to open an internet socket."""
    attempts = []
    real_connect = socket.socket.connect

    def guarded(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError(f"network blocked in tests: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)
    return attempts


def make_episode(i, prompt, answer, status="finished", points=()):
    return Episode(
        episode_id=f"ep{i:04d}",
        created_at=T0 + timedelta(minutes=i),
        prompt=prompt,
        persona="default",
        pool="default",
        status=status,
        final_text=answer,
        reflection_points=list(points),
    )


def revise_point(index, segment, comment):
    vote = Vote(archetype="empathy", verdict="revise", confidence=0.8, comment=comment)
    decision = Decision(decision="revise", rule="weighted_majority", support=0.8, reason="empathy wants a rewrite")
    return ReflectionPoint(
        index=index, segment_index=0, boundary="sentence", segment=segment, votes=[vote], decision=decision
    )


def open_memory(embedder):
    settings = load_settings()
    return VectorMemory(settings.memory, settings.chroma_dir, embedder)


@pytest.mark.integration
def test_numpy_encoder_matches_sentence_transformers(embedder):
    from sentence_transformers import SentenceTransformer

    texts = ["How often should I water tomatoes?", "The council let go.", "word " * 400]
    reference = SentenceTransformer(str(resolve_embedder("all-minilm-l6-v2")), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    ours = embedder.embed(texts)
    assert ours.shape == (3, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    assert float(ours[0] @ ours[1]) < 0.5  # unrelated texts are not collapsed together


def test_an_embedding_model_directory_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="model.safetensors"):
        Embedder(str(tmp_path))


def test_paraphrase_recall_at_3_is_at_least_0_9(embedder, no_network):
    memory = open_memory(embedder)
    for i, row in enumerate(PARAPHRASES):
        memory.remember(make_episode(i, row["prompt"], row["answer"]))
    assert memory.stats()["episodes"] == len(PARAPHRASES) >= 20
    hits = [
        f"ep{i:04d}" in [h.episode_id for h in memory.search(row["query"], k=3)] for i, row in enumerate(PARAPHRASES)
    ]
    recall_at_3 = sum(hits) / len(hits)
    assert recall_at_3 >= 0.9, f"recall@3 = {recall_at_3:.2f}"
    assert no_network == []


@pytest.mark.integration
def test_recall_by_paraphrase_holds_for_long_rambling_answers(embedder):
    """Answers the real persona wrote at a 400-token budget (mean 235 words) dilute nothing recall ranks by."""
    memory, settings = open_memory(embedder), load_settings().memory
    for i, row in enumerate(PARAPHRASES):
        long = LONG_ANSWERS[row["prompt"]]
        memory.remember(make_episode(i, row["prompt"], long["answer"], status=long["status"]))
    assert memory.stats()["passages"] >= 4 * len(PARAPHRASES)

    def recalled(query):
        return [h.episode_id for h in memory.search(query, settings.top_k, settings.min_score, TOPICAL)]

    found = [recalled(row["query"]) for row in PARAPHRASES]
    recall_at_3 = sum(f"ep{i:04d}" in ids for i, ids in enumerate(found)) / len(found)
    assert recall_at_3 >= 0.9, f"recall@3 = {recall_at_3:.2f}"
    assert [ids for i, ids in enumerate(found) if set(ids) - {f"ep{i:04d}"}] == []  # nothing unrelated
    assert [recalled(query) for query in OFF_TOPIC] == [[]] * len(OFF_TOPIC)
    ranked_by_everything = [h.episode_id for h in memory.search(OFF_TOPIC[0], settings.top_k, -1.0)]
    assert len(ranked_by_everything) == settings.top_k  # the cut, not an empty store, kept them out


def test_documents_keep_episodes_and_non_continue_reflections_only():
    point = revise_point(0, "You are lazy.", "Say it without blame.")
    continued = point.model_copy(
        update={"index": 1, "decision": point.decision.model_copy(update={"decision": "continue"})}
    )
    docs = documents_for(make_episode(1, "Tell my friend off.", "Let us talk.", points=[point, continued]))
    assert [(d.id, d.kind) for d in docs] == [
        ("ep0001", "episode"),
        ("ep0001:ask", "request"),
        ("ep0001:a0", "answer"),
        ("ep0001:rp0", "reflection"),
    ]
    assert "Tell my friend off." in docs[0].text and "Let us talk." in docs[0].text
    assert docs[1].text == "Tell my friend off." and docs[2].text == "Let us talk."
    assert "You are lazy." in docs[3].text and "Say it without blame." in docs[3].text
    assert "Outcome: the council let go" in documents_for(make_episode(4, "x", "y", status="let_go"))[0].text
    assert "Outcome: stopped at its token budget" in documents_for(make_episode(5, "x", "y", status="budget"))[0].text
    assert documents_for(make_episode(2, "x", "y", status="running")) == []
    assert documents_for(make_episode(3, "x", "y", status="failed")) == []


def test_an_answer_is_embedded_in_passages_of_whole_sentences():
    sentence = "Water the tomatoes deeply in the early morning before the heat of the day sets in."
    parts = passages(" ".join([sentence] * 9), words=40)
    assert all(part.endswith(".") and part.count(sentence) == len(part.split(".")) - 1 for part in parts)
    assert [part.count(sentence) for part in parts] == [2, 2, 2, 2, 1]
    assert passages("One long sentence " + "word " * 80 + "ends here.", words=40) == [
        "One long sentence " + "word " * 80 + "ends here."
    ]
    assert passages("") == []


def test_a_search_returns_each_episode_once_and_shows_its_exchange(embedder):
    memory = open_memory(embedder)
    answer = " ".join(f"Tomatoes need deep watering, tip {i}." for i in range(30))
    memory.remember(make_episode(1, "How do I water tomato plants?", answer))
    memory.remember(make_episode(2, PARAPHRASES[3]["prompt"], PARAPHRASES[3]["answer"]))
    hits = memory.search("watering tomatoes", k=3)
    assert [h.episode_id for h in hits] == ["ep0001", "ep0002"]
    assert hits[0].text.startswith("Asked: How do I water tomato plants?\nAnswered: Tomatoes need deep watering")
    assert hits[0].kind in ("request", "answer", "episode") and hits[0].score > hits[1].score


def test_rebuild_from_the_log_reproduces_ids_counts_and_results(embedder, no_network):
    settings = load_settings()
    log = EpisodeLog(Database(settings.db_url))
    memory = open_memory(embedder)
    for i, row in enumerate(PARAPHRASES[:8]):
        points = [revise_point(0, row["answer"], "Be warmer.")] if i % 3 == 0 else []
        episode = make_episode(i, row["prompt"], row["answer"], points=points)
        log.save(episode)
        memory.remember(episode)
    log.save(make_episode(99, "unfinished", "", status="running"))
    before_ids, before_stats = memory.ids(), memory.stats()
    query = PARAPHRASES[4]["query"]
    before = [(h.memory_id, h.score) for h in memory.search(query, k=5)]
    assert before_stats == {"items": 27, "episodes": 8, "passages": 8, "reflections": 3, "commentaries": 0}

    shutil.rmtree(settings.chroma_dir)
    SharedSystemClient.clear_system_cache()  # as a new process would see it
    rebuilt = open_memory(embedder)
    assert rebuilt.count() == 0
    assert rebuilt.rebuild_from(log) == 27
    assert rebuilt.ids() == before_ids and rebuilt.stats() == before_stats
    after = [(h.memory_id, h.score) for h in rebuilt.search(query, k=5)]
    assert [m for m, _ in after] == [m for m, _ in before]
    assert [s for _, s in after] == pytest.approx([s for _, s in before], abs=1e-3)
    assert no_network == []


def test_adding_an_episode_twice_keeps_one_copy(embedder):
    memory = open_memory(embedder)
    episode = make_episode(1, PARAPHRASES[0]["prompt"], PARAPHRASES[0]["answer"])
    memory.remember(episode)
    once = memory.ids()
    memory.remember(episode)
    assert memory.ids() == once and memory.count() == len(once) == 3


def test_search_drops_memories_below_min_score(embedder):
    memory = open_memory(embedder)
    memory.remember(make_episode(1, PARAPHRASES[0]["prompt"], PARAPHRASES[0]["answer"]))
    assert memory.search("tomato watering in hot weather", k=3, min_score=0.35)
    assert memory.search("quantum chromodynamics lattice gauge theory", k=3, min_score=0.35) == []


def test_digest_respects_the_token_budget_and_keeps_the_best_first():
    def words(text):
        return len(text.split())

    hits = [
        Recollection(
            memory_id=f"m{i}", episode_id=f"e{i}", kind="episode", score=1 - i / 10, text=("w " * 50) + f"#{i}"
        )
        for i in range(4)
    ]
    text, kept = digest(hits, words, budget=80)
    assert words(text) <= 80
    assert kept and kept[0].memory_id == "m0"
    assert len(kept) < 4
    full, all_kept = digest(hits, words, budget=1000)
    assert len(all_kept) == 4 and full.count("\n") == 3 and "#3" in full
    nothing, none_kept = digest(hits, words, budget=2)
    assert (nothing, none_kept) == ("", [])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def chroma_server(tmp_path):
    """A real Chroma server on loopback, as `memory.url` would name it."""
    port = free_port()
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "chroma"),
            "run",
            "--path",
            str(tmp_path / "server"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.mark.integration
def test_a_chroma_server_named_by_memory_url_holds_the_memory(embedder, chroma_server, council_home):
    settings = load_settings(memory={"url": chroma_server})
    memory = VectorMemory(settings.memory, settings.chroma_dir, embedder)
    memory.remember(make_episode(1, PARAPHRASES[0]["prompt"], PARAPHRASES[0]["answer"]))
    assert [h.episode_id for h in memory.search(PARAPHRASES[0]["query"], k=1)] == ["ep0001"]
    assert memory.location == chroma_server
    assert not settings.chroma_dir.exists()  # nothing embedded was written


def test_an_unreachable_chroma_server_is_one_clear_error(embedder):
    settings = load_settings(memory={"url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(StorageError, match="vector memory at http://127.0.0.1"):
        VectorMemory(settings.memory, settings.chroma_dir, embedder)


def test_a_memory_url_that_is_not_http_is_a_definition_error(embedder):
    settings = load_settings(memory={"url": "chroma.example:8000"})
    with pytest.raises(DefinitionError, match="memory.url"):
        VectorMemory(settings.memory, settings.chroma_dir, embedder)


def test_a_rebuild_by_another_process_does_not_break_a_running_writer(embedder):
    daemon, night = open_memory(embedder), open_memory(embedder)  # two holders of one store, as two processes
    daemon.remember(make_episode(1, PARAPHRASES[0]["prompt"], PARAPHRASES[0]["answer"]))
    night.rebuild([])
    daemon.remember(make_episode(2, PARAPHRASES[1]["prompt"], PARAPHRASES[1]["answer"]))
    assert night.ids() == {"ep0002", "ep0002:ask", "ep0002:a0"} == daemon.ids()


def test_a_rebuild_that_cannot_read_the_log_leaves_memory_as_it_was(embedder):
    memory = open_memory(embedder)
    for i in range(3):
        memory.remember(make_episode(i, PARAPHRASES[i]["prompt"], PARAPHRASES[i]["answer"]))
    before = memory.ids()

    def damaged_log():
        yield make_episode(7, PARAPHRASES[7]["prompt"], PARAPHRASES[7]["answer"]), {}
        raise StorageError("cannot read the episode log (database disk image is malformed)", "restore it")

    with pytest.raises(StorageError, match="malformed"):
        memory.rebuild(damaged_log())
    assert memory.ids() == before and open_memory(embedder).ids() == before
    assert memory.rebuild([(make_episode(5, "x", "y"), {})]) == 3  # a later rebuild still works, beside nothing
    assert open_memory(embedder).ids() == {"ep0005", "ep0005:ask", "ep0005:a0"}


def test_rebuild_starts_from_nothing_when_the_store_is_damaged_and_keeps_the_damaged_folder(embedder, capsys):
    from council.cli import main

    settings = load_settings()
    log, memory = EpisodeLog(Database(settings.db_url)), open_memory(embedder)
    for i in range(2):
        episode = make_episode(i, PARAPHRASES[i]["prompt"], PARAPHRASES[i]["answer"])
        log.save(episode)
        memory.remember(episode)
    SharedSystemClient.clear_system_cache()
    (settings.chroma_dir / "chroma.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(StorageError):
        open_memory(embedder).count()
    assert main(["memory", "rebuild", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["written"] == 6 and result["episodes"] == 2  # each: exchange, request, one passage
    aside = Path(result["damaged_store_moved_to"])
    assert aside.parent == settings.chroma_dir.parent and (aside / "chroma.sqlite3").read_bytes().startswith(b"not a")
    SharedSystemClient.clear_system_cache()
    assert {i.split(":")[0] for i in open_memory(embedder).ids()} == {"ep0000", "ep0001"}


def test_remembered_vectors_are_the_encoder_s_own_in_the_caller_s_order(embedder):
    texts = ["the sky is blue at noon", "water the tomatoes twice a week", "the sky is blue at noon"]
    fresh = embedder.embed(texts, cache=False)
    first, again = embedder.embed(texts), embedder.embed(texts[::-1])
    assert np.allclose(first, fresh, atol=1e-5) and np.allclose(again, fresh[::-1], atol=1e-5)
    assert not np.allclose(first[0], first[1], atol=1e-2) and embedder.embed([]).shape == (0, embedder.dim)
