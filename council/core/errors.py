"""Typed errors whose messages say what went wrong and what to do about it, and the helpers that word them."""

import re
import signal
from collections.abc import Mapping, Sequence
from typing import Any


class CouncilError(Exception):
    """Base class: a configuration, input or backend problem the user can fix.

    The CLI prints ``str(error)`` as one line and exits with code 1.
    """

    def __init__(self, what: str, fix: str):
        super().__init__(f"{what}. Fix: {fix}")
        self.what = what
        self.fix = fix


class DefinitionError(CouncilError):
    """A YAML archetype, pool or persona definition is missing or invalid."""


class ModelError(CouncilError):
    """A model file or server cannot be found, loaded or reached."""


class ContextOverflowError(CouncilError):
    """A prompt does not fit the model's context window."""


class StorageError(CouncilError):
    """The episode log cannot be opened, migrated or written."""


class NotFoundError(CouncilError):
    """A named thing (episode, pool, archetype) does not exist."""


class NothingToTrainError(CouncilError):
    """A training run found no new preference pairs."""


class Interrupt(BaseException):
    """A signal stopped the process (Ctrl-C or SIGTERM): what it was running ends ``interrupted``.

    A ``BaseException``, as ``KeyboardInterrupt`` is, so no ``except Exception`` swallows it. The CLI prints it as
    one line and exits 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM).
    """

    def __init__(self, signum: int, note: str = ""):
        self.signum = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        self.reason = f"interrupted by {name}"
        super().__init__(f"{self.reason}: {note}" if note else self.reason)

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal."""
        return 128 + self.signum


def interruption(exc: BaseException) -> Interrupt | None:
    """``exc`` as an interrupt: itself, Ctrl-C's for a ``KeyboardInterrupt``, or None for any other exception."""
    if isinstance(exc, Interrupt):
        return exc
    return Interrupt(signal.SIGINT) if isinstance(exc, KeyboardInterrupt) else None


def one_line(exc: BaseException, limit: int = 200, *, typed: bool = False) -> str:
    """``exc`` as one short line for a message: its first non-empty line (after its type's name if ``typed``)."""
    line = next((s.strip() for s in str(exc).splitlines() if s.strip()), "" if typed else type(exc).__name__)
    line = f"{type(exc).__name__}: {line}" if typed else line
    return re.sub(r"\s+", " ", line)[:limit]


def first_problem(errors: Sequence[Mapping[str, Any]], skip: tuple[str, ...] = ()) -> tuple[str, str, str]:
    """The first problem of a pydantic validation: (where, as dotted path without ``skip`` parts; message; type)."""
    err = errors[0]
    where = ".".join(str(part) for part in err["loc"] if part not in skip)
    return where, str(err["msg"]), str(err["type"])
