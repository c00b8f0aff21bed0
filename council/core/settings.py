"""Typed settings with one precedence: defaults < config file < environment < CLI flags.

``COUNCIL_HOME`` moves all state (episode log, models assembled from packages, user definitions).
The config file is ``$COUNCIL_HOME/config.yaml``; environment variables are ``COUNCIL_<FIELD>``, with
``__`` for nesting (``COUNCIL_REFLECTION__MIN_SEGMENT_TOKENS=8``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import platformdirs
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from council.core.datafiles import parse_yaml
from council.core.errors import DefinitionError, first_problem


def default_home() -> Path:
    """Return ``$COUNCIL_HOME`` or the platform's user data directory."""
    env = os.environ.get("COUNCIL_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("archetype-council"))


class ReflectionSettings(BaseModel):
    """Where the persona pauses for its council."""

    model_config = ConfigDict(extra="forbid")

    marker: str = Field("<|reflect|>", min_length=1, description="stop-reflect marker the persona may emit")
    min_segment_tokens: int = Field(12, ge=1, description="no logical boundary before this many tokens")
    max_segment_tokens: int = Field(80, ge=2, description="force a reflection point after this many tokens")
    sentences: bool = Field(True, description="a sentence's end is a reflection point")
    paragraphs: bool = Field(True, description="a paragraph's end is a reflection point")
    list_items: bool = Field(True, description="a list item's end is a reflection point")
    code_blocks: bool = Field(True, description="a closed code block is a reflection point")


class GenerationSettings(BaseModel):
    """How the persona samples."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(200, ge=1, description="token budget of one answer")
    temperature: float = Field(0.7, ge=0, description="sampling temperature of the persona")
    seed: int = Field(0, ge=0, lt=2**32, description="sampling seed (NumPy takes 0 to 2**32 - 1)")
    comment_tokens: int = Field(40, ge=1, description="length of an archetype's comment on a revise")
    closing_tokens: int = Field(60, ge=1, description="length of the graceful closing on let go")


class ModelSettings(BaseModel):
    """llama.cpp runtime settings."""

    model_config = ConfigDict(extra="forbid")

    n_ctx: int = Field(2048, ge=256, description="context window of every llama.cpp model, in tokens")
    n_threads: int | None = Field(None, ge=1, description="defaults to every core")


class MemorySettings(BaseModel):
    """Vector memory (chromadb) and what the persona recalls from it."""

    model_config = ConfigDict(extra="forbid")

    recall: bool = Field(True, description="put a digest of relevant past episodes into the persona's context")
    top_k: int = Field(3, ge=1, le=50, description="memories recalled per episode at most")
    min_score: float = Field(
        0.47, ge=-1, le=1, description="cosine similarity to a past request below which nothing is recalled"
    )
    budget_tokens: int = Field(160, ge=16, description="token budget of the recall digest")
    embedder: str = Field("all-minilm-l6-v2", description="packaged embedding model, or a model directory")
    url: str | None = Field(None, description="Chroma server URL (http://host:port); default embedded under home")
    collection: str = Field("council_memory", min_length=3, description="Chroma collection that holds the memory")


class SleepSettings(BaseModel):
    """The night pass: commentary and preference pairs."""

    model_config = ConfigDict(extra="forbid")

    pool: str | None = Field(None, description="pool that sleeps; default the day's pool")
    samples: int = Field(3, ge=2, description="alternative answers sampled per episode for ranking pairs")
    temperature: float = Field(0.9, ge=0, description="sampling temperature of those alternatives")
    answer_tokens: int = Field(120, ge=8, description="length of each alternative answer")
    min_margin: float = Field(0.05, ge=0, le=1, description="ranking pairs with a smaller score gap are dropped")
    length_ratio: float = Field(
        1.5,
        ge=1,
        description="ranking pairs: the longer side has at most this many times the shorter's words, so the"
        " council's preference taught is not one for length",
    )
    commentary_tokens: int = Field(60, ge=8, description="length of each archetype's commentary")
    push_on_tokens: int = Field(60, ge=8, description="length of the pushing-on continuation of let-go pairs")
    seed: int = Field(0, ge=0, lt=2**32, description="sampling seed (NumPy takes 0 to 2**32 - 1)")


LoraTarget = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]  # llama.cpp has names


class TrainSettings(BaseModel):
    """DPO with LoRA on the night's pairs, and the gate a trained persona version must pass."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="DPO's beta: how far the policy may move from its reference")
    sft_weight: float = Field(
        1.0,
        ge=0,
        description="weight of a supervised term on the chosen texts (their mean token NLL) added to DPO's loss:"
        " DPO cancels what both sides share, such as the stop-reflect marker, so only this term teaches it (0: off)",
    )
    marker_epochs: float = Field(
        3,
        ge=0,
        description="supervised passes, before DPO, over the places where chosen texts pause at the stop-reflect"
        " marker, on the marker's own tokens: teaches the persona to pause where its council reflected (0: off)",
    )
    marker_probability: float = Field(
        0.6,
        gt=0,
        lt=1,
        description="the probability of beginning the marker that those passes teach up to, and no further: above"
        " it, what the persona would have written next loses too much",
    )
    marker_anchor: float = Field(
        1.0,
        ge=0,
        description="weight, in those passes, of the KL from the base model on the text before each marker: holds"
        " what the persona writes while it learns where to pause (0: the marker's tokens alone)",
    )
    lora_r: int = Field(8, ge=1, description="LoRA rank")
    lora_alpha: float = Field(16, gt=0, description="LoRA alpha (scale alpha / r)")
    target_modules: list[LoraTarget] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj"], min_length=1, description="layers LoRA adapts (llama.cpp loads these)"
    )
    learning_rate: float = Field(5e-4, gt=0, description="optimiser learning rate")
    epochs: float = Field(2, gt=0, description="passes over the training pairs")
    batch_size: int = Field(4, ge=1, description="pairs per optimiser step")
    max_length: int = Field(512, ge=32, description="tokens per prompt + completion; longer rows are truncated")
    holdout: float = Field(0.2, ge=0, lt=1, description="share of pairs kept out of training for the gate")
    replay: float = Field(0.5, ge=0, description="earlier nights' pairs mixed in, as a share of the new ones")
    max_pairs: int = Field(
        48,
        ge=1,
        description="pairs one night trains on at most, replay included, so a large day still trains within a"
        " night; each kind keeps its widest margins and the new pairs left over wait for a later night",
    )
    save_steps: int = Field(4, ge=1, description="checkpoint every this many steps, so a killed run resumes")
    seed: int = Field(0, ge=0, lt=2**32, description="sampling seed (NumPy takes 0 to 2**32 - 1)")
    max_kl: float = Field(0.5, gt=0, description="gate: mean per-token KL from the base on probe prompts, in nats")
    approval_slack: float = Field(
        0.05,
        ge=0,
        le=1,
        description="gate: how far the council's approval on probe prompts may fall beyond two standard errors",
    )
    probe_tokens: int = Field(60, ge=8, description="tokens the persona writes per probe prompt")
    dev_set: Path | None = Field(None, description="human-labelled pairs JSONL (id, prompt, chosen, rejected)")
    dev_pairs: int = Field(40, ge=0, description="how many of its pairs the report scores")
    look_alike_pairs: int = Field(
        20,
        ge=0,
        description="human-labelled pairs mixed into each night's training: on a request that sounds risky but"
        " should be answered, the reply people preferred over the persona's closing sentence (0: none)",
    )
    behaviour_requests: int = Field(
        60,
        ge=0,
        description="gate: dev requests the persona answers alone (a third it should let go of); 0 turns the"
        " behaviour checks off, and the version must then beat its parent's held-out pair accuracy",
    )
    max_overrefusal_rise: float = Field(
        0.03, ge=0, le=1, description="gate: how far alone the persona's over-refusal may rise above the base's"
    )
    unseen_requests: int = Field(
        50,
        ge=0,
        description="gate: requests from sources no night and no judge trains on that the persona answers alone"
        " (20 of the 50 to let go of; 0: off)",
    )
    max_unseen_overrefusal_rise: float = Field(
        0.10,
        ge=0,
        le=1,
        description="gate: how far alone its over-refusal on those requests may rise above the base's (30 requests:"
        " three replies)",
    )
    fluency_answers: int = Field(40, ge=0, description="gate: held-out answers people wrote, for perplexity (0: off)")
    max_perplexity_ratio: float = Field(
        1.10, ge=1, description="gate: how far perplexity on those answers may rise, as a multiple of the base's"
    )


