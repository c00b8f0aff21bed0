"""Archetypes served by a real llama-cpp-python server on loopback, against the same GGUF in process."""

import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from archetypes.backends import LoadedModels, Message
from archetypes.backends.modelfiles import resolve_gguf
from archetypes.backends.openai_http import OpenAIBackend
from archetypes.definitions import ModelSpec
from archetypes.library import Library
from council.core.settings import load_settings
from council.engine import prompts
from council.engine.events import Drafted
from council.engine.runner import build_runtime, run_episode
from tests.conftest import without_judges, write_yaml

pytestmark = pytest.mark.integration

TOLERANCE = 0.05  # largest difference between a verdict's remote and in-process probability (not renormalised)
POINTS = [
    ("How do I water tomatoes?", "Water them deeply twice a week."),
    ("My friend cancels plans. What do I say?", "Tell them you are tired of their excuses and hang up."),
    ("Explain the seasons.", "The Earth's tilt changes how directly sunlight falls through the year."),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def llama_server(tmp_path):
    """llama_cpp.server serving the default GGUF on loopback, with logprobs."""
    settings = load_settings()
    port = free_port()
    gguf = resolve_gguf("smollm2-135m", settings.models_dir)
    args = ["--model", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"]
    args += ["--n_threads", "1", "--logits_all", "true", "--model_alias", "smollm2"]
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", *args], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        raise AssertionError((tmp_path / "server.log").read_text()[-2000:])
    yield proc, url
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def remote_spec(url):
    return ModelSpec(backend="openai", model="smollm2", base_url=url, prefill="user")


def test_votes_read_from_top_logprobs_match_the_same_model_in_process(llama_server):
    """Same verdict at every point, and each verdict's probability (before renormalising) within TOLERANCE.

    The renormalised probabilities can differ more: a verdict word outside the server's top 20 reads as 0.
    """
    _, url = llama_server
    settings = load_settings()
    library = Library.load(settings.home)
    archetypes = [library.archetypes[n] for n in ("reason", "empathy", "loving_child")]
    persona = library.persona(settings.persona)
    remote = OpenAIBackend(remote_spec(url))
    local = LoadedModels(settings).get(ModelSpec(backend="llama", path="smollm2-135m"))
    compared = 0
    for prompt, answer in POINTS:
        messages = prompts.vote_messages(persona, prompt, answer)
        cues = [prompts.vote_prefill(a) for a in archetypes]
        far = remote.score(messages, cues, prompts.VERDICT_CHOICES)
        for cue, got in zip(cues, far, strict=True):
            folded = (*messages[:-1], Message("user", f"{messages[-1].content}\n\n{cue}"))
            [near] = local.score(folded, [""], prompts.VERDICT_CHOICES)
            top, second = sorted(near.probs.values(), reverse=True)[:2]
            # the verdict is compared where the model means one: where it puts a tenth of its probability on the
            # verdict words, and not on a near tie (a word outside the server's top 20 reads as 0 there)
            if min(near.mass, got.mass) >= 0.1 and top - second > 2 * TOLERANCE:
                assert max(got.probs, key=got.probs.get) == max(near.probs, key=near.probs.get), (prompt, cue)
            for verdict in prompts.VERDICT_CHOICES:
                far_p, near_p = got.mass * got.probs[verdict], near.mass * near.probs[verdict]
                assert abs(far_p - near_p) <= TOLERANCE, (prompt, cue, verdict, far_p, near_p)
            compared += 1
    assert compared == len(POINTS) * len(archetypes)


def test_killing_the_archetypes_server_mid_episode_gives_abstentions_not_a_failed_episode(llama_server, council_home):
    proc, url = llama_server
    without_judges(council_home)
    for name in ("reason", "empathy"):
        fields = Library.load(council_home).archetypes[name].model_dump(mode="json", exclude={"name", "judge"})
        fields["model"] = remote_spec(url).model_dump(mode="json")
        write_yaml(council_home, "archetypes", f"remote_{name}", yaml.safe_dump(fields))
    write_yaml(council_home, "pools", "remote", "archetypes: [remote_reason, remote_empathy, libido]\n")
    rt = build_runtime(load_settings(pool="remote", generation={"max_tokens": 80}, memory={"recall": False}))
    killed = []

    def kill_once_the_persona_writes(event):
        if isinstance(event, Drafted) and not killed:
            proc.send_signal(signal.SIGKILL)  # up when the episode started, gone before its first vote
            proc.wait(timeout=30)
            killed.append(True)

    episode = run_episode(rt, "Give me three tips for sleeping better.", kill_once_the_persona_writes)
    assert killed and episode.status in ("finished", "let_go", "budget") and episode.reflection_points
    remote = {"remote_reason", "remote_empathy"}
    votes = [v for rp in episode.reflection_points for v in rp.votes]
    assert all(v.verdict is None and "cannot reach" in v.error for v in votes if v.archetype in remote)
    assert all(v.verdict is not None for v in votes if v.archetype == "libido")
    assert all(set(rp.decision.abstained) == remote for rp in episode.reflection_points)
