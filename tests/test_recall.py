"""The graph's recall node on the fake persona with the real embedder and a real chromadb."""

import pytest

from council.core.errors import DefinitionError, StorageError
from council.engine.prompts import MEMORY_HEADER
from council.engine.runner import run_episode
from council.evaluation.recall import RecallRow, evaluate_recall, load_recall_rows

CONT = {"continue": 0.8, "revise": 0.1, "let_go": 0.1}


def system_prompts(fake):
    return [call.chat.messages[0].content for call in fake.history if call.kind == "generate"]


def test_second_episode_recalls_the_first_and_the_persona_sees_it(fake_setup):
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2})
    fake.enqueue("Water them deeply twice a week.")
    fake.enqueue_scores(*[CONT] * 4)
    first = run_episode(rt, "How often should I water my tomato plants?")
    assert first.recollections == [] and first.recalled == ""

    fake.history.clear()
    fake.enqueue("Mulch helps keep the soil moist.")
    fake.enqueue_scores(*[CONT] * 4)
    second = run_episode(rt, "What is a good watering routine for tomatoes in July?")

    assert [r.episode_id for r in second.recollections] == [first.episode_id]
    assert second.recollections[0].score > 0.5
    assert "Water them deeply twice a week." in second.recalled
    assert all(MEMORY_HEADER in s and second.recalled in s for s in system_prompts(fake))
    assert rt.log.get(second.episode_id).recollections == second.recollections


def test_unrelated_memories_are_not_recalled(fake_setup):
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2})
    fake.enqueue("Water them deeply twice a week.", "Tuples are immutable.")
    fake.enqueue_scores(*[CONT] * 8)
    run_episode(rt, "How often should I water my tomato plants?")
    second = run_episode(rt, "What is the difference between a list and a tuple in Python?")
    assert second.recollections == []


def test_recall_can_be_switched_off_per_run(fake_setup):
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2}, memory={"recall": False})
    fake.enqueue("Water them deeply twice a week.", "Mulch helps.")
    fake.enqueue_scores(*[CONT] * 8)
    run_episode(rt, "How often should I water my tomato plants?")
    fake.history.clear()
    second = run_episode(rt, "What is a good watering routine for tomatoes?")
    assert second.recollections == [] and second.recalled == ""
    assert not any(MEMORY_HEADER in s for s in system_prompts(fake))
    assert rt.memory.stats()["episodes"] == 2  # writes go on with recall off


def test_a_failing_memory_write_loses_no_episode(fake_setup, monkeypatch):
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2})
    fake.enqueue("Water them deeply twice a week.")
    fake.enqueue_scores(*[CONT] * 4)

    def broken(episode):
        raise StorageError("cannot write to vector memory (disk full)", "free disk space")

    monkeypatch.setattr(rt.memory, "remember", broken)
    episode = run_episode(rt, "How often should I water my tomato plants?")
    assert rt.log.get(episode.episode_id).status == "finished"
    assert rt.memory.count() == 0
    monkeypatch.undo()
    assert rt.memory.rebuild_from(rt.log) == 3  # the exchange, the request, one passage


@pytest.mark.parametrize("budget", [16, 40])
def test_the_digest_stays_within_the_persona_token_budget(fake_setup, budget):
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2}, memory={"budget_tokens": budget})
    for i in range(3):
        fake.enqueue(f"Tomatoes like deep watering, answer number {i}, " + "and mulch " * 20 + ".")
    fake.enqueue("Done.")
    fake.enqueue_scores(*[CONT] * 40)
    for _ in range(3):
        run_episode(rt, "How should I water tomatoes?")
    last = run_episode(rt, "Watering tomatoes: how?")
    assert last.recollections
    assert rt.writer.backend.count_tokens(last.recalled) <= budget


def test_the_recall_evaluation_scores_paraphrases_and_off_topic_queries(fake_setup, tmp_path):
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2}, memory={"recall": False})
    rows = [
        RecallRow(id="a", prompt="How often should I water my tomato plants?", query="tomato watering schedule"),
        RecallRow(id="b", prompt="What is a tuple in Python?", query="python tuples explained"),
        RecallRow(id="c", query="Who painted the Sistine Chapel ceiling?"),
    ]
    fake.enqueue("Water them deeply twice a week.", "A tuple is an immutable sequence.")
    fake.enqueue_scores(*[CONT] * 8)
    figures = evaluate_recall(rt, rows)
    assert (figures.episodes, figures.paraphrases, figures.off_topic) == (2, 2, 1)
    assert figures.recall_at_k == 1.0 and figures.unrelated_above_cut == 0
    assert [r.recalled for r in figures.results][2] == []
    assert figures.lowest_target_score >= rt.settings.memory.min_score

    again = evaluate_recall(rt, rows)  # the episodes are reused, not answered again
    assert rt.log.count() == 2 and again.recall_at_k == 1.0
    assert [r.target for r in again.results] == [r.target for r in figures.results]


def test_a_recall_row_without_a_query_is_one_error_naming_the_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": "a", "prompt": "p", "query": "q"}\n{"id": "b", "prompt": "p"}\n')
    with pytest.raises(DefinitionError, match=r"rows.jsonl:2: not a valid recall row"):
        load_recall_rows(path)


def test_the_recall_evaluation_runs_in_a_store_of_its_own(council_home, tmp_path):
    from council.core.settings import load_settings
    from council.evaluation.recall import recall_runtime
    from tests.conftest import write_yaml

    write_yaml(council_home, "personas", "default", "character: test\nmodel: fake\n")
    own = tmp_path / "own"
    with recall_runtime(load_settings(), own) as rt:
        assert rt.settings.home == own and str(own) in rt.settings.db_url
        assert not rt.settings.memory.recall and rt.settings.memory.url is None
    with recall_runtime(load_settings()) as rt:
        scratch = rt.settings.home
        assert scratch.is_dir() and not scratch.is_relative_to(council_home)
    assert not scratch.exists()
