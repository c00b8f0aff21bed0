from datetime import datetime, timezone

import pytest
from sqlalchemy import create_engine, inspect, text

from council.core.episode import Decision, Episode, Recollection, ReflectionPoint, Vote
from council.core.errors import NotFoundError, StorageError
from council.core.settings import load_settings
from council.store.database import Database, migrate
from council.store.episodes import EpisodeLog


def episode(eid="abc123", pool="default"):
    votes = [
        Vote(
            archetype="reason",
            verdict="revise",
            confidence=0.7,
            probs={"continue": 0.2, "revise": 0.7, "let_go": 0.1},
            coverage={"revise": 0.4},
            steering=True,
        ),
        Vote(archetype="libido", verdict=None, confidence=0.0, error="boom"),
    ]
    points = [
        ReflectionPoint(
            index=0,
            segment_index=0,
            attempt=0,
            boundary="sentence",
            segment="Bad.",
            votes=votes,
            decision=Decision(decision="revise", rule="weighted_majority", support=1.0, abstained=["libido"]),
        ),
        ReflectionPoint(
            index=1,
            segment_index=0,
            attempt=1,
            boundary="sentence",
            segment="Good.",
            votes=votes[:1],
            decision=Decision(decision="continue", rule="weighted_majority", support=1.0, dissent=["reason"]),
        ),
    ]
    return Episode(
        episode_id=eid,
        created_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
        prompt="p",
        persona="default",
        pool=pool,
        status="finished",
        final_text="Good.",
        transcript="Good.<|reflect|>",
        model_ids={"persona": "m"},
        archetype_hashes={"reason": "h"},
        reflection_points=points,
    )


def test_round_trip_keeps_every_vote_and_revision(db_url):
    log = EpisodeLog(Database(db_url))
    log.save(episode())
    back = log.get("abc")
    assert back.model_dump(exclude={"created_at", "finished_at"}) == episode().model_dump(
        exclude={"created_at", "finished_at"}
    )
    with log.db.engine.connect() as c:
        rows = c.execute(text("select attempt, accepted from segments order by attempt")).all()
    assert [tuple(r) for r in rows] == [(0, False), (1, True)]


def test_saving_again_replaces_not_duplicates(db_url):
    log = EpisodeLog(Database(db_url))
    log.save(episode())
    log.save(episode().model_copy(update={"status": "let_go"}))
    assert [e.status for e in log.list()] == ["let_go"]
    with log.db.engine.connect() as c:
        assert c.execute(text("select count(*) from votes")).scalar() == 3


@pytest.mark.parametrize("stale", ["running", "failed", "interrupted"])
def test_an_ended_episode_is_not_undone_by_a_stale_copy(db_url, stale):
    log = EpisodeLog(Database(db_url))
    log.save(episode().model_copy(update={"status": "running", "final_text": ""}))
    log.save(episode())  # a running episode is replaced when it ends
    log.save(episode().model_copy(update={"status": stale, "final_text": ""}))  # a worker that lost its lease
    kept = log.get("abc123")
    assert (kept.status, kept.final_text, len(kept.reflection_points)) == ("finished", "Good.", 2)
    log.save(episode().model_copy(update={"status": "let_go", "final_text": "Enough."}))  # ended by ended: replaced
    assert (log.get("abc123").status, log.get("abc123").final_text) == ("let_go", "Enough.")


def test_list_filters_by_pool_and_get_needs_a_unique_prefix(db_url):
    log = EpisodeLog(Database(db_url))
    log.save(episode("aa1"))
    log.save(episode("aa2", pool="soldier"))
    assert [e.episode_id for e in log.list(pool="soldier")] == ["aa2"]
    with pytest.raises(NotFoundError, match="more than one"):
        log.get("aa")
    with pytest.raises(NotFoundError, match="no episode"):
        log.get("zz")


def test_migrations_build_the_schema_from_a_blank_database(db_url):
    engine = create_engine(db_url)
    migrate(engine)
    inspector = inspect(engine)
    tables = {"episodes", "segments", "reflection_points", "votes", "recollections", "commentaries", "slept", "tasks"}
    tables |= {"sleep_claims"}
    assert tables | {"persona_versions", "persona_selections"} <= set(inspector.get_table_names())
    with engine.connect() as c:
        assert c.execute(text("select version_num from alembic_version")).scalar() == "0012_episode_owner"
    migrate(engine)  # idempotent: a second upgrade is a no-op
    with engine.connect() as c:
        assert c.execute(text("select count(*) from alembic_version")).scalar() == 1


