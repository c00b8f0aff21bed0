"""Shared fixtures: every test gets its own COUNCIL_HOME."""

from pathlib import Path

import pytest
import yaml

from archetypes.backends import BackendPool, FakeBackend
from archetypes.library import Library
from archetypes.models import ModelSpec
from council.config import load_settings
from council.runner import build_runtime


@pytest.fixture(autouse=True)
def council_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("COUNCIL_HOME", str(home))
    for var in ("COUNCIL_DEBUG", "COUNCIL_POOL", "COUNCIL_PERSONA"):
        monkeypatch.delenv(var, raising=False)
    return home


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
        backends = BackendPool(settings)
        fake = backends.get(ModelSpec(backend="fake"))
        assert isinstance(fake, FakeBackend)
        return build_runtime(settings, backends), fake

    return make
