"""The package's optional parts: which extra installs which import, and the one-line error when one is missing."""

from __future__ import annotations

import importlib

from council.core.errors import CouncilError

EXTRAS = {
    "fastapi": "serve",
    "uvicorn": "serve",
    "psycopg": "postgres",
    "langgraph.checkpoint.postgres": "postgres",
    "matplotlib": "eval",
    "sklearn": "eval",
    "torch": "train",
    "transformers": "train",
    "trl": "train",
    "peft": "train",
    "datasets": "train",
    "gguf": "train",
}


class MissingExtraError(CouncilError):
    """A command needs an optional part of the package that is not installed."""


def missing_extra(exc: ModuleNotFoundError) -> MissingExtraError | None:
    """The extra that would have installed the module ``exc`` did not find, or ``None`` if no extra does."""
    name = exc.name or ""
    for module, extra in EXTRAS.items():
        if name == module or name.startswith(module + "."):
            return _missing(module, extra)
    return None


def _missing(module: str, extra: str) -> MissingExtraError:
    what = f"this needs {module}, which the {extra!r} extra installs"
    return MissingExtraError(what, f"pip install 'archetype-council[{extra}]'")


def require(extra: str) -> None:
    """Fail early, in one line, when a module of ``extra`` is not installed (importing it takes seconds)."""
    for module in (m for m, e in EXTRAS.items() if e == extra):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise _missing(module, extra) from exc
