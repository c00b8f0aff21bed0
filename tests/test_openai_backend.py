"""The OpenAI-compatible backend against a scripted HTTP transport (no network)."""

import json

import httpx
import pytest

from archetypes.backends import Chat, Message
from archetypes.backends.openai_http import OpenAIBackend
from archetypes.definitions import ModelSpec
from council.core.errors import ModelError
from council.engine.prompts import VERDICT_CHOICES

SPEC = ModelSpec.model_validate(
    {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": "K"}
)


def backend(monkeypatch, handler, spec=SPEC):
    monkeypatch.setenv("K", "secret")
    b = OpenAIBackend(spec)
    b._client = httpx.Client(
        base_url="http://127.0.0.1:9/v1", transport=httpx.MockTransport(handler), headers=b._client.headers
    )
    return b


def test_generate_streams_sse_and_sends_the_prefill_as_a_final_assistant_turn(monkeypatch):
    seen = {}

    def handler(request):
        seen["body"] = json.loads(request.content)
        seen["auth"] = request.headers["authorization"]
        chunks = [{"choices": [{"delta": {"content": t}}]} for t in ("Hel", "lo.")]
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return httpx.Response(200, text=text)

    b = backend(monkeypatch, handler)
    pieces = list(b.generate(Chat((Message("user", "hi"),), prefill="So"), max_tokens=5))
    assert pieces == ["Hel", "lo."]
    assert seen["auth"] == "Bearer secret"
    assert seen["body"]["messages"][-1] == {"role": "assistant", "content": "So"}
    assert seen["body"]["continue_final_message"] is True and seen["body"]["stream"] is True


def test_score_sums_surface_forms_from_top_logprobs(monkeypatch):
    top = [
        {"token": " Continue", "logprob": -1.0},
        {"token": " continue", "logprob": -2.0},
        {"token": " revise", "logprob": -3.0},
        {"token": " I", "logprob": -0.5},
    ]

    def handler(request):
        assert json.loads(request.content)["top_logprobs"] == 20
        return httpx.Response(200, json={"choices": [{"logprobs": {"content": [{"top_logprobs": top}]}}]})

    [scores] = backend(monkeypatch, handler).score((Message("user", "q"),), ["Reason votes:"], VERDICT_CHOICES)
    import math

    mass = math.exp(-1) + math.exp(-2) + math.exp(-3)
    assert scores.mass == pytest.approx(mass)
    assert scores.probs["continue"] == pytest.approx((math.exp(-1) + math.exp(-2)) / mass)
    assert scores.probs["let_go"] == 0.0


def test_http_errors_and_missing_keys_are_model_errors(monkeypatch):
    b = backend(monkeypatch, lambda request: httpx.Response(404, json={"error": "no such model"}))
    with pytest.raises(ModelError, match="HTTP 404"):
        b.score((Message("user", "q"),), ["x"], VERDICT_CHOICES)
    monkeypatch.delenv("K")
    with pytest.raises(ModelError, match="K is not set"):
        OpenAIBackend(SPEC)


def test_a_server_that_opens_a_new_turn_gets_the_cue_at_the_end_of_the_user_turn(monkeypatch):
    sent = []

    def handler(request):
        if request.url.path.endswith("/chat/completions"):
            sent.append(json.loads(request.content))
            return httpx.Response(200, json={"choices": [{"logprobs": {"content": [{"top_logprobs": []}]}}]})
        return httpx.Response(404)  # no /extras/tokenize here: prefixes of the verdict words count

    spec = SPEC.model_copy(update={"prefill": "user"})
    b = backend(monkeypatch, handler, spec)
    b.score((Message("system", "s"), Message("user", "Vote now.")), ["Reason votes:"], VERDICT_CHOICES)
    assert sent[0]["messages"][-1] == {"role": "user", "content": "Vote now.\n\nReason votes:"}
    assert "continue_final_message" not in sent[0] and len(sent[0]["messages"]) == 2


def test_garbage_from_a_server_is_an_error_the_council_turns_into_an_abstention(monkeypatch):
    b = backend(monkeypatch, lambda request: httpx.Response(200, text="<html>proxy error</html>"))
    with pytest.raises(ModelError, match="not JSON"):
        b.score((Message("user", "q"),), ["x"], VERDICT_CHOICES)


def test_the_servers_tokenizer_decides_which_top_tokens_count_for_a_verdict(monkeypatch):
    first = {"continue": "Contin", " continue": " continue", "revise": "rev", "let_go": "let"}
    top = [{"token": "Contin", "logprob": -1.0}, {"token": "C", "logprob": -1.5}, {"token": "rev", "logprob": -2.0}]

    def handler(request):
        body = json.loads(request.content)
        if request.url.path == "/extras/tokenize":
            return httpx.Response(200, json={"tokens": [hash(first.get(body["input"], body["input"])) % 10**6]})
        if request.url.path == "/extras/detokenize":
            texts = {hash(t) % 10**6: t for t in list(first.values()) + ["x"]}
            return httpx.Response(200, json={"text": texts.get(body["tokens"][0], "x")})
        return httpx.Response(200, json={"choices": [{"logprobs": {"content": [{"top_logprobs": top}]}}]})

    choices = {"continue": ("continue", " continue"), "revise": ("revise",), "let_go": ("let_go",)}
    [scores] = backend(monkeypatch, handler).score((Message("user", "q"),), ["x"], choices)
    import math

    assert scores.mass == pytest.approx(math.exp(-1.0) + math.exp(-2.0))  # "C" starts "continue" but is no first token
