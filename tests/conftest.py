"""Shared fixtures: every test gets its own COUNCIL_HOME; store tests run on SQLite and on Postgres."""

import os
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from archetypes.backends import FakeBackend, LoadedModels
from archetypes.definitions import ModelSpec
from archetypes.library import Library
from council.core.settings import load_settings
from council.engine.runner import build_runtime


@pytest.fixture(autouse=True)
def council_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("COUNCIL_HOME", str(home))
    for var in ("COUNCIL_DEBUG", "COUNCIL_POOL", "COUNCIL_PERSONA", "COUNCIL_DATABASE_URL"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the Postgres server bin/test started; skipped without one, unless CI requires it."""
    url = os.environ.get("COUNCIL_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("COUNCIL_REQUIRE_POSTGRES"):
            pytest.fail("COUNCIL_TEST_POSTGRES_URL is not set: run the tests with bin/test")
        pytest.skip("no Postgres server: bin/test starts one when Debian's postgresql package is installed")
    return url


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, empty database on the test server, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"council_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.integration])])
def db_url(request, tmp_path, monkeypatch) -> str:
    """A fresh store of each kind the log runs on, also named by COUNCIL_DATABASE_URL for code that reads settings."""
    url = f"sqlite:///{tmp_path}/log.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    monkeypatch.setenv("COUNCIL_DATABASE_URL", url)
    return url


def write_yaml(home: Path, kind: str, name: str, text: str) -> Path:
    path = home / kind / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def without_judges(home: Path) -> None:
    """Give every built-in archetype a user copy without its judge, so the fake backend scripts every vote."""
    for archetype in Library.load().archetypes.values():
        if archetype.judge is not None:
            fields = archetype.model_dump(mode="json", exclude={"judge", "name"})
            write_yaml(home, "archetypes", archetype.name, yaml.safe_dump(fields))


@pytest.fixture
def fake_setup(council_home):
    """A runtime whose persona (and so every archetype) runs on one scripted FakeBackend.

    Archetypes vote from (scripted) tokens unless ``judges=True``, which keeps the built-in trained judges.
    """
    write_yaml(council_home, "personas", "tester", "character: You are a test persona.\nmodel: fake\n")

    def make(pool: str = "default", judges: bool = False, **overrides):
        if not judges:
            without_judges(council_home)
        settings = load_settings(persona="tester", pool=pool, **overrides)
        backends = LoadedModels(settings)
        fake = backends.get(ModelSpec(backend="fake"))
        assert isinstance(fake, FakeBackend)
        return build_runtime(settings, backends), fake

    return make


HEAVY = ("torch", "sentence_transformers", "transformers", "llama_cpp")


def pytest_sessionfinish(session, exitstatus):
    """The fast lane (``-m "not integration"``) must not load torch or llama.cpp: fail it if a test did."""
    loaded = [m for m in HEAVY if m in sys.modules]
    if session.config.option.markexpr == "not integration" and loaded and exitstatus == 0:
        session.config.get_terminal_writer().line(f"fast lane loaded {', '.join(loaded)}: mark that test integration")
        session.exitstatus = 1
