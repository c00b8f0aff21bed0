"""The daemon's HTTP API and task queue on the scripted fake persona (real FastAPI app, real worker thread)."""

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from council.engine.events import Voted
from council.server import create_app
from council.store.tasks import TaskQueue
from council.worker import Interrupted, Step, Worker

CONT = {"continue": 0.8, "revise": 0.1, "let_go": 0.1}
GO = {"continue": 0.1, "revise": 0.1, "let_go": 0.8}


@pytest.fixture
def served(fake_setup):
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2})
    with TestClient(create_app(rt, poll_s=0.05)) as client:
        yield client, rt, fake


def ask(client, content="How do I tell my friend?", **extra):
    return client.post(
        "/v1/chat/completions", json={"model": "council", "messages": [{"role": "user", "content": content}], **extra}
    )


def test_a_completion_carries_the_council_and_is_logged(served):
    client, rt, fake = served
    fake.enqueue("Tell them it hurts. Then listen.")
    fake.enqueue_scores(*[CONT] * 8)
    response = ask(client)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Tell them it hurts. Then listen."}
    council = body["council"]
    assert body["id"] == f"chatcmpl-{council['episode_id']}"
    assert [len(p["votes"]) for p in council["reflection_points"]] == [4, 4]
    assert client.get(f"/episodes/{council['episode_id']}").json()["final_text"] == "Tell them it hurts. Then listen."
    assert [e["episode_id"] for e in client.get("/episodes").json()] == [council["episode_id"]]


def test_streaming_sends_accepted_text_then_the_council(served):
    client, rt, fake = served
    fake.enqueue("Tell them it hurts. Here is how to hurt them back.", "I will stop here, gently.")
    fake.enqueue_scores(*[CONT] * 4, *[GO] * 4)
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "council-default",
            "stream": True,
            "messages": [{"role": "user", "content": "Help."}],
        },
    ) as response:
        assert response.status_code == 200
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["council"]["status"] == "let_go"
    episode = client.get(f"/episodes/{final['council']['episode_id']}").json()
    assert text.strip() == episode["final_text"]
    assert "hurt them back" in episode["reflection_points"][1]["segment"] and text.endswith("I will stop here, gently.")


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ('{"model": "council", "messages": [', 400, "invalid_json"),
        ({"model": "council", "messages": [{"role": "robot", "content": "hi"}]}, 400, "invalid_request"),
        ({"model": "council", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "invalid_role"),
        ({"model": "council", "messages": []}, 400, "invalid_request"),
        ({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404, "model_not_found"),
        ({"model": "council", "messages": [{"role": "user", "content": "hi"}], "seed": -1}, 400, "invalid_request"),
        ({"model": "council", "messages": [{"role": "user", "content": "hi"}], "seed": True}, 400, "invalid_request"),
        (
            {"model": "council", "messages": [{"role": "user", "content": "hi"}], "max_tokens": True},
            400,
            "invalid_request",
        ),
        (
            {"model": "council", "messages": [{"role": "user", "content": "word " * 3000}]},
            400,
            "context_length_exceeded",
        ),
    ],
)
def test_bad_requests_get_openai_style_4xx(served, payload, status, code):
    client, *_ = served
    data = payload if isinstance(payload, str) else json.dumps(payload)
    response = client.post("/v1/chat/completions", content=data, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]


def test_an_oversized_body_is_refused_before_parsing(served):
    client, *_ = served
    response = ask(client, "x" * (2 << 20))
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


def upload(client, read, chunks=64):
    """POST 4 MiB in 64 KiB chunks with no content-length (so httpx sends it chunked), noting each chunk read."""

    def body():
        for _ in range(chunks):
            read.append(1)
            yield b"x" * 65536

    return client.post("/v1/chat/completions", content=body(), headers={"content-type": "application/json"})


def test_a_chunked_body_is_counted_as_it_streams(served):
    client, rt, fake = served
    response = upload(client, [])
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert sum(TaskQueue(rt.db).counts().values()) == 0  # refused before it was parsed or queued


def test_without_the_token_a_body_is_refused_before_it_is_read(served, monkeypatch):
    client, *_ = served
    monkeypatch.setenv("COUNCIL_API_KEY", "s3cret")
    read = []
    response = upload(client, read)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert len(read) < 64  # the upload was not read to its end


def test_with_an_api_key_set_requests_need_the_bearer_token(served, monkeypatch):
    client, rt, fake = served
    monkeypatch.setenv("COUNCIL_API_KEY", "s3cret")
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert ask(client).json()["error"]["code"] == "invalid_api_key"
    ok = client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and [m["id"] for m in ok.json()["data"]] == ["council-default", "council"]
    assert client.get("/healthz").json()["status"] == "ok"
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
    monkeypatch.delenv("COUNCIL_API_KEY")
    assert client.get("/openapi.json").status_code == 200  # no key set: open, as every route is


@pytest.mark.parametrize(
    ("authorization", "status"),
    [("bearer s3cret", 200), ("BEARER s3cret", 200), ("Bearer  s3cret", 200), ("Basic s3cret", 401), ("s3cret", 401)],
)
def test_the_bearer_scheme_is_case_insensitive(served, monkeypatch, authorization, status):
    client, *_ = served
    monkeypatch.setenv("COUNCIL_API_KEY", "s3cret")
    assert client.get("/v1/models", headers={"Authorization": authorization}).status_code == status


