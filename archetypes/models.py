"""Pydantic models for archetypes, pools, personas and the model references they name."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Verdict = Literal["continue", "revise", "let_go"]
VERDICTS: tuple[Verdict, ...] = ("continue", "revise", "let_go")
Rule = Literal["weighted_majority", "unanimity", "veto", "quorum"]

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

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
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


class Archetype(_Definition):
    """One inner voice: a named perspective that votes at every reflection point."""

    name: str = Field(pattern=NAME_PATTERN)
    title: str = Field(min_length=1, description="display name, also used in the vote prompt")
    voice: str = Field(min_length=1, max_length=80, description="a few words of stance, read at every vote")
    perspective: str = Field(min_length=1, description="the full perspective, used for comments and commentary")
    model: ModelSpec = ModelSpec(backend="persona")
    weight: float = Field(1.0, gt=0)
    veto: bool = False


class Pool(_Definition):
    """A council: which archetypes sit on it and how their votes are aggregated."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    archetypes: list[str] = Field(min_length=1)
    rule: Rule = "weighted_majority"
    quorum: float = Field(0.5, gt=0, le=1, description="share of weight a non-continue verdict needs (quorum rule)")
    max_revisions: int = Field(2, ge=0, description="revise rounds allowed for one segment")
    after_revisions: Literal["continue", "let_go"] = Field(
        "continue", description="what happens when the council still wants a revision after max_revisions"
    )


class Persona(_Definition):
    """The primary voice: a stable identity that writes the answer."""

    name: str = Field(pattern=NAME_PATTERN)
    character: str = Field(min_length=1, description="the persona's system prompt")
    model: ModelSpec = DEFAULT_MODEL
    mode_lock: bool = Field(False, description="speak only as the AI; quote humans only inside marked spans")
