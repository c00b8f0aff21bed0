"""Pydantic models for archetypes, pools, personas and the model references they name."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Verdict = Literal["continue", "revise", "let_go"]
VERDICTS: tuple[Verdict, ...] = ("continue", "revise", "let_go")
Rule = Literal["weighted_majority", "unanimity", "veto", "quorum", "pooled"]

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"


class _Definition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def content_hash(self) -> str:
        """Return a short sha256 of the definition's canonical JSON."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ModelSpec(_Definition):
    """Where a model lives.

    In YAML a spec may be written as a string:
    ``smollm2-135m`` or ``gemma-3-270m`` (a GGUF shipped in a PyPI package), a path ending in ``.gguf``,
    ``openai:MODEL@BASE_URL`` (any OpenAI-compatible server), ``fake`` (unit tests only), or
    ``persona`` (an archetype shares the persona's model).
    """

    backend: Literal["llama", "openai", "fake", "persona"] = "llama"
    path: str | None = Field(None, description="GGUF path or built-in model name (llama backend)")
    base_url: str | None = Field(None, description="server URL ending in /v1 (openai backend)")
    model: str | None = Field(None, description="model name the server knows (openai backend)")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    prefill: Literal["assistant", "user"] = Field(
        "assistant",
        description="how an openai server takes a vote's cue: as a final assistant turn it continues (llama.cpp's "
        "own server, vLLM), or at the end of the last user turn (llama-cpp-python's server, which always opens "
        "a new assistant turn)",
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:  # noqa: ANN401 - a YAML value, a string or a mapping
        if not isinstance(value, str):
            return value
        if value in ("persona", "fake"):
            return {"backend": value}
        if value.startswith("openai:"):
            model, _, url = value.removeprefix("openai:").partition("@")
            return {"backend": "openai", "model": model, "base_url": url or None}
        return {"backend": "llama", "path": value}

    @model_validator(mode="after")
    def _check_fields(self) -> ModelSpec:
        if self.backend == "llama" and not self.path:
            raise ValueError("a llama model needs 'path': a .gguf file or a built-in name such as smollm2-135m")
        if self.backend == "openai" and not (self.base_url and self.model):
            raise ValueError("an openai model needs 'base_url' and 'model', e.g. openai:qwen@http://127.0.0.1:8080/v1")
        return self

    def label(self) -> str:
        """Return a short human-readable id for logs."""
        if self.backend == "llama":
            return str(self.path)
        if self.backend == "openai":
            return f"openai:{self.model}@{self.base_url}"
        return self.backend


DEFAULT_MODEL = ModelSpec(backend="llama", path="smollm2-135m")


Judgment = Literal["let_go", "revise"]
JUDGMENTS: tuple[Judgment, ...] = ("let_go", "revise")


class JudgeSource(_Definition):
    """One human-labelled JSONL file a judge learns from, and which of its rows mean which verdict.

    Three shapes: a ``text`` column with a ``label`` column whose values ``labels`` maps to verdicts (values as
    JSON writes them: ``true``, ``0``, ``unanswerable``); a ``text`` column whose every row means ``verdict``; or
    ``chosen`` and ``rejected`` columns, where the chosen text reads as ``continue`` and the rejected one as
    ``verdict`` (default ``revise``). ``let_go`` rows teach the let-go judgment, which reads the request;
    ``revise`` rows teach the revise judgment, which reads a segment; ``continue`` rows teach the judgments
    their file teaches (a file of ``continue`` rows only names it in ``judgment``).
    """

    file: str = Field(min_length=1, description="JSONL path: absolute, or under the user's folder or the package data")
    text: str | None = Field(None, description="column holding the judged text, or a template such as '{a} {b}'")
    label: str | None = Field(None, description="column holding the label")
    labels: dict[str, Verdict] = Field(default_factory=dict, description="label value -> verdict")
    verdict: Verdict | None = Field(None, description="what every row means (no label column), or a rejected text")
    chosen: str | None = Field(None, description="column of the preferred text (pair files)")
    rejected: str | None = Field(None, description="column of the rejected text (pair files)")
    where: dict[str, list[str]] = Field(default_factory=dict, description="keep rows whose column has these values")
    judgment: Judgment | None = Field(None, description="what a file of continue rows only teaches")

    @model_validator(mode="after")
    def _one_shape(self) -> JudgeSource:
        shapes = {
            "labelled": self.text is not None and self.label is not None and bool(self.labels),
            "constant": self.text is not None and self.label is None and self.verdict is not None,
            "pairs": self.chosen is not None and self.rejected is not None and self.text is None,
        }
        if sum(shapes.values()) != 1:
            raise ValueError(
                "a judge source has text + label + labels, or text + verdict, or chosen + rejected (+ verdict)"
            )
        if shapes["pairs"] and self.verdict == "continue":
            raise ValueError("a rejected text cannot mean continue")
        if not self._taught() and self.judgment is None:
            raise ValueError("a file of continue rows only must name the judgment it teaches (let_go or revise)")
        return self

    def _taught(self) -> set[Judgment]:
        if self.chosen is not None:
            return {self.verdict or "revise"}  # type: ignore[arg-type]
        verdicts = set(self.labels.values()) if self.label is not None else {self.verdict}
        return {v for v in verdicts if v in JUDGMENTS}

    def judgments(self) -> set[Judgment]:
        """Which judgments this file teaches."""
        return self._taught() or {self.judgment}  # type: ignore[arg-type]


def _let_go_neighbours() -> dict[Judgment, int]:
    return {"let_go": 20}


class Judge(_Definition):
    """A trained judge: what it learnt from, and the file of its learnt heads.

    ``weights_sha256`` is filled in when the definition is loaded (never written by hand), so the weights are
    part of the archetype's content hash.
    """

    sources: list[JudgeSource] = Field(min_length=1)
    weights: str | None = Field(None, description="heads file; default judges/NAME.safetensors under the root")
    regularization: float = Field(0.3, gt=0, description="inverse L2 strength of the logistic heads (C)")
    layers: dict[Judgment, list[Annotated[int, Field(ge=1, le=6)]]] = Field(
        default_factory=dict,
        description="encoder layers a judgment reads (1-6; default all): upper layers carry meaning, lower ones style",
    )
    neighbours: dict[Judgment, Annotated[int, Field(ge=0, le=200)]] = Field(
        default_factory=_let_go_neighbours,
        description="a judgment also reads its k nearest training texts of each kind (0: the linear head alone)",
    )
    weights_sha256: str | None = None


class Archetype(_Definition):
    """One inner voice: a named perspective that votes at every reflection point."""

    name: str = Field(pattern=NAME_PATTERN)
    title: str = Field(min_length=1, description="display name, also used in the vote prompt")
    voice: str = Field(min_length=1, max_length=80, description="a few words of stance, read at every vote")
    perspective: str = Field(min_length=1, description="the full perspective, read by votes without a judge")
    model: ModelSpec = ModelSpec(backend="persona")
    weight: float = Field(
        1.0,
        gt=0,
        le=1000,
        allow_inf_nan=False,
        description="share of the council's say, relative to the other members (at most 1000: only ratios count)",
    )
    veto: bool = False
    judge: Judge | None = Field(None, description="a trained judge; without one the vote is read from tokens")


class Pool(_Definition):
    """A council: which archetypes sit on it and how their votes are aggregated."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    archetypes: list[str] = Field(min_length=1)
    rule: Rule = "weighted_majority"
    quorum: float = Field(0.5, gt=0, le=1, description="share of weight a non-continue verdict needs (quorum rule)")
    let_go_quorum: float | None = Field(
        None, gt=0, le=1, description="share of weight letting go needs under the quorum rule; default: quorum"
    )
    sharpness: float = Field(
        10.0,
        ge=0,
        le=100,
        description="pooled rule: how sharply a member's share follows how much its data covers the text (0: equal)",
    )
    let_go_at: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="pooled rule: the council's P(let go) at which it lets go (each member votes at its own 0.5)",
    )
    max_revisions: int = Field(2, ge=0, description="revise rounds allowed for one segment")
    revision_seconds: float = Field(
        60, gt=0, allow_inf_nan=False, description="time allowed for revising one segment, whatever the count"
    )
    after_revisions: Literal["continue", "let_go"] = Field(
        "continue", description="what happens when the council still wants a revision when revisions are used up"
    )

    @field_validator("archetypes")
    @classmethod
    def _each_member_once(cls, names: list[str]) -> list[str]:
        repeated = next((name for i, name in enumerate(names) if name in names[:i]), None)
        if repeated is not None:
            raise ValueError(f"archetype {repeated!r} is listed twice: list each member once")
        return names


class Persona(_Definition):
    """The primary voice: a stable identity that writes the answer."""

    name: str = Field(pattern=NAME_PATTERN)
    character: str = Field(min_length=1, description="the persona's system prompt")
    model: ModelSpec = DEFAULT_MODEL
    mode_lock: bool = Field(False, description="speak only as the AI; quote humans only inside marked spans")