def test_inbox_prompts_are_answered_while_idle(served):
    client, rt, fake = served
    fake.enqueue("Water them twice a week.")
    fake.enqueue_scores(*[CONT] * 4)
    task = TaskQueue(rt.db).put("How often do I water tomatoes?", "inbox")  # as `council ask` does
    deadline = time.monotonic() + 10
    while TaskQueue(rt.db).get(task.id).status != "done" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rt.log.get(task.episode_id).final_text == "Water them twice a week."


def test_a_stopped_worker_leaves_the_episode_checkpointed_and_the_next_one_resumes_it(
    fake_setup, council_home, db_url, tmp_path
):
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2})
    fake.enqueue("Tell them it hurts. Then listen. Then hug.")
    fake.enqueue_scores(*[CONT] * 12)
    queue = TaskQueue(rt.db)
    task = queue.put("How do I tell my friend?", "api")
    first = Worker(rt, queue, council_home / "checkpoints.db", poll_s=0.01)
    seen = []

    def stop_after_first_vote(event):
        seen.append(type(event).__name__ if not isinstance(event, Step) else type(event.event).__name__)
        if isinstance(event, Step) and isinstance(event.event, Voted):
            first.stop()

    first.listen(task.id, stop_after_first_vote)
    first.run()  # in this thread: returns once stopped
    assert queue.get(task.id).status == "running"
    assert rt.log.get(task.episode_id).status == "running" and "Interrupted" in seen

    # On Postgres the steps are in the shared store, so a worker on another host (another home) resumes them.
    elsewhere = council_home if db_url.startswith("sqlite") else tmp_path / "another-host"
    second = Worker(rt, queue, elsewhere / "checkpoints.db", poll_s=0.01)
    second.execute(queue.claim(second.worker_id, take_over=True))
    episode = rt.log.get(task.episode_id)
    assert episode.status == "finished" and episode.final_text == "Tell them it hurts. Then listen. Then hug."
    assert [p.segment.strip() for p in episode.reflection_points] == [
        "Tell them it hurts.",
        "Then listen.",
        "Then hug.",
    ]
    assert queue.get(task.id).status == "done" and len(rt.log.list()) == 1
    config = {"configurable": {"thread_id": task.episode_id}}
    assert second._saver.get_tuple(config) is None  # finished episodes leave no checkpoints behind


def test_a_worker_whose_lease_was_taken_over_leaves_the_task_at_its_next_step(fake_setup, council_home):
    rt, fake = fake_setup(reflection={"min_segment_tokens": 2})
    fake.enqueue("Tell them it hurts. Then listen. Then hug.")
    fake.enqueue_scores(*[CONT] * 12)
    queue = TaskQueue(rt.db)
    task = queue.put("How do I tell my friend?", "api")
    stale = Worker(rt, queue, council_home / "checkpoints.db", poll_s=0.01, take_over=False, lease_s=0.15)
    votes = []

    def taken_over_at_first_vote(event):
        if isinstance(event, Step) and isinstance(event.event, Voted):
            votes.append(event)
            if len(votes) == 1:  # a slow worker: another claims the task, and its next renewal fails
                assert queue.claim("another", lease_s=30, take_over=True).id == task.id
                deadline = time.monotonic() + 10  # the lease thread ends once it has found the lease gone
                while any(t.name == "council-lease" for t in threading.enumerate()) and time.monotonic() < deadline:
                    time.sleep(0.01)

    stale.listen(task.id, taken_over_at_first_vote)
    stale.execute(queue.claim(stale.worker_id, lease_s=0.15))
    assert len(votes) == 1  # it stopped instead of writing on
    assert queue.get(task.id).status == "running" and queue.renew(task.id, "another")  # still the other's
    assert rt.log.get(task.episode_id).status == "running"


def test_a_stopping_worker_answers_new_listeners_at_once(fake_setup, council_home):
    rt, _ = fake_setup()
    worker = Worker(rt, TaskQueue(rt.db), council_home / "checkpoints.db")
    worker.stop()
    heard = []
    worker.listen("t1", heard.append)
    assert heard == [Interrupted()]


def test_a_deleted_episode_log_stops_the_daemon_instead_of_losing_episodes(served):
    client, rt, fake = served
    assert client.get("/healthz").json()["store"] == "ok"
    rt.db.file.unlink()
    health = client.get("/healthz")
    assert health.status_code == 503 and "was deleted while in use" in health.json()["status"]
    response = ask(client)
    assert response.status_code == 503 and "restart" in response.json()["error"]["message"]
    deadline = time.monotonic() + 10
    while client.app.state.services.worker.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.app.state.services.worker.is_alive() and "deleted" in client.app.state.services.worker.failure


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("role", ["user", "system"])
def test_a_lone_surrogate_in_a_message_is_an_openai_style_400(served, stream, role):
    client, rt, fake = served
    messages = [{"role": role, "content": "hi \ud800 there"}]
    messages += [{"role": "user", "content": "hello"}] if role == "system" else []
    body = json.dumps({"model": "council", "stream": stream, "messages": messages})  # JSON escapes it as \\ud800
    response = client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "surrogate" in error["message"] and "messages" in error["param"]
