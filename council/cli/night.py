"""The night and what it makes: `council sleep`, `nights` and `train`, and `council persona`'s trained versions."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.progress import Progress

from archetypes.library import Library
from council.cli._common import JsonFlag, dump, err, out
from council.core.errors import NothingToTrainError
from council.core.settings import load_settings

if TYPE_CHECKING:
    from council.engine.runtime import CouncilRuntime
    from council.store.versions import PersonaVersions
    from sleep.export import Format
    from sleep.train_version import TrainedVersion

persona_app = typer.Typer(help="Trained persona versions: list, choose, roll back.", no_args_is_help=True)


def sleep(
    since: Annotated[str | None, typer.Option(help="Only episodes created at or after this ISO time.")] = None,
    all_episodes: Annotated[bool, typer.Option("--all", help="Every episode not yet slept on (the default).")] = False,
    pool: Annotated[
        str | None, typer.Option(help="Pool that sleeps (default: sleep.pool, else the day's pool).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Dataset directory (default $COUNCIL_HOME/datasets/POOL).")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="conversational or standard.")] = "conversational",
    train: Annotated[
        bool, typer.Option("--train", help="Then train a new persona version on the pairs (needs the train extra).")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """The night pass: the council comments on each episode not yet slept on, and the day becomes DPO pairs.

    Pairs come from revisions, rankings of sampled answers and let-go decisions, and are exported as TRL JSONL
    with a dataset card. Safe to re-run: nothing is added twice, and a killed run resumes. With --train, the
    persona then learns from the pairs (see `council train`).
    """
    from council.engine.runner import build_runtime
    from council.render_sleep import print_night, print_trained_version, trained_version_fields
    from sleep.night import sleep_and_export, sleeping_pool

    if fmt not in ("conversational", "standard"):
        raise typer.BadParameter(f"{fmt!r}: use conversational or standard", param_hint="--format")
    start = _since(since) if not all_episodes else None
    settings = load_settings(pool=sleeping_pool(load_settings(), pool))
    with err.status("Loading models…"):
        rt = build_runtime(settings)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("Sleeping on episodes", total=None)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        slept = sleep_and_export(rt, start, out_dir, cast("Format", fmt), progress)  # the format is checked above
    trained: TrainedVersion | NothingToTrainError | None = None
    if train:
        try:
            trained = _train(rt, slept.dataset)
        except NothingToTrainError as exc:  # after a night with nothing new, `sleep --train` just says so
            trained = exc
    if as_json:
        data = slept.model_dump()
        if trained is not None:
            data["training"] = (
                {"skipped": trained.what}
                if isinstance(trained, NothingToTrainError)
                else trained_version_fields(trained)
            )
        return dump(data)
    print_night(out, slept)
    if isinstance(trained, NothingToTrainError):
        out.print(f"nothing to train: {trained.what}")
    elif trained is not None:
        print_trained_version(out, trained)


def _since(since: str | None) -> datetime | None:
    """``--since`` as a UTC time (a naive time is local; the log keeps UTC)."""
    try:
        start = datetime.fromisoformat(since) if since else None
    except ValueError:
        raise typer.BadParameter(f"{since!r} is not an ISO time such as 2026-11-26T00:00", param_hint="--since")
    return start.astimezone(timezone.utc) if start is not None else None


def nights(
    day: Annotated[
        Path, typer.Argument(help='JSONL rows {"id","prompt","should_let_go"}: the day\'s requests.', dir_okay=False)
    ],
    count: Annotated[int, typer.Option("--nights", min=1, help="Days and nights to live in a row.")] = 3,
    per_night: Annotated[int, typer.Option(min=1, help="Requests answered each day (the next ones each day).")] = 40,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Token budget of each answer.")] = None,
    report: Annotated[
        Path | None, typer.Option(help="Report directory (default $COUNCIL_HOME/reports/nights).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Days and nights in a row: the day's episodes, the night pass, training and the gate, then a report.

    Each day answers the next --per-night requests of DAY with the persona version in use and its council,
    as real episodes in the log; the night sleeps on them, trains a version and gates it (see `council train`).
    The report plots, night by night, the persona alone (the gate's dev requests) and with its council.
    """
    from council.core.extras import require
    from council.render_sleep import print_nights

    require("train")  # before the days: every night trains
    from sleep.nights import run_nights, write_nights_report

    settings = load_settings(generation={"max_tokens": max_tokens} if max_tokens else None)
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("Starting", total=None)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        result = run_nights(
            settings, day, count, per_night, step=lambda what: bar.update(task, description=what), progress=progress
        )
    page = write_nights_report(result, report or settings.home / "reports" / "nights")
    if as_json:
        return dump(result.model_dump(mode="json") | {"report": str(page)})
    print_nights(out, result, page)


