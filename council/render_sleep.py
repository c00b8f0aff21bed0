"""Terminal output for the night: the night pass, training and its gate, days and nights in a row, persona versions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from council.core.text import printable

if TYPE_CHECKING:
    from council.store.versions import PersonaVersion
    from sleep.night import Slept
    from sleep.nights import Nights
    from sleep.train_version import TrainedVersion


def print_night(console: Console, night: Slept) -> None:
    """What the night pass slept on, the pairs it made, how often each archetype agreed, and the dataset."""
    new = ", ".join(f"{k} {v}" for k, v in night.pairs.items())
    console.print(f"slept on {night.episodes} episodes with the {night.pool} council")
    if night.claimed_elsewhere:
        console.print(f"left {night.claimed_elsewhere} episodes to another night pass already sleeping on them")
    console.print(f"new pairs: {new} (ranking pairs dropped for a low margin: {night.dropped_low_margin})")
    if night.mean_margin is not None:
        console.print(f"mean margin: {night.mean_margin}")
    for name, share in night.agreement.items():
        console.print(f"  {name:<14} agreed with the council {share:.0%}")
    console.print(f"dataset: {night.dataset} ({night.dataset_pairs} pairs)")


def trained_version_fields(trained: TrainedVersion) -> dict[str, Any]:
    """What `council train --json` prints of a training run."""
    return {
        "version": trained.version.id,
        "promoted": trained.version.promoted,
        "reasons": trained.gate.reasons,
        "in_use": trained.in_use,
        "report": trained.report,
        "training": trained.version.training.model_dump() if trained.version.training else {},
        "gate": trained.gate.model_dump(),
    }


def print_trained_version(console: Console, trained: TrainedVersion) -> None:
    """The training run, each version's gate figures, the verdict and the version in use."""
    version, t = trained.version, trained.version.training
    if t is not None:  # train_version always measures the run it stores
        waiting = f" ({t.waiting_pairs} more wait for a later night)" if t.waiting_pairs else ""
        console.print(f"trained {version.id}: {t.steps} steps on {t.pairs} pairs{waiting}, {t.seconds} s on {t.device}")
    for f in trained.gate.versions():
        console.print(
            f"  {f.version:<6} held-out accuracy {f.heldout_accuracy}  KL {f.kl_from_base}"
            f"  approval {f.approval}  markers {f.marker_rate}  people {f.dev_agreement}",
            soft_wrap=True,
        )
        if f.behaviour_requests:
            console.print(
                f"         alone: declines {f.declines_when_should} of what it should let go of,"
                f" {f.declines_when_should_not} of look-alikes; markers {f.alone_marker_rate}"
                f"  perplexity {f.perplexity}",
                soft_wrap=True,
            )
        if f.unseen_requests:
            console.print(
                f"         unseen sources: declines {f.unseen_declines_when_should} of what it should let go of,"
                f" {f.unseen_declines_when_should_not} of requests to answer",
                soft_wrap=True,
            )
    verdict = "promoted" if version.promoted else "not promoted: " + "; ".join(trained.gate.reasons)
    console.print(f"{version.id} {verdict}; the persona now runs {trained.in_use}")
    console.print(f"report: {trained.report}")


def print_nights(console: Console, result: Nights, page: Path) -> None:
    """One line per night (its pairs, what it trained and the verdict), then the version in use and the report."""
    for n in result.nights:
        verdict = "promoted" if n.promoted else "; ".join(n.reasons)
        console.print(
            f"night {n.night}: {n.dataset_pairs} pairs; {n.trained or 'nothing trained'} {verdict}", soft_wrap=True
        )
    console.print(f"the persona now runs {result.nights[-1].in_use}; report: {printable(str(page))}")


def print_versions(console: Console, current: str, versions: list[PersonaVersion]) -> None:
    """Base and every trained version with its gate figures; * marks ``current``, the one in use."""
    console.print(f"{'*' if current == 'base' else ' '} base")
    for v in versions:
        c = v.gate.candidate if v.gate else None
        state = "promoted" if v.promoted else f"not promoted: {v.reason}"
        console.print(
            f"{'*' if v.id == current else ' '} {v.id:<5} {v.created_at:%Y-%m-%d %H:%M} from {v.parent:<5}"
            f" held-out {c and c.heldout_accuracy} KL {c and c.kl_from_base} - {state}",
            soft_wrap=True,
        )
