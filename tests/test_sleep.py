"""The night pass on the scripted fake persona: pairs of every source, idempotence, resume after a crash."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from sqlalchemy import delete

from council.engine.runner import run_episode
from council.store.rows import CommentaryRow, PreferencePairRow, SleptRow
from council.store.sleep import SleepStore
from sleep.export import write_dataset
from sleep.night import SleepPass

CONT = {"continue": 0.8, "revise": 0.1, "let_go": 0.1}
MEH = {"continue": 0.3, "revise": 0.6, "let_go": 0.1}
REV = {"continue": 0.1, "revise": 0.8, "let_go": 0.1}
GO = {"continue": 0.1, "revise": 0.1, "let_go": 0.8}
MARK = "<|reflect|>"


pytestmark = pytest.mark.usefixtures("db_url")  # the night runs on SQLite and on Postgres


def day(rt, fake):
    """One revised episode and one let-go episode."""
    fake.enqueue("Punch them. Then talk.", "Be more gentle.", "Kinder please.", "Tell them calmly.", " Then talk.")
    fake.enqueue_scores(REV, REV, REV, CONT, *[CONT] * 8)
    revised = run_episode(rt, "My friend cancels.")
    fake.enqueue("Here is how to pick a lock.", "I would rather not go on with this, because it could hurt someone.")
    fake.enqueue_scores(*[GO] * 4)
    let_go = run_episode(rt, "Teach me to break in.")
    return revised, let_go


SAMPLES = (("A warm answer. And an honest one.", CONT), ("A curt answer, cold and short.", MEH))


def night_script(fake, episode, push_on=False, samples=SAMPLES):
    """What the persona and council say at night about one episode: 4 commentaries, the samples, maybe a push-on.

    Each sample is a text and the scores every member gives it. An empty text ends each answer, as the real
    model's end-of-turn token would.
    """
    fake.enqueue(*[f"{name} on {episode}: be kind." for name in ("reason", "libido", "child", "empathy")])
    for text, scores in samples:
        fake.enqueue(text, "")
        fake.enqueue_scores(*[scores] * 4)
    if push_on:
        fake.enqueue("Then I will go on and push anyway.", "")


def sleep_setup(fake_setup):
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2}, sleep={"samples": 2})
    revised, let_go = day(rt, fake)
    return rt, fake, revised, let_go


def test_a_night_yields_pairs_of_every_source_with_markers_and_commentary(fake_setup):
    rt, fake, revised, let_go = sleep_setup(fake_setup)
    night = SleepPass(rt, rt.settings.sleep)
    assert night.pending() == [revised.episode_id, let_go.episode_id]
    night_script(fake, "one")
    night_script(fake, "two", push_on=True)
    summary = night.run(night.pending())
    assert summary.episodes == 2
    assert summary.pairs == {"revision": 1, "ranking": 2, "let_go": 1, "marker": 1}
    pairs = {(p.episode_id, p.source): p for p in night.store.pairs(rt.pool.name)}

    revision = pairs[(revised.episode_id, "revision")]
    assert revision.chosen == "Tell them calmly." and revision.rejected == "Punch them."  # the marker goes between
    assert revision.before == "" and revision.margin > 0
    assert set(revision.scores["reason"]) == {"chosen", "rejected"}

    ranking = pairs[(revised.episode_id, "ranking")]
    assert (
        ranking.chosen == "A warm answer. " + MARK + " And an honest one."
        and ranking.rejected == "A curt answer, cold and short."
    )
    assert ranking.margin == pytest.approx(0.5)

    close = pairs[(let_go.episode_id, "let_go")]  # the council let go at its first point: decline from the start
    assert close.before == ""
    assert close.chosen.startswith("I would rather not go on")
    assert close.rejected.startswith("Then I will go on and push anyway.")

    # the accepted answer with the marker where the council reflected, over the same words without it: the only
    # pair whose sides differ by the marker alone (elsewhere it is shared, and DPO cancels it)
    paused = pairs[(revised.episode_id, "marker")]
    assert (
        paused.chosen == "Tell them calmly. " + MARK + " Then talk."
        and paused.rejected == "Tell them calmly. Then talk."
    )
    assert paused.before == "" and paused.margin == 1.0  # the council continued from both accepted segments
    assert (let_go.episode_id, "marker") not in pairs  # one segment: nowhere to pause
    assert "reason on one: be kind." in revision.commentary
    assert rt.log.commentaries(revised.episode_id)[rt.pool.name]["empathy"] == "empathy on one: be kind."
    assert summary.agreement["reason"] == pytest.approx(1.0)


def test_ranking_pairs_compare_answers_of_like_length(fake_setup):
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2}, sleep={"samples": 3, "length_ratio": 1.5})
    revised, let_go = day(rt, fake)
    samples = (
        ("Yes. Sure.", CONT),  # the best liked, and a quarter of the others' length
        ("Say it calmly. Say why it hurt you.", MEH),
        ("Shout at them. Make them say sorry.", REV),
    )
    night_script(fake, "one", samples=samples)
    night_script(fake, "two", push_on=True, samples=samples)
    night = SleepPass(rt, rt.settings.sleep)
    night.run(night.pending())
    ranking = {(p.episode_id, p.source): p for p in night.store.pairs(rt.pool.name)}[(revised.episode_id, "ranking")]
    assert ranking.chosen == "Say it calmly. " + MARK + " Say why it hurt you."  # not "Yes. Sure.": not brevity
    assert ranking.rejected == "Shout at them. " + MARK + " Make them say sorry."
    assert ranking.margin == pytest.approx(0.2)


def test_a_second_night_adds_nothing(fake_setup):
    rt, fake, *_ = sleep_setup(fake_setup)
    night = SleepPass(rt, rt.settings.sleep)
    night_script(fake, "one")
    night_script(fake, "two", push_on=True)
    night.run(night.pending())
    before = night.store.pairs(rt.pool.name)
    assert night.pending() == []
    assert night.run(night.pending()).pairs == {"revision": 0, "ranking": 0, "let_go": 0, "marker": 0}
    assert night.store.pairs(rt.pool.name) == before


def test_a_run_killed_part_way_resumes_to_the_same_set(fake_setup, monkeypatch, tmp_path):
    rt, fake, *_ = sleep_setup(fake_setup)
    night = SleepPass(rt, rt.settings.sleep)
    real_commit, calls = night.store.commit, []

    def crash_on_second(*args):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the process dies before the second episode is written
        real_commit(*args)

    monkeypatch.setattr(night.store, "commit", crash_on_second)
    night_script(fake, "one")
    night_script(fake, "two", push_on=True)
    with pytest.raises(KeyboardInterrupt):
        night.run(night.pending())
    monkeypatch.undo()
    assert len(night.pending()) == 1  # the first episode is done, the second is not
    night_script(fake, "two", push_on=True)
    night.run(night.pending())
    resumed = night.store.pairs(rt.pool.name)

    # the same night, uninterrupted, over the same episodes
    with rt.db.sessions.begin() as session:
        for table in (PreferencePairRow, CommentaryRow, SleptRow):
            session.execute(delete(table))
    night_script(fake, "one")
    night_script(fake, "two", push_on=True)
    night.run(night.pending())
    uninterrupted = night.store.pairs(rt.pool.name)

    def content(pairs):
        return [(p.id, p.source, p.before, p.chosen, p.rejected, p.margin, p.commentary) for p in pairs]

    assert len(resumed) == 5
    assert content(resumed) == content(uninterrupted)


def test_export_is_trl_conversational_jsonl_with_a_card(fake_setup, tmp_path):
    rt, fake, *_ = sleep_setup(fake_setup)
    night = SleepPass(rt, rt.settings.sleep)
    night_script(fake, "one")
    night_script(fake, "two", push_on=True)
    night.run(night.pending())
    pairs = night.store.pairs(rt.pool.name)
    path = write_dataset(tmp_path / "out", pairs, pool="default", hashes=rt.council.hashes)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        assert row["prompt"][-1]["role"] == "user" and row["prompt"][0]["role"] == "system"
        assert [m["role"] for m in row["chosen"]] == ["assistant"] == [m["role"] for m in row["rejected"]]
        assert {"episode_id", "source", "pool", "scores", "margin", "commentary"} <= set(row)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "revision 1, ranking 2, let_go 1, marker 1" in card and rt.council.hashes["reason"] in card
    standard = write_dataset(tmp_path / "std", pairs, pool="default", hashes={}, fmt="standard")
    row = json.loads(standard.read_text().splitlines()[0])
    assert isinstance(row["prompt"], str) and row["prompt"].endswith("assistant: ") and isinstance(row["chosen"], str)


def test_night_commentary_is_remembered_and_survives_a_rebuild(fake_setup):
    rt, fake, revised, _ = sleep_setup(fake_setup)
    night = SleepPass(rt, rt.settings.sleep)
    night_script(fake, "one")
    night_script(fake, "two", push_on=True)
    night.run(night.pending())
    stats = rt.memory.stats()
    assert stats["commentaries"] == 2
    hits = rt.memory.search("what the council said at night about my friend cancelling", k=5, kinds=("commentary",))
    night_hit = next(h for h in hits if h.kind == "commentary" and h.episode_id == revised.episode_id)
    assert "empathy: empathy on one: be kind." in night_hit.text
    ids = rt.memory.ids()
    rt.memory.rebuild_from(rt.log)
    assert rt.memory.ids() == ids and rt.memory.stats() == stats


def test_two_pools_sleeping_on_the_same_day_keep_their_own_pairs(fake_setup):
    rt, fake, *_ = sleep_setup(fake_setup)
    night = SleepPass(rt, rt.settings.sleep)
    night_script(fake, "one")
    night_script(fake, "two", push_on=True)
    night.run(night.pending())
    mother_rt, mother_fake = fake_setup(pool="mother", reflection={"min_segment_tokens": 2}, sleep={"samples": 2})
    mother_night = SleepPass(mother_rt, mother_rt.settings.sleep)
    assert len(mother_night.pending()) == 2  # slept on by default, not yet by mother
    night_script(mother_fake, "one")
    night_script(mother_fake, "two", push_on=True)
    mother_night.run(mother_night.pending())
    default_pairs, mother_pairs = night.store.pairs("default"), night.store.pairs("mother")
    assert len(default_pairs) == len(mother_pairs) == 5
    assert {p.pool for p in mother_pairs} == {"mother"} and not {p.id for p in default_pairs} & {
        p.id for p in mother_pairs
    }


def test_a_sleeper_claims_each_episode_and_a_second_sleeper_leaves_it_alone(fake_setup):
    rt, fake, revised, let_go = sleep_setup(fake_setup)
    store = SleepStore(rt.db)
    assert store.claim(revised.episode_id, "default", "other-host") and not store.claim(
        revised.episode_id, "default", "another-host"
    )
    night = SleepPass(rt, rt.settings.sleep)
    night_script(fake, "two", push_on=True)  # only the let-go episode is left to this pass
    summary = night.run(night.pending())
    assert (summary.episodes, summary.claimed_elsewhere) == (1, 1)
    assert night.pending() == [revised.episode_id]  # still the other sleeper's to finish
    assert {p.episode_id for p in store.pairs("default")} == {let_go.episode_id}
    assert not store.claim(let_go.episode_id, "default", "other-host")  # slept on: nobody claims it again


def test_a_claim_whose_sleeper_died_is_taken_over_when_it_expires(fake_setup):
    rt, fake, revised, _ = sleep_setup(fake_setup)
    store = SleepStore(rt.db)
    assert store.claim(revised.episode_id, "default", "dead-host", lease_s=0.05)
    time.sleep(0.2)
    assert store.claim(revised.episode_id, "default", "alive-host")
    assert not store.claim(revised.episode_id, "default", "dead-host")


def test_a_claim_of_a_dead_sleeper_on_this_host_is_taken_over_at_once(fake_setup):
    rt, fake, revised, let_go = sleep_setup(fake_setup)
    store = SleepStore(rt.db)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    here = socket.gethostname()[:40]
    assert store.claim(revised.episode_id, "default", f"{here}:{dead.stdout.strip()}:abc123")
    assert store.claim(revised.episode_id, "default", "next-night")  # the lease is live, but its process is gone
    assert store.claim(let_go.episode_id, "default", f"{here}:{os.getpid()}:def456")
    assert not store.claim(let_go.episode_id, "default", "next-night")  # its process is alive: the claim holds
