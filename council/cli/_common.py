"""What every command module shares: the two consoles, the ``--json`` flag, the episode log, JSON output, interrupts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from council.core.errors import Interrupt
from council.core.settings import Settings

if TYPE_CHECKING:
    from council.store.episodes import EpisodeLog

out = Console()
err = Console(stderr=True)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]

CHECKOUT = Path(__file__).resolve().parents[2]  # the source tree the package sits in (examples/ is not packaged)


def example(name: str) -> Path:
    """A file of the checkout's ``examples/``, found from the package rather than the working directory."""
    return CHECKOUT / "examples" / name


def episode_log(settings: Settings) -> EpisodeLog:
    """The episode log of ``settings``' store."""
    from council.store.database import Database
    from council.store.episodes import EpisodeLog

    return EpisodeLog(Database(settings.db_url))


@contextmanager
def interruptible(note: str) -> Iterator[None]:
    """SIGTERM and Ctrl-C raise ``Interrupt`` (saying ``note``), so what runs ends ``interrupted``, not killed."""
    import signal
    import threading

    def stop(signum: int, _frame: object) -> None:
        raise Interrupt(signum, note)

    main_thread = threading.current_thread() is threading.main_thread()  # only it may set handlers
    previous = signal.signal(signal.SIGTERM, stop) if main_thread else None
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupt(signal.SIGINT, note) from None
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def dump(data: object) -> None:
    """Print ``data`` as JSON (what is not JSON prints as its ``str``)."""
    out.print_json(json.dumps(data, default=str))