class Settings(BaseSettings):
    """Everything configurable, validated once at start-up."""

    model_config = SettingsConfigDict(env_prefix="COUNCIL_", env_nested_delimiter="__", extra="forbid")

    home: Path = Field(
        default_factory=default_home,
        description="all state (database, memory, datasets); default the platform data dir",
    )
    database_url: str | None = Field(None, description="any SQLAlchemy URL; default SQLite under home")
    persona: str = Field("default", description="the persona that writes")
    pool: str = Field("default", description="the pool (council) that votes")
    reflection: ReflectionSettings = ReflectionSettings()
    generation: GenerationSettings = GenerationSettings()
    models: ModelSettings = ModelSettings()
    memory: MemorySettings = MemorySettings()
    sleep: SleepSettings = SleepSettings()
    train: TrainSettings = TrainSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: CLI (init) > environment > config file > defaults."""
        return init_settings, env_settings, _YamlFileSource(settings_cls)

    @property
    def db_url(self) -> str:
        """The episode log's SQLAlchemy URL."""
        return self.database_url or f"sqlite:///{self.home / 'council.db'}"

    @property
    def datasets_dir(self) -> Path:
        """Where the night's preference datasets are written."""
        return self.home / "datasets"

    @property
    def chroma_dir(self) -> Path:
        """Where the embedded vector memory lives."""
        return self.home / "chroma"

    @property
    def personas_dir(self) -> Path:
        """Where trained persona versions (adapters, reports) are kept."""
        return self.home / "personas"

    @property
    def models_dir(self) -> Path:
        """Where models assembled from packages are kept."""
        return self.home / "models"


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads ``$COUNCIL_HOME/config.yaml`` when it exists."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = default_home() / "config.yaml"
        if not path.is_file():
            return {}
        try:
            data = parse_yaml(path.read_text(encoding="utf-8"), path) or {}
        except yaml.YAMLError as exc:
            raise DefinitionError(f"{path}: invalid YAML", "fix the YAML syntax of the config file") from exc
        if not isinstance(data, dict):
            raise DefinitionError(f"{path}: expected a mapping of settings", "write settings as key: value")
        return data


def load_settings(**overrides: Any) -> Settings:  # noqa: ANN401 - any setting's value
    """Build settings from every source, turning validation errors into one-line errors."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        where, message, _ = first_problem(exc.errors())
        raise DefinitionError(
            f"setting '{where}': {message}",
            "correct it in config.yaml, the COUNCIL_* environment or the flags",
        ) from exc
