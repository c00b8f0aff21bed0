"""Backend registry: one loaded instance per distinct model, shared by persona and archetypes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from archetypes.backends.base import Backend, Chat, ChoiceScores, GenerationStats, LocalModel, Message
from archetypes.backends.fake import FakeBackend
from archetypes.definitions import ModelSpec
from council.core.errors import ModelError
from council.core.settings import Settings

__all__ = ["Backend", "Chat", "ChoiceScores", "FakeBackend", "GenerationStats", "LocalModel", "Message", "LoadedModels"]


def _llama(spec: ModelSpec, settings: Settings) -> tuple[str, Callable[[], Backend]]:
    from archetypes.backends.llama import LlamaBackend
    from archetypes.backends.modelfiles import resolve_gguf

    path = resolve_gguf(spec.path or "", settings.models_dir)
    return f"llama:{path}", lambda: LlamaBackend(path, n_ctx=settings.models.n_ctx, n_threads=settings.models.n_threads)


def _openai(spec: ModelSpec, settings: Settings) -> tuple[str, Callable[[], Backend]]:
    from archetypes.backends.openai_http import OpenAIBackend

    return spec.label(), lambda: OpenAIBackend(spec)


def _fake(spec: ModelSpec, settings: Settings) -> tuple[str, Callable[[], Backend]]:
    return "fake", FakeBackend


FACTORIES: dict[str, Callable[[ModelSpec, Settings], tuple[str, Callable[[], Backend]]]] = {
    "llama": _llama,
    "openai": _openai,
    "fake": _fake,
}


class LoadedModels:
    """Loads each distinct model once. Two specs naming the same GGUF get the same instance."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._loaded: dict[str, Backend] = {}
        self._adapted: dict[str, LocalModel] = {}

    def get(self, spec: ModelSpec, persona_spec: ModelSpec | None = None) -> Backend:
        """Return the backend for ``spec``; ``persona`` specs resolve to ``persona_spec``."""
        if spec.backend == "persona":
            if persona_spec is None or persona_spec.backend == "persona":
                raise ModelError("model 'persona' used where no persona model is known", "name a real model")
            spec = persona_spec
        key, factory = FACTORIES[spec.backend](spec, self.settings)
        if key not in self._loaded:
            self._loaded[key] = factory()
        return self._loaded[key]

    def adapted(self, spec: ModelSpec, adapter: Path) -> LocalModel:
        """``spec``'s model with a LoRA adapter, sharing the loaded weights but not the KV cache.

        Only the persona runs adapted: archetypes on the same GGUF keep reading the untouched base model.
        """
        base = self.get(spec)
        key = f"{spec.label()}+{adapter}"
        if key not in self._adapted:
            if not isinstance(base, LocalModel):
                raise ModelError(
                    f"persona versions need a llama.cpp model, not {base.model_id}",
                    "run `council persona use base` or give the persona a GGUF",
                )
            self._adapted[key] = base.with_adapter(adapter)
        return self._adapted[key]
