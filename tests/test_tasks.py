"""The task queue on SQLite and on Postgres: leases, take-overs, and claims that never hand a task out twice."""

import threading
import time

from council.engine.runner import run_episode
from council.store.database import Database
from council.store.tasks import MAX_ATTEMPTS, TaskQueue
from council.worker import Done, Failed, Watcher


def queue_on(db_url):
    return TaskQueue(Database(db_url))


def test_a_claim_records_its_worker_and_a_live_lease_keeps_others_off(db_url):
    queue = queue_on(db_url)
    task = queue.put("How do I water tomatoes?", "inbox")
    claimed = queue.claim("w1", lease_s=30)
    assert claimed.id == task.id and claimed.status == "running"
    assert queue.claim("w2", lease_s=30) is None  # running under a live lease: not interrupted
    assert queue.renew(task.id, "w1", lease_s=30) and not queue.renew(task.id, "w2", lease_s=30)
    assert queue.finish(task.id, "done", worker="w1") and queue.get(task.id).status == "done"
    assert queue.claim("w2") is None


def test_a_task_whose_lease_ran_out_is_taken_over_and_its_old_worker_cannot_finish_it(db_url):
    queue = queue_on(db_url)
    task = queue.put("Explain the seasons.", "api")
    queue.claim("w1", lease_s=0.05)
    time.sleep(0.2)
    taken = queue.claim("w2", lease_s=30)
    assert taken.id == task.id and taken.episode_id == task.episode_id  # the same episode, not a second one
    assert not queue.renew(task.id, "w1") and not queue.finish(task.id, "failed", "late", worker="w1")
    assert queue.get(task.id).status == "running"
    assert queue.finish(task.id, "done", worker="w2") and queue.get(task.id).status == "done"


def test_a_lone_worker_takes_over_a_running_task_at_once_and_gives_up_after_max_attempts(db_url):
    queue = queue_on(db_url)
    task = queue.put("A prompt that kills its worker.", "inbox")
    for attempt in range(MAX_ATTEMPTS):  # each claim is a start that dies during the task
        assert queue.claim(f"w{attempt}", lease_s=30, take_over=True).id == task.id
    assert queue.claim("last", take_over=True) is None
    assert queue.get(task.id).status == "failed" and "3 attempts" in queue.get(task.id).error


def test_api_requests_go_before_inbox_prompts_then_oldest_first(db_url):
    queue = queue_on(db_url)
    inbox = queue.put("inbox prompt", "inbox")
    first, second = queue.put("api one", "api"), queue.put("api two", "api")
    assert [queue.claim("w").id for _ in range(3)] == [first.id, second.id, inbox.id]


def test_workers_starting_and_claiming_at_once_take_every_task_exactly_once(db_url):
    ids = {queue_on(db_url).put(f"prompt {i}", "api").id for i in range(40)}
    taken: dict[str, list[str]] = {}
    errors = []

    def work(name):
        try:
            queue = queue_on(db_url)  # each worker its own engine and start-up migration, as processes would
            claims = []
            while (task := queue.claim(name, lease_s=30)) is not None:
                claims.append(task.id)
                queue.finish(task.id, "done", worker=name)
            taken[name] = claims
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == [] and len(taken) == 4
    claims = [task for claimed in taken.values() for task in claimed]
    assert sorted(claims) == sorted(ids)  # none lost, none twice
    assert queue_on(db_url).counts() == {"queued": 0, "running": 0, "done": 40, "failed": 0}


def test_an_api_without_a_worker_hears_how_a_task_ended_elsewhere(fake_setup, db_url):
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2})
    queue = TaskQueue(rt.db)
    watcher = Watcher(rt, queue, poll_s=0.05)
    watcher.start()
    heard = []
    done, failed = queue.put("How do I water tomatoes?", "api"), queue.put("A prompt that fails.", "api")
    for task in (done, failed):
        watcher.listen(task.id, heard.append)
    other = queue_on(rt.settings.db_url)  # a worker in another process
    assert other.claim("elsewhere").id == done.id
    fake.enqueue("Water them deeply twice a week.")
    fake.enqueue_scores(*[{"continue": 0.8, "revise": 0.1, "let_go": 0.1}] * 4)
    episode = run_episode(rt, done.prompt, episode_id=done.episode_id)
    other.finish(done.id, "done", worker="elsewhere")
    assert other.claim("elsewhere").id == failed.id
    other.finish(failed.id, "failed", "ModelError: the model file is gone", worker="elsewhere")
    deadline = time.monotonic() + 10
    while len(heard) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    watcher.stop()
    watcher.join(timeout=5)
    kinds = {type(event): event for event in heard}
    assert kinds[Done].episode.episode_id == episode.episode_id and kinds[Done].episode.final_text == episode.final_text
    assert "the model file is gone" in str(kinds[Failed].error)
    assert len(heard) == 2  # each ending told once
