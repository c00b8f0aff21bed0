"""The one small interface every model backend implements: generate text, and score choices."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True)
class Message:
    """One chat message. Content is always data: backends never let it carry special tokens."""

    role: Role
    content: str


@dataclass(frozen=True)
class Chat:
    """Messages, plus optional assistant text the model continues from (a prefill)."""

    messages: tuple[Message, ...]
    prefill: str = ""


@dataclass(frozen=True)
class ChoiceScores:
    """Next-token probabilities of a set of choices (by label), renormalised over the choices.

    ``mass`` is the unnormalised probability the model put on the choices at all: near zero means the
    model wanted to say something else, which is worth knowing when reading a vote.
    """

    probs: dict[str, float]
    mass: float


@dataclass
class GenerationStats:
    """Counters a backend keeps, read by benchmarks and progress displays."""

    tokens_evaluated: int = 0
    tokens_reused: int = 0
    generated_tokens: int = 0


class Constraint(Protocol):
    """Decoding rules a local backend applies at every step (see ``council.core.modelock.ModeLock``)."""

    def banned(self) -> Collection[int]:
        """Token ids that may not come next."""
        ...

    def accept(self, piece: str) -> str | None:
        """Take the emitted piece; return it cut where generation must end, or None to go on."""
        ...


class Backend(Protocol):
    """A model that can continue a chat and score next-token choices."""

    model_id: str
    stats: GenerationStats

    def generate(
        self,
        chat: Chat,
        *,
        max_tokens: int,
        temperature: float = 0.0,
        seed: int = 0,
        constraint: Constraint | None = None,
    ) -> Iterator[str]:
        """Stream text pieces (about one token each) that continue ``chat``, obeying ``constraint`` if given.

        The caller may stop iterating at any point; the backend must then be ready for the next call.
        """
        ...

    def token_texts(self) -> list[str]:
        """The text of every token id, for constraints that reason about tokens."""
        ...

    def count_tokens(self, text: str) -> int:
        """How many tokens ``text`` takes in this model (an estimate where the tokenizer is remote)."""
        ...

    def score(
        self, messages: Sequence[Message], prefills: Sequence[str], choices: Mapping[str, Sequence[str]]
    ) -> list[ChoiceScores]:
        """For each prefill, the next-token probability of each choice after ``messages`` + that prefill.

        ``choices`` maps a label to its surface forms (" continue", " Continue", ...); a label's probability
        is the sum over the distinct first tokens of its forms. One forward pass per prefill at most;
        backends that can share the common prefix should.
        """
        ...


@runtime_checkable
class LocalModel(Backend, Protocol):
    """What only an in-process GGUF model can do. Check it with ``isinstance(backend, LocalModel)``."""

    path: Path

    def with_adapter(self, adapter: Path) -> LocalModel:
        """The same weights with a LoRA adapter, and a KV cache of its own."""
        ...

    def chat_text(self, messages: Sequence[dict[str, str]]) -> str:
        """The model's chat template as text, ending where the assistant's answer starts."""
        ...

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as plain text (no special tokens)."""
        ...

    def render(self, messages: Sequence[Message], prefill: str | None = None) -> list[int]:
        """Token ids of a chat through the model's template, ``prefill`` continuing the assistant's turn."""
        ...

    def token_logprobs(self, tokens: Sequence[int], start: int) -> np.ndarray:
        """Log-probability of each of ``tokens[start:]`` given the tokens before it."""
        ...

    def distributions(self, tokens: Sequence[int], start: int) -> np.ndarray:
        """Log-softmax rows of the distributions that predict ``tokens[start:]``."""
        ...

    def reset(self) -> None:
        """Forget every cached token."""
        ...

    def generate_many(self, chats: Sequence[Chat], *, max_tokens: int) -> list[str]:
        """Greedy answers to several chats, decoded side by side."""
        ...
