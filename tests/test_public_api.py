"""The library's public face: one import place with ``__all__``, cheap to import."""

import subprocess
import sys

import council


def test_every_public_name_comes_from_the_package_itself():
    assert set(council.__all__) == set(council._HOMES) | {"__version__"}  # every exported name has a home
    for name in council.__all__:
        assert getattr(council, name) is not None, name
    from council.engine.runner import run_episode

    assert council.run_episode is run_episode and council.Episode.__name__ == "Episode"


def test_importing_the_package_loads_no_model_database_or_web_stack():
    heavy = ("llama_cpp", "sqlalchemy", "langgraph", "chromadb", "fastapi")
    code = f"import sys, council; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_an_unknown_name_is_an_attribute_error():
    try:
        council.no_such_name
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name resolved")
