"""Backend for any OpenAI-compatible server (llama.cpp server, vLLM, ...) over HTTP."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx

from archetypes.backends.base import Chat, ChoiceScores, Constraint, GenerationStats, Message
from archetypes.definitions import ModelSpec
from council.core.errors import ModelError


class OpenAIBackend:
    """Chat completions with streaming for generation, and ``top_logprobs`` for scoring.

    A prefill is sent as a final assistant message, which llama.cpp's server continues by default and
    vLLM continues with ``continue_final_message``; for a server that always opens a new assistant turn
    (``prefill: user``, e.g. llama-cpp-python's), it ends the last user turn instead. The API key is read
    from the environment variable the spec names, never from config files.
    """

    def __init__(self, spec: ModelSpec, timeout: float = 120.0):
        self.model_id = spec.label()
        self.stats = GenerationStats()
        self._model = spec.model
        self._prefill = spec.prefill
        headers = {}
        if spec.api_key_env:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise ModelError(f"environment variable {spec.api_key_env} is not set", "export it with the API key")
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(base_url=str(spec.base_url).rstrip("/"), headers=headers, timeout=timeout)
        self._firsts: dict[tuple[str, ...], dict[str, set[str]] | None] = {}

    def _body(self, messages: Sequence[Message], prefill: str, **extra: object) -> dict[str, Any]:
        wire = [{"role": m.role, "content": m.content} for m in messages]
        if prefill and self._prefill == "user":
            if wire and wire[-1]["role"] == "user":
                wire[-1] = {"role": "user", "content": f"{wire[-1]['content']}\n\n{prefill}"}
            else:
                wire.append({"role": "user", "content": prefill})
        elif prefill:
            wire.append({"role": "assistant", "content": prefill})
            extra |= {"continue_final_message": True, "add_generation_prompt": False}
        return {"model": self._model, "messages": wire, **extra}

    def _post(self, body: dict[str, Any]) -> httpx.Response:
        try:
            response = self._client.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise ModelError(f"cannot reach {self.model_id} ({exc})", "start the server or fix base_url") from exc
        if response.status_code >= 400:
            raise ModelError(f"{self.model_id} answered HTTP {response.status_code}", "check the model name and server")
        return response

    def generate(
        self,
        chat: Chat,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        constraint: Constraint | None = None,
    ) -> Iterator[str]:
        """Stream the server's completion, piece by piece."""
        if constraint is not None:
            raise ModelError(
                f"{self.model_id} cannot be constrained: a remote server's logits cannot be masked",
                "use a local GGUF model for a persona with mode_lock: true",
            )
        body = self._body(chat.messages, chat.prefill, max_tokens=max_tokens, temperature=temperature, seed=seed)
        body["stream"] = True
        try:
            with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    raise ModelError(f"{self.model_id} answered HTTP {response.status_code}", "check the server")
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    delta = json.loads(line[6:])["choices"][0].get("delta", {}).get("content") or ""
                    if delta:
                        self.stats.generated_tokens += 1
                        yield delta
        except httpx.HTTPError as exc:
            raise ModelError(f"cannot reach {self.model_id} ({exc})", "start the server or fix base_url") from exc

    def token_texts(self) -> list[str]:
        """Unknown: the server's vocabulary is not reachable from here."""
        return []

    def count_tokens(self, text: str) -> int:
        """An estimate (four characters a token): the server's tokenizer is not reachable from here."""
        return -(-len(text) // 4)

    def _first_tokens(self, choices: Mapping[str, Sequence[str]]) -> dict[str, set[str]] | None:
        """The text of each form's first token, as the in-process backend counts them, from the server's tokenizer.

        Only servers with llama-cpp-python's ``/extras/tokenize`` and ``/extras/detokenize`` say; for others this
        is None, and a top token counts for a choice when it starts one of its forms.
        """
        key = tuple(f"{label}={form}" for label, forms in choices.items() for form in forms)
        if key not in self._firsts:
            root = str(self._client.base_url).rstrip("/").removesuffix("/v1")
            firsts: dict[str, set[str]] = {}
            try:
                for label, forms in choices.items():
                    for form in forms:
                        body = {"model": self._model, "input": form}
                        ids = self._client.post(f"{root}/extras/tokenize", json=body).raise_for_status().json()
                        body = {"model": self._model, "tokens": ids["tokens"][:1]}
                        text = self._client.post(f"{root}/extras/detokenize", json=body).raise_for_status().json()
                        firsts.setdefault(label, set()).add(text["text"])
                self._firsts[key] = firsts
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                self._firsts[key] = None
        return self._firsts[key]

    def score(
        self, messages: Sequence[Message], prefills: Sequence[str], choices: Mapping[str, Sequence[str]]
    ) -> list[ChoiceScores]:
        """Read each choice's first-token probability from the server's top logprobs."""
        firsts = self._first_tokens(choices)
        out = []
        for prefill in prefills:
            body = self._body(messages, prefill, max_tokens=1, temperature=0, logprobs=True, top_logprobs=20)
            response = self._post(body)
            try:
                data = response.json()
            except ValueError as exc:
                raise ModelError(f"{self.model_id} answered with what is not JSON", "check base_url") from exc
            try:
                top = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            except (KeyError, IndexError, TypeError) as exc:
                raise ModelError(
                    f"{self.model_id} returned no logprobs", "use a server that supports logprobs"
                ) from exc
            found = {label: 0.0 for label in choices}
            for entry in top:
                text = entry["token"]
                for label, forms in choices.items():
                    if text in firsts[label] if firsts else text.strip() and any(f.startswith(text) for f in forms):
                        found[label] += math.exp(entry["logprob"])
                        break
            mass = sum(found.values())
            probs = {c: (p / mass if mass else 1 / len(choices)) for c, p in found.items()}
            out.append(ChoiceScores(probs, mass))
        return out
