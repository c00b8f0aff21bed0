"""Who may work on a home: the embedded store (SQLite and an embedded Chroma) belongs to one process on one machine."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from council.core.locks import exclusive
from council.core.settings import Settings


def embedded(settings: Settings) -> bool:
    """The default store: SQLite and an embedded Chroma, which one process on one machine owns."""
    return settings.db_url.startswith("sqlite") and not settings.memory.url


def owning_home(settings: Settings, alone: bool) -> AbstractContextManager[None]:
    """On the embedded store, the lock that keeps a second worker off this home; elsewhere nothing."""
    if not alone:
        return nullcontext()
    return exclusive(
        settings.home / "serve.lock",
        "another `council serve` or `council worker`",
        "stop it, point COUNCIL_HOME elsewhere, or share a Postgres store (COUNCIL_DATABASE_URL) and a Chroma "
        "server (memory.url) between workers",
    )
