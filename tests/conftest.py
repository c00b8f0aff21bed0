"""Shared fixtures: every test gets its own COUNCIL_HOME."""

from pathlib import Path

import pytest

from archetypes.backends import BackendPool, FakeBackend
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


@pytest.fixture
def fake_setup(council_home):
    """A runtime whose persona (and so every archetype) runs on one scripted FakeBackend."""
    write_yaml(council_home, "personas", "tester", "character: You are a test persona.\nmodel: fake\n")

    def make(pool: str = "default", **overrides):
        settings = load_settings(persona="tester", pool=pool, **overrides)
        backends = BackendPool(settings)
        fake = backends.get(ModelSpec(backend="fake"))
        assert isinstance(fake, FakeBackend)
        return build_runtime(settings, backends), fake

    return make
