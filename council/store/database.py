"""The application database: one engine and its sessions, migrated to head on open; repositories take it."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import CursorResult, Update, create_engine, event, text
from sqlalchemy.engine import Engine, ExceptionContext
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from council.core.errors import StorageError, one_line

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


_MIGRATING = threading.Lock()  # Alembic's command context is process-global
_PG_MIGRATION_LOCK = 0x636F756E  # one advisory lock id: workers starting together on Postgres migrate in turn


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database behind ``engine`` to ``revision``; processes starting at once take turns."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with _MIGRATING, engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)


class Database:
    """The SQL source of truth (episodes, tasks, night pass, persona versions). Any SQLAlchemy URL works.

    SQLite runs in WAL mode; Postgres is the store for several processes. Opening migrates to head.
    """

    def __init__(self, url: str):
        self.file = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
        self.damage: StorageError | None = None  # set on the first sign of a damaged file: nothing is written after
        try:
            if self.file is not None:
                self.file.parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(url)
            event.listen(self.engine, "handle_error", self._refuse_damaged)
            if self.engine.dialect.name == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            migrate(self.engine)
        except (OperationalError, OSError) as exc:
            raise StorageError(f"cannot open the episode log at {url} ({short(exc)})", storage_fix(exc)) from exc
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._identity = self._stat()

    def _refuse_damaged(self, context: ExceptionContext) -> None:
        """A damaged database file becomes one ``StorageError`` that says how to recover it; later checks refuse."""
        error = context.original_exception
        if not damaged(error):
            return
        where = self.file or self.engine.url.render_as_string(hide_password=True)
        what = f"the episode log {where} is damaged ({short(error)})"
        self.damage = StorageError(what, storage_fix(error, self.file))
        raise self.damage from error

    @property
    def postgres(self) -> bool:
        """Whether the store is PostgreSQL (row locks with SKIP LOCKED, advisory locks)."""
        return self.engine.dialect.name == "postgresql"

    def _stat(self) -> tuple[int, int] | None:
        if self.file is None:
            return None
        try:
            st = self.file.stat()
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def check(self) -> None:
        """Raise if the store was found damaged, or the SQLite file was deleted or replaced since it was opened."""
        if self.damage is not None:
            raise self.damage
        if self.file is None:
            return
        if self._stat() == self._identity:
            if not os.access(self.file, os.W_OK):
                raise StorageError(f"the episode log {self.file} is not writable", "give this user write access to it")
            return
        what = "deleted" if not self.file.exists() else "replaced"
        raise StorageError(
            f"the episode log {self.file} was {what} while in use",
            "restart, so that writes go to the file at that path",
        )


def driver_error(exc: BaseException) -> BaseException:
    """The driver's own error where SQLAlchemy wraps one: its message holds no SQL and no parameters."""
    return exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc


def short(exc: BaseException) -> str:
    """A database error as one line: the driver's own message where SQLAlchemy wraps one."""
    return one_line(driver_error(exc))


_DAMAGE = ("database disk image is malformed", "file is not a database")  # SQLite's words for a damaged file
_SQLITE_DAMAGE = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB (primary result codes)


def damaged(exc: BaseException) -> bool:
    """Whether a database error says the database file is damaged (SQLite's result code where it has one)."""
    error = driver_error(exc)
    code = vars(error).get("sqlite_errorcode") if isinstance(error, sqlite3.Error) else None
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_DAMAGE
    return any(words in str(error).lower() for words in _DAMAGE)


def storage_fix(exc: BaseException, file: Path | None = None) -> str:
    """What to do about a database error (``file``: the SQLite file it came from, if known)."""
    text = str(driver_error(exc)).lower()
    if damaged(exc):
        name = file or "council.db"
        return (
            f'recover what it holds with `sqlite3 {name} ".recover" | sqlite3 recovered.db`, then put recovered.db'
            " in its place (or move the file aside to start afresh); nothing is written to it meanwhile"
        )
    if "disk" in text or "full" in text:
        return "free disk space under COUNCIL_HOME; nothing already stored was lost"
    if "locked" in text:
        return "another process holds the database; retry, or check for a stuck process"
    return "check database_url and that COUNCIL_HOME is writable"


def updated_one(session: Session, statement: Update) -> bool:
    """Run a conditional UPDATE; True if it changed exactly one row (the condition held, so this caller won)."""
    result = cast("CursorResult[Any]", session.execute(statement))
    return result.rowcount == 1
