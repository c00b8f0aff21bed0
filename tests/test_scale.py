"""examples/scale_fault.py on bin/test's Postgres: two workers, one API, a Chroma server, a SIGKILL mid-run."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

SCRIPT = Path(__file__).parents[1] / "examples" / "scale_fault.py"


def test_forty_requests_with_a_worker_killed_mid_run_lose_and_duplicate_nothing(postgres_url, tmp_path):
    spec = importlib.util.spec_from_file_location("scale_fault", SCRIPT)
    scale = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale)
    figures = scale.run(postgres_url, requests=40, max_tokens=24, home=tmp_path / "home")
    assert figures["errors"] == []
    assert (figures["answered"], figures["lost"], figures["duplicated"]) == (40, 0, 0)
    assert figures["episodes_logged"] == 40 and figures["tasks"] == {"done": 40}
    assert figures["taken_over"] >= 1  # the killed worker's task was finished by another
    assert figures["memory_episodes"] == 40 and figures["memory_matches_log"]