@pytest.mark.parametrize(
    "previous",
    [
        "0001_episode_log",
        "0002_recall",
        "0003_sleep",
        "0004_tasks",
        "0005_task_attempts",
        "0006_persona_versions",
        "0007_budget_status",
        "0008_task_leases",
        "0009_sleep_claims",
        "0010_vote_coverage",
        "0011_vote_steering",
    ],
)
def test_upgrading_keeps_episodes_written_under_the_previous_schema(db_url, previous):
    url = db_url
    engine = create_engine(url)
    migrate(engine, previous)
    with engine.begin() as c:
        c.execute(
            text(
                "insert into episodes (id, created_at, prompt, persona, pool, status, stop_reason, final_text,"
                " transcript, model_ids, archetype_hashes, timings) values ('old1', '2026-11-25 10:00:00',"
                " 'an old prompt', 'default', 'default', 'finished', '', 'an old answer', '', '{}', '{}', '{}')"
            )
        )
    engine.dispose()
    old = EpisodeLog(Database(url)).get("old1")  # opening the log migrates it to head
    assert (old.prompt, old.final_text, old.recalled, old.recollections) == ("an old prompt", "an old answer", "", [])
    assert old.persona_version == "base" and old.owner == ""


def test_upgrading_tells_a_budget_stop_from_the_council_letting_go(db_url):
    url = db_url
    engine = create_engine(url)
    migrate(engine, "0006_persona_versions")
    with engine.begin() as c:
        for id_, reason in (("b1", "the answer reached its token budget"), ("l1", "the council let go (reason)")):
            c.execute(
                text(
                    "insert into episodes (id, created_at, prompt, persona, pool, status, stop_reason, final_text,"
                    " transcript, model_ids, archetype_hashes, timings) values (:id, '2026-11-25 10:00:00', 'p',"
                    " 'default', 'default', 'let_go', :reason, 'a', '', '{}', '{}', '{}')"
                ),
                {"id": id_, "reason": reason},
            )
    engine.dispose()
    log = EpisodeLog(Database(url))
    assert (log.get("b1").status, log.get("l1").status) == ("budget", "let_go")


def test_recollections_round_trip_in_rank_order(db_url):
    log = EpisodeLog(Database(load_settings().db_url))
    ep = episode("rc1")
    ep.recalled = "- [2026-11-25, episode] Asked: tomatoes"
    ep.recollections = [
        Recollection(memory_id="m2", episode_id="e2", kind="reflection", score=0.8, text="second"),
        Recollection(memory_id="m1", episode_id="e1", kind="episode", score=0.5, text="first"),
    ]
    log.save(ep)
    back = log.get("rc1")
    assert back.recalled == ep.recalled
    assert [r.memory_id for r in back.recollections] == ["m2", "m1"]
    assert back.recollections[0].kind == "reflection"


def test_unwritable_location_is_a_storage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="episode log"):
        EpisodeLog(Database(f"sqlite:///{blocker}/sub/log.db"))


def dead_pid() -> int:
    """The id of a process that has ended (and was reaped)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_running_episode_whose_process_ended_is_marked_interrupted_and_no_other(db_url):
    from council.store.tasks import TaskQueue, this_process

    log = EpisodeLog(Database(db_url))
    dead = f"{this_process().partition(':')[0]}:{dead_pid()}"
    task = TaskQueue(log.db).put("p", "inbox")
    running = {
        "gone1": dead,  # this host, and its process ended: interrupted
        "alive1": this_process(),  # still running, here
        "elsewhere1": "another-host:1",  # another host's process may still run
        "legacy1": "",  # written before episodes named their process
        task.episode_id: dead,  # a queued task's: a worker resumes it from its checkpoint
    }
    for eid, owner in running.items():
        log.save(episode(eid).model_copy(update={"status": "running", "owner": owner}))
    log.save(episode("zdone1").model_copy(update={"owner": dead}))
    assert log.interrupt_orphans() == ["gone1"]
    statuses = {e.episode_id: e.status for e in log.list(limit=10)}
    assert statuses == {eid: "running" for eid in running} | {"gone1": "interrupted", "zdone1": "finished"}
    assert dead in log.get("gone1").stop_reason
    assert log.interrupt_orphans() == []
