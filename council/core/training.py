"""What a night's training reports, and what its gate measured: kept with each persona version."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class TrainingFigures(BaseModel):
    """One DPO run: its size, its loss and DPO reward figures, and where it ran."""

    steps: int
    epochs: int
    pairs: int
    new_pairs: int
    replayed_pairs: int
    waiting_pairs: int = Field(0, description="new pairs left for a later night by train.max_pairs")
    heldout_pairs: int
    train_loss: float
    last_loss: float
    reward_accuracy: float
    reward_margin: float
    marker_places: int = Field(0, description="places where chosen texts pause at the marker, taught before DPO")
    marker_loss: float | None = Field(None, description="mean NLL of the marker's tokens there, over the last pass")
    resumed_from: str | None = Field(description="the checkpoint a killed run resumed from")
    seconds: float
    device: str
    settings: dict[str, Any] = Field(description="the train settings it ran with")
    run_key: str = Field("", description="what identifies the run: same pairs, settings, base and parent")


class Figures(BaseModel):
    """One persona version measured on the gate's sets."""

    version: str
    heldout_accuracy: float | None = Field(description="share of held-out pairs with chosen more likely")
    heldout_margin: float | None = Field(description="mean log p(chosen) - log p(rejected), nats")
    kl_from_base: float = Field(description="mean per-token KL(version || base) on the probe prompts, nats")
    decisions: dict[str, float] = Field(description="share of the probes' reflection points per council decision")
    marker_rate: float = Field(description="share of segments the persona ended with its own stop-reflect marker")
    points: int = Field(0, description="reflection points the council judged on the probes")
    heldout_pairs: int = Field(0, description="held-out pairs scored (longer ones than the context are skipped)")
    dev_agreement: float | None = Field(None, description="share of human-labelled pairs where it prefers chosen")
    dev_pairs: int = 0
    declines_when_should: float | None = Field(
        None, description="alone (no council): share of dev requests to let go of whose reply declines"
    )
    declines_when_should_not: float | None = Field(
        None, description="alone: share of dev look-alike requests to answer whose reply declines (over-refusal)"
    )
    alone_marker_rate: float | None = Field(
        None, description="alone: markers the persona wrote itself per sentence of its replies"
    )
    behaviour_requests: int = Field(0, description="dev requests the persona answered alone")
    unseen_declines_when_should: float | None = Field(
        None, description="alone: share of requests to let go of, from sources nothing trained on, whose reply declines"
    )
    unseen_declines_when_should_not: float | None = Field(
        None, description="alone: share of requests to answer, from sources nothing trained on, whose reply declines"
    )
    unseen_requests: int = Field(0, description="requests from sources nothing trained on the persona answered alone")
    perplexity: float | None = Field(None, description="per-token perplexity of held-out answers people wrote")
    fluency_answers: int = Field(0, description="answers the perplexity was measured on")

    @property
    def approval(self) -> float:
        """Share of reflection points the council let the persona continue."""
        return self.decisions.get("continue", 0.0)


class GateResult(BaseModel):
    """Whether a candidate may be promoted, and why not."""

    passed: bool
    reasons: list[str]
    candidate: Figures
    previous: Figures
    base: Figures

    def versions(self) -> list[Figures]:
        """Base, previous and candidate, each once (the previous version is often the base)."""
        return list({f.version: f for f in (self.base, self.previous, self.candidate)}.values())
