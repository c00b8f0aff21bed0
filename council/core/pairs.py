"""The preference pair: one exported row of the DPO dataset, traceable to its episode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, get_args

from pydantic import BaseModel, Field

Source = Literal["revision", "ranking", "let_go", "marker"]
SOURCES: tuple[Source, ...] = get_args(Source)


class PreferencePair(BaseModel):
    """One exported row, with everything needed to trace it back to its episode."""

    id: str
    episode_id: str
    source: Source
    pool: str
    messages: list[dict[str, str]] = Field(description="system and user turns the persona answered")
    before: str = Field("", description="the persona's text before the judged part, markers included")
    chosen: str
    rejected: str
    scores: dict[str, dict[str, float]] = Field(default_factory=dict, description="archetype -> chosen/rejected")
    margin: float
    commentary: str = ""

    def conversational(self) -> dict[str, object]:
        """TRL's conversational preference format, plus metadata columns."""
        return {
            "prompt": self.messages,
            "chosen": [{"role": "assistant", "content": self.before + self.chosen}],
            "rejected": [{"role": "assistant", "content": self.before + self.rejected}],
            **self._metadata(),
        }

    def standard(self, render: Callable[[list[dict[str, str]]], str]) -> dict[str, object]:
        """TRL's standard format: ``render`` turns the messages into the model's prompt text."""
        return {
            "prompt": render(self.messages) + self.before,
            "chosen": self.chosen,
            "rejected": self.rejected,
            **self._metadata(),
        }

    def _metadata(self) -> dict[str, object]:
        return {
            "id": self.id,
            "episode_id": self.episode_id,
            "source": self.source,
            "pool": self.pool,
            "scores": self.scores,
            "margin": self.margin,
            "commentary": self.commentary,
        }
