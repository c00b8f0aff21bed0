"""A fault test at scale, on loopback: N requests, two workers and an API, one worker killed mid-run.

Two `council worker`s and one `council serve --no-worker` on one Postgres store and one Chroma server take N
concurrent requests while one worker is killed with SIGKILL mid-episode and restarted. Prints (or returns)
requests, kills, seconds, lost and duplicated episodes, and whether memory holds each logged episode once.

    python examples/scale_fault.py --database-url postgresql+psycopg://user@host/db --requests 40

The database must be empty or dedicated to the run (its tasks and episodes are counted). bin/test's throwaway
Postgres is one: tests/test_scale.py runs this with it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import Engine, create_engine, text

PROMPTS = [
    "Give me one tip for sleeping better.",
    "How do I say sorry to a friend?",
    "Why is the sky blue?",
    "Name a fruit that is rich in vitamin C.",
    "How can I stay calm before an exam?",
]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, seconds: float = 180) -> None:
    """Until ``url`` answers at all (any status), or fail."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


class Cluster:
    """The processes of the run, all on loopback, all stopped by ``close``."""

    def __init__(self, database_url: str, home: Path, max_tokens: int):
        self.home = home
        self.chroma_port, self.api_port = free_port(), free_port()
        self.env = os.environ | {
            "COUNCIL_HOME": str(home),
            "COUNCIL_DATABASE_URL": database_url,
            "COUNCIL_MEMORY__URL": f"http://127.0.0.1:{self.chroma_port}",
            "COUNCIL_GENERATION__MAX_TOKENS": str(max_tokens),
            "COUNCIL_MODELS__N_THREADS": "1",  # three model processes share the cores: one thread each
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start one process of the run under ``name``."""
        log = (self.home / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(args, env=self.env, stdout=log, stderr=log)
        return self.procs[name]

    def council(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``council ARGS`` under ``name``."""
        return self.start(name, sys.executable, "-m", "council.cli", *args)

    def close(self) -> None:
        """Stop every process that is still running."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def ask(url: str, prompt: str) -> dict:
    """One chat completion; the council field, or the error."""
    body = {"model": "council", "messages": [{"role": "user", "content": prompt}]}
    try:
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=900)
    except httpx.HTTPError as exc:
        return {"error": str(exc)}
    data = response.json()
    return data.get("council", {}) | {"status_code": response.status_code} if response.status_code == 200 else data


def running_on(engine: Engine, worker_pid: int) -> bool:
    """Whether a task is running under a worker of process ``worker_pid``."""
    query = text("select count(*) from tasks where status = 'running' and worker like :w")
    with engine.connect() as c:
        return bool(c.execute(query, {"w": f"%:{worker_pid}:%"}).scalar())


def run(database_url: str, requests: int = 40, max_tokens: int = 24, home: Path | None = None) -> dict:
    """Run the whole test and return its figures."""
    engine = create_engine(database_url)
    home = home or Path(tempfile.mkdtemp(prefix="council-scale-"))
    home.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(database_url, home, max_tokens)
    chroma = str(Path(sys.executable).parent / "chroma")
    started = time.monotonic()
    try:
        cluster.start(
            "chroma", chroma, "run", "--path", str(home / "chroma-server"), "--port", str(cluster.chroma_port)
        )
        wait_for(f"http://127.0.0.1:{cluster.chroma_port}/api/v2/heartbeat")
        first = cluster.council("worker-1", "worker")
        cluster.council("worker-2", "worker")
        cluster.council("api", "serve", "--no-worker", "--port", str(cluster.api_port))
        url = f"http://127.0.0.1:{cluster.api_port}"
        wait_for(f"{url}/healthz")
        with ThreadPoolExecutor(requests) as pool:
            answers = [pool.submit(ask, url, PROMPTS[i % len(PROMPTS)]) for i in range(requests)]
            deadline = time.monotonic() + 600
            while not running_on(engine, first.pid):
                for name, proc in cluster.procs.items():
                    if proc.poll() is not None:
                        log = (home / f"{name}.log").read_text()[-1500:]
                        raise RuntimeError(f"{name} exited with {proc.returncode} before the kill: {log}")
                if time.monotonic() > deadline:
                    raise RuntimeError("worker-1 never ran a task")
                time.sleep(0.2)
            time.sleep(1.0)  # mid-episode: at least one step taken
            first.send_signal(signal.SIGKILL)
            first.wait()
            cluster.council("worker-1b", "worker")
            results = [a.result() for a in answers]
        seconds = time.monotonic() - started
        with engine.connect() as c:
            episodes = [
                r[0]
                for r in c.execute(text("select id from episodes where status in ('finished', 'let_go', 'budget')"))
            ]
            tasks = dict(c.execute(text("select status, count(*) from tasks group by status")).all())
            taken_over = c.execute(text("select count(*) from tasks where attempts > 1")).scalar()
            workers = c.execute(text("select count(distinct worker) from tasks")).scalar()
        import chromadb

        from council.core.settings import MemorySettings

        client = chromadb.HttpClient(host="127.0.0.1", port=cluster.chroma_port)
        stored = client.get_collection(MemorySettings().collection).get(where={"kind": "request"}, include=[])
        remembered = [i.removesuffix(":ask") for i in stored["ids"]]
        answered = [r.get("episode_id") for r in results if r.get("status_code") == 200]
        return {
            "requests": requests,
            "kills": 1,
            "seconds": round(seconds, 1),
            "answered": len(answered),
            "lost": requests - len(set(answered)),
            "duplicated": len(answered) - len(set(answered)) + max(0, len(episodes) - requests),
            "episodes_logged": len(episodes),
            "tasks": tasks,
            "taken_over": taken_over,
            "workers_that_finished_tasks": workers,
            "memory_episodes": len(remembered),
            "memory_matches_log": sorted(remembered) == sorted(episodes),
            "errors": [r for r in results if r.get("status_code") != 200][:3],
        }
    finally:
        cluster.close()
        engine.dispose()


def main() -> None:
    """Parse arguments, run, print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("COUNCIL_DATABASE_URL"), required=False)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()
    if not args.database_url:
        parser.error("--database-url (or COUNCIL_DATABASE_URL) must name an empty Postgres database")
    print(json.dumps(run(args.database_url, args.requests, args.max_tokens), indent=1))


if __name__ == "__main__":
    main()
