"""`council serve` as a real process on loopback, with the real model and the official openai client."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, home, *args, **env):
        self.home, self.port, self.args = home, free_port(), args
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = os.environ | {"COUNCIL_HOME": str(home), "COUNCIL_GENERATION__MAX_TOKENS": "40"} | env
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "council.cli", "serve", "--port", str(self.port), *self.args],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.3)
        raise AssertionError(self.proc.stderr.read().decode() if self.proc.poll() is not None else "no start")

    def client(self, key="none"):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, timeout=300, max_retries=0)

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=120)


@pytest.fixture
def daemon(council_home):
    d = Daemon(council_home).start()
    yield d
    if d.proc.poll() is None:
        d.stop(signal.SIGKILL)


def test_the_openai_client_gets_a_completion_with_the_council_streaming_or_not(daemon):
    client = daemon.client()
    assert [m.id for m in client.models.list()] == ["council-default", "council"]
    reply = client.chat.completions.create(
        model="council", messages=[{"role": "user", "content": "Give me one tip for sleeping better."}]
    )
    text = reply.choices[0].message.content
    council = reply.model_extra["council"]
    assert text and reply.id == f"chatcmpl-{council['episode_id']}"
    assert council["reflection_points"] and all(len(p["votes"]) == 4 for p in council["reflection_points"])

    stream = client.chat.completions.create(
        model="council", stream=True, messages=[{"role": "user", "content": "How do I say sorry to a friend?"}]
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop" and "council" in last.model_extra
    episode = httpx.get(f"{daemon.url}/episodes/{last.model_extra['council']['episode_id']}").json()
    assert streamed.strip() == episode["final_text"]
    assert {e["episode_id"] for e in httpx.get(daemon.url + "/episodes").json()} == {
        council["episode_id"],
        episode["episode_id"],
    }

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(model="council", messages=[{"role": "user", "content": "hello " * 5000}])
    assert daemon.stop() == 0  # SIGTERM: clean exit


def finished_episodes(home):
    with sqlite3.connect(home / "council.db") as db:
        return db.execute("select id from episodes where status in ('finished', 'let_go', 'budget')").fetchall()


def test_kill_9_mid_request_then_restart_finishes_the_task_exactly_once(council_home):
    first = Daemon(council_home).start()
    done = first.client().chat.completions.create(model="council", messages=[{"role": "user", "content": "Hi!"}])
    done_id = done.model_extra["council"]["episode_id"]

    pending = {}

    def interrupted_request():
        try:
            first.client().chat.completions.create(  # long enough to be running at the kill, on a fast machine
                model="council", messages=[{"role": "user", "content": "Explain why the sky is blue."}], max_tokens=600
            )
        except openai.APIConnectionError as exc:
            pending["error"] = exc

    import threading

    thread = threading.Thread(target=interrupted_request)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the episode has taken at least one step
        with sqlite3.connect(council_home / "council.db") as db:
            if db.execute("select count(*) from tasks where status = 'running'").fetchone()[0]:
                break
        time.sleep(0.1)
    time.sleep(1.0)
    first.stop(signal.SIGKILL)
    thread.join(timeout=30)
    assert "error" in pending  # the client saw the connection drop
    with sqlite3.connect(council_home / "council.db") as db:
        (task_id, episode_id, status) = db.execute(
            "select id, episode_id, status from tasks where source = 'api' order by created_at desc limit 1"
        ).fetchone()
    assert status == "running"

    second = Daemon(council_home).start()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if httpx.get(second.url + "/healthz").json()["tasks"]["running"] == 0:
                break
            time.sleep(0.5)
        episodes = httpx.get(second.url + "/episodes").json()
        ids = [e["episode_id"] for e in episodes]
        assert sorted(ids) == sorted({done_id, episode_id}) and len(ids) == 2
        resumed = next(e for e in episodes if e["episode_id"] == episode_id)
        assert resumed["status"] in ("finished", "let_go", "budget") and resumed["final_text"]
        assert sorted(i for (i,) in finished_episodes(council_home)) == sorted([done_id, episode_id])
    finally:
        assert second.stop() == 0


def test_council_ask_wait_is_answered_by_the_daemon(daemon, council_home):
    result = subprocess.run(
        [sys.executable, "-m", "council.cli", "ask", "Name one fruit.", "--wait", "--json"],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    episode = json.loads(result.stdout)
    assert episode["prompt"] == "Name one fruit." and episode["status"] in ("finished", "let_go", "budget")


def test_a_request_without_the_token_gets_401(council_home):
    d = Daemon(council_home, COUNCIL_API_KEY="s3cret").start()
    try:
        with pytest.raises(openai.AuthenticationError):
            d.client("wrong").models.list()
        assert [m.id for m in d.client("s3cret").models.list()][0] == "council-default"
    finally:
        d.stop()


def test_sigterm_mid_episode_checkpoints_exits_0_and_the_restart_finishes_it(council_home):
    first = Daemon(council_home, COUNCIL_GENERATION__MAX_TOKENS="200").start()
    import threading

    answers = {}

    def request():
        try:
            response = httpx.post(
                first.url + "/v1/chat/completions",
                json={"model": "council", "messages": [{"role": "user", "content": "Tell me about the moon."}]},
                timeout=120,
            )
            answers["status"] = response.status_code
        except httpx.HTTPError as exc:
            answers["error"] = exc

    thread = threading.Thread(target=request)
    thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not httpx.get(first.url + "/healthz").json()["tasks"]["running"]:
        time.sleep(0.1)
    time.sleep(1.0)
    assert first.stop(signal.SIGTERM) == 0
    thread.join(timeout=30)
    assert answers == {"status": 503}  # the waiting client was told, and the episode was left checkpointed
    with sqlite3.connect(council_home / "council.db") as db:
        assert db.execute("select status from tasks").fetchall() == [("running",)]
        assert db.execute("select status from episodes").fetchall() == [("running",)]
    second = Daemon(council_home).start()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and httpx.get(second.url + "/healthz").json()["tasks"]["running"]:
            time.sleep(0.5)
        [episode] = httpx.get(second.url + "/episodes").json()
        assert episode["status"] in ("finished", "let_go", "budget") and episode["prompt"] == "Tell me about the moon."
    finally:
        assert second.stop() == 0


def test_concurrent_clients_each_get_their_own_answer(daemon):
    from concurrent.futures import ThreadPoolExecutor

    prompts = [f"Name a colour that starts with the letter {letter}." for letter in "BGRY"]

    def one(prompt):
        reply = daemon.client().chat.completions.create(model="council", messages=[{"role": "user", "content": prompt}])
        return prompt, reply.model_extra["council"]["episode_id"], reply.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, prompts))
    for prompt, episode_id, text in results:
        episode = httpx.get(f"{daemon.url}/episodes/{episode_id}").json()
        assert episode["prompt"] == prompt and episode["final_text"] == text
    assert len({episode_id for _, episode_id, _ in results}) == 4


def test_the_load_script_reports_throughput_and_p95(daemon):
    result = subprocess.run(
        [sys.executable, "examples/load.py", "--url", daemon.url, "--clients", "2", "--requests", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ok 2  errors 0" in result.stdout and "p95" in result.stdout


def test_a_second_daemon_on_the_same_home_refuses_in_one_line(daemon, council_home):
    result = subprocess.run(
        [sys.executable, "-m", "council.cli", "serve", "--port", str(free_port())],
        env=daemon.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "another `council serve` or `council worker` holds" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_api_without_a_worker_is_answered_by_a_council_worker_process(council_home):
    api = Daemon(council_home, "--no-worker").start()
    worker = subprocess.Popen(
        [sys.executable, "-m", "council.cli", "worker"], env=api.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        done = api.client().chat.completions.create(
            model="council", messages=[{"role": "user", "content": "Name one fruit."}]
        )
        council = done.model_extra["council"]
        assert done.choices[0].message.content and council["status"] in ("finished", "let_go", "budget")
        task = httpx.get(api.url + "/healthz").json()["tasks"]
        assert task["done"] == 1 and task["running"] == 0
        with sqlite3.connect(council_home / "council.db") as db:
            (owner,) = db.execute("select worker from tasks").fetchone()
        assert owner and owner.split(":")[1] == str(worker.pid)  # the worker process ran it, not the API
        second = subprocess.run(
            [sys.executable, "-m", "council.cli", "worker"], env=api.env, capture_output=True, text=True, timeout=120
        )
        assert second.returncode == 1 and "another `council serve` or `council worker`" in second.stderr
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=120) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        assert api.stop() == 0
