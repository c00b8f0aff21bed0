"""One process at a time: an exclusive, non-blocking file lock that fails in one clear line."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from council.core.errors import CouncilError


@contextmanager
def exclusive(path: Path, who: str, fix: str) -> Iterator[None]:
    """Hold the lock file ``path`` for the block; if ``who`` (another process) holds it, a CouncilError with ``fix``.

    The kernel releases the lock when the process dies, so a crash never leaves it stale.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CouncilError(f"{who} holds {path}", fix) from None
        yield