def train_command(
    dataset: Annotated[Path, typer.Argument(help="A `council sleep` dataset directory (or its pairs.jsonl).")],
    persona: Annotated[str | None, typer.Option(help="Persona to train (default: the configured one).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Train a new persona version with DPO and LoRA on DATASET, gate it, and write a before/after report.

    Training starts from the version in use and mixes in a replay share of earlier pairs (train.replay); a
    share of pairs is held out (train.holdout). The new version is promoted, and used from the next run, only
    if it does at least as well as the one in use on held-out pairs, stays within train.max_kl of the base
    model, the council approves of it at least as often on the probe prompts, and alone, on dev requests, it
    declines more of what it should let go of, over-refuses at most train.max_overrefusal_rise more than the
    base and stays fluent (train.max_perplexity_ratio), and on requests from sources nothing trains on it declines
    no fewer and over-refuses at most train.max_unseen_overrefusal_rise more than the base. A killed run resumes
    from its last checkpoint.
    """
    from council.engine.runner import build_runtime
    from council.render_sleep import print_trained_version, trained_version_fields

    with err.status("Loading models…"):
        rt = build_runtime(load_settings(persona=persona))
    trained = _train(rt, dataset)
    dump(trained_version_fields(trained)) if as_json else print_trained_version(out, trained)


def _train(rt: CouncilRuntime, dataset: Path) -> TrainedVersion:
    """Train and gate a persona version, with a progress bar of its phases."""
    from sleep.train_version import train_version

    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("Training", total=None)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(task, description=phase, completed=done, total=total)

        return train_version(rt, dataset, progress)


def _versions(persona: str | None) -> tuple[PersonaVersions, str]:
    from council.store.database import Database
    from council.store.versions import PersonaVersions

    settings = load_settings()
    name = persona or settings.persona
    Library.load(settings.home).persona(name)  # an unknown name is an error, not an empty history
    return PersonaVersions(Database(settings.db_url), settings.personas_dir), name


@persona_app.command("versions")
def persona_versions(
    persona: Annotated[str | None, typer.Option(help="Persona (default: the configured one).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List a persona's trained versions, with their gate figures; * marks the one in use."""
    from council.render_sleep import print_versions

    store, name = _versions(persona)
    current = store.current(name)
    versions = store.all(name)
    if as_json:
        rows = [v.model_dump(mode="json", exclude={"pair_ids"}) | {"in_use": v.id == current} for v in versions]
        return dump({"persona": name, "in_use": current, "versions": rows})
    print_versions(out, current, versions)


@persona_app.command("use")
def persona_use(
    version: Annotated[str, typer.Argument(help="A version id such as v2, or base.")],
    persona: Annotated[str | None, typer.Option(help="Persona (default: the configured one).")] = None,
) -> None:
    """Run the persona with VERSION from the next episode on (promoted or not)."""
    store, name = _versions(persona)
    store.use(name, version)
    out.print(f"persona {name} now runs {version}")


@persona_app.command("rollback")
def persona_rollback(
    persona: Annotated[str | None, typer.Option(help="Persona (default: the configured one).")] = None,
) -> None:
    """Go back to the version the persona ran before the current one."""
    store, name = _versions(persona)
    out.print(f"persona {name} now runs {store.rollback(name)}")
